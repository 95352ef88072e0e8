"""`release feedback list|show|export|import`: what the machines' users wrote, at a
collector (`GET /v1/feedback`, `GET /v1/feedback/{id}`, `POST /v1/feedback/import`), with
the admin token. Every text from a machine is printed escaped for a terminal (`say`), and a
CSV export neutralises every cell a spreadsheet would take for a formula."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import click

from greenlight.release.cli._common import app, fail, json_option, run_command, say

if TYPE_CHECKING:
    from collections.abc import Callable

__all__: list[str] = []

PAGES_MAX = 10_000
"""pages of feedback followed at most by an export"""


def _collector(f: "Callable[..., None]") -> "Callable[..., None]":
    f = click.option("--admin-token-file", required=True, type=click.Path(path_type=Path),
                     help="File holding the collector's admin token.")(f)
    return click.option("--collector", "url", required=True, help="The collector's URL.")(f)


def _filters(f: "Callable[..., None]") -> "Callable[..., None]":
    for name, what in (("since", "Only feedback received at or after this time (ISO 8601)."),
                       ("check", "Only feedback filed under this failing check."),
                       ("cohort", "Only this kind of machine (os-major/arch/label)."),
                       ("channel", "Only feedback from machines on this channel."),
                       ("release", "Only feedback from machines running this version.")):
        f = click.option(f"--{name}", default=None, help=what)(f)
    return f


def _query(**given: Any) -> dict[str, str]:
    """The filters given, as the collector's query.

    Raises:
        UsageError: a channel that is not a channel name, or a --since that is not a time.
    """
    from datetime import datetime

    from greenlight.channels import check_channel_name
    from greenlight.release._errors import UsageError

    if given.get("channel") is not None:
        check_channel_name(given["channel"])
    if given.get("since") is not None:
        try:
            datetime.fromisoformat(given["since"])
        except ValueError:
            raise UsageError(f"--since {given['since']!r}: an ISO 8601 time, such as "
                             "2026-01-31T12:00:00Z") from None
    return {k: str(v) for k, v in given.items() if v is not None}


def _page(url: str, token: Path, query: dict[str, str]) -> dict[str, Any]:
    from greenlight.release._errors import RemoteError
    from greenlight.release.fleet import admin_call

    answer = admin_call(url, token, "GET", "v1/feedback?" + urlencode(query))
    if not isinstance(answer.get("feedback"), list):
        raise RemoteError(f"the collector at {url} answered no feedback list (a collector "
                          "before user feedback has none)")
    return answer


def _all(url: str, token: Path, query: dict[str, str]) -> list[dict[str, Any]]:
    """Every page of the list, each bounded; a cursor given twice stops it in one line.

    Raises:
        RemoteError: unreachable, refusing, or a page cursor given twice or past PAGES_MAX.
    """
    from greenlight.release._errors import RemoteError

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    answer = _page(url, token, query)
    while True:
        rows += [r for r in answer["feedback"] if isinstance(r, dict)]
        cursor = answer.get("next")
        if not cursor:
            return rows
        if not isinstance(cursor, str) or cursor in seen or len(seen) >= PAGES_MAX:
            raise RemoteError(f"the collector at {url} gave a page cursor twice or over "
                              f"{PAGES_MAX} pages: not following it further")
        seen.add(cursor)
        answer = _page(url, token, {**query, "cursor": cursor})


def _text(value: object, limit: int = 120) -> str:
    """One line of what a machine wrote, cut (say escapes it for the terminal)."""
    said = " ".join(str(value or "").split())
    return said if len(said) <= limit else said[:limit - 1] + "…"


@app.group("feedback")
def feedback_group() -> None:
    """What the machines' users wrote, with its evidence, at a collector: list, show,
    export, import (an air-gapped machine's export file)."""


@feedback_group.command("list")
@_collector
@_filters
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True,
              help="Feedback shown at most, newest first.")
@json_option
def list_cmd(url: str, admin_token_file: Path, release: str | None, channel: str | None,
             cohort: str | None, check: str | None, since: str | None, limit: int,
             as_json: bool) -> None:
    """Feedback, newest received first: when, where from, the check it is filed under, and
    the start of what the user wrote."""
    query = run_command(lambda: _query(release=release, channel=channel, cohort=cohort,
                                       check=check, since=since, limit=limit))
    answer = run_command(lambda: _page(url, admin_token_file, query))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    rows = [r for r in answer["feedback"] if isinstance(r, dict)]
    say(f"{len(rows)} feedback, newest first" + (" (more: narrow it, or export)"
                                                  if answer.get("next") else ""))
    for r in rows:
        where = " ".join(str(r.get(k) or r.get(fallback) or "-")  # what it is about
                         for k, fallback in (("about_channel", "channel"),
                                             ("about", "release"), ("cohort", "cohort")))
        say(f"  {str(r.get('received'))[:19]}Z  {where}  check {r.get('check') or '-'}  "
            f"{r.get('id')} ({str(r.get('machine'))[:8]}): {_text(r.get('text'))}")


@feedback_group.command("show")
@_collector
@click.argument("feedback_id", metavar="ID")
@click.option("--machine", default=None,
              help="The machine that sent it, when several machine keys sent this id.")
@json_option
def show_cmd(url: str, admin_token_file: Path, feedback_id: str, machine: str | None,
             as_json: bool) -> None:
    """One feedback, whole: the user's text and the evidence Greenlight attached (the last
    health results, the last incident, the recent history, log tails sent with consent)."""
    from urllib.parse import quote

    from greenlight.release.fleet import admin_call

    path = f"v1/feedback/{quote(feedback_id, safe='')}" + (
        "" if machine is None else "?" + urlencode({"machine": machine}))
    answer = run_command(lambda: admin_call(url, admin_token_file, "GET", path))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    for line in _shown(answer):
        say(line)


def _shown(entry: dict[str, Any]) -> list[str]:
    """A feedback for a terminal, a few lines (escaped by `say`)."""
    doc = entry.get("document")
    doc = doc if isinstance(doc, dict) else {}
    lines = [f"feedback {entry.get('id')} from machine {entry.get('machine')} "
             f"({entry.get('machine_state') or 'key pruned'}), via {entry.get('source')}",
             f"written {entry.get('at')}, received {entry.get('received')}",
             f"channel {entry.get('channel') or '-'}, release {entry.get('release_key') or '-'}"
             f", cohort {entry.get('cohort') or '-'}, Greenlight {doc.get('greenlight') or '-'}"
             f" ({doc.get('greenlight_kind') or '-'})",
             f"filed under check: {entry.get('check') or '-'}", "", "the user wrote:"]
    lines += ["  " + line for line in str(entry.get("text") or "").split("\n")]
    checks = doc.get("checks") or []
    if checks:
        lines += ["", "last health results:"]
    for c in (c for c in checks if isinstance(c, dict)):
        lines.append(f"  {'ok    ' if c.get('ok') else 'FAILED'} {c.get('name')}: "
                     f"{c.get('summary')}" + (f" (at {c['at']})" if c.get("at") else ""))
        if c.get("evidence"):
            lines.append(f"         evidence: {c.get('evidence')}")
    incident = doc.get("incident")
    if isinstance(incident, dict):
        lines += ["", f"last incident: {incident.get('event')} at {incident.get('at')}: "
                      f"{incident.get('release') or '-'} -> {incident.get('back_to') or '-'}, "
                      f"check {incident.get('check') or '-'}: {incident.get('summary')}"]
    history = doc.get("history") or []
    if history:
        lines += ["", "recent history:"]
    for h in (h for h in history if isinstance(h, dict)):
        lines.append(f"  {h.get('at')} {h.get('event')} {h.get('from_release') or '-'} -> "
                     f"{h.get('to_release') or '-'}: {h.get('summary') or ''}")
    for log in (g for g in doc.get("logs") or [] if isinstance(g, dict)):
        lines += ["", f"log {log.get('name')} (sent with the user's consent):"]
        lines += ["  " + line for line in str(log.get("tail") or "").split("\n")]
    return lines


@feedback_group.command("export")
@_collector
@_filters
@click.option("--format", "form", type=click.Choice(["json", "csv"]), default="json",
              show_default=True,
              help="json: every feedback whole (greenlight.feedback-list/1); csv: one row "
                   "each, cells a spreadsheet would take for a formula neutralised.")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The file to write (owner-only: feedback may hold what users wrote "
                   "about themselves).")
def export_cmd(url: str, admin_token_file: Path, release: str | None, channel: str | None,
               cohort: str | None, check: str | None, since: str | None, form: str,
               output: Path) -> None:
    """Every feedback that matches, newest first, to a file."""
    from greenlight.channels import atomic_write
    from greenlight.release.fleet import feedback_csv

    query = run_command(lambda: _query(release=release, channel=channel, cohort=cohort,
                                       check=check, since=since))
    if form == "json":
        query["documents"] = "1"
    rows = run_command(lambda: _all(url, admin_token_file, query))
    data = (feedback_csv(rows) if form == "csv" else json.dumps(
        {"schema": "greenlight.feedback-list/1", "feedback": rows}, indent=2) + "\n")
    run_command(lambda: atomic_write(output, data.encode(), mode=0o600))
    say(f"exported {len(rows)} feedback to {output} ({form})")


@feedback_group.command("import")
@_collector
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@json_option
def import_cmd(url: str, admin_token_file: Path, file: Path, as_json: bool) -> None:
    """Import an air-gapped machine's feedback export (JSON lines
    greenlight.feedback-export/1): each line is verified with its machine's key and
    signature as if the machine had posted it. Exit 1 when a line was refused (each is
    said, with why); the others are stored."""
    from greenlight.release._errors import NotFound, ReleaseError
    from greenlight.release.fleet import admin_call

    def read() -> bytes:
        try:
            return file.read_bytes()
        except OSError as e:
            raise NotFound(f"{file}: cannot read: {e.strerror}") from None

    content = run_command(read)
    answer = run_command(lambda: admin_call(url, admin_token_file, "POST",
                                            "v1/feedback/import", content=content,
                                            timeout=300))
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        for line in answer.get("lines") or []:
            if isinstance(line, dict) and line.get("result") == "refused":
                say(f"line {line.get('line')}: refused: {_text(line.get('reason'), 300)}")
        say(f"imported {file}: {answer.get('accepted', 0)} accepted, "
            f"{answer.get('duplicate', 0)} already there, {answer.get('refused', 0)} refused")
    if answer.get("refused"):
        raise fail(ReleaseError(f"{answer['refused']} line(s) of {file} refused (said above)"))
