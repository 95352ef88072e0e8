"""`release rehearse`: every upgrade path of a candidate, run for real before it ships."""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from greenlight.release.cli._common import (
    app,
    fail,
    json_option,
    keys_option,
    open_repo,
    print_json,
    repo_argument,
    run_command,
    say,
)

if TYPE_CHECKING:
    from greenlight.release.rehearsal import PathResult, RehearsalRecord

__all__: list[str] = []

SCENARIOS = "rehearsal.toml"
"""the scenarios file a repository's folder may keep: used when --scenarios is not given"""


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB" if n else "-"


def _line(p: "PathResult") -> str:
    from greenlight.release.rehearsal import path_name

    back = {"ok": "rollback ok", "failed": "ROLLBACK FAILED", "n/a": ""}[p.rollback]
    return (f"{path_name(p)}: {p.outcome}{f', {back}' if back else ''} ({p.seconds:.1f} s, "
            f"{_size(p.bytes_fetched)}{', delta' if p.delta else ''}): {p.detail}")


def _table(record: "RehearsalRecord") -> None:
    rows = [(f"{p.from_version or 'empty'} -> {p.to_version}"
             + (f" ({p.kind.split('-')[0]})" if "-" in p.kind else ""), p.layer, p.outcome,
             p.rollback, f"{p.seconds:.1f}", _size(p.bytes_fetched),
             "yes" if p.delta else "no",
             (f"{p.failed_checks[0].name}: {p.failed_checks[0].summary}" if p.failed_checks
              else p.detail)[:160]) for p in record.paths]
    head = ("path", "layer", "outcome", "rollback", "s", "fetched", "delta", "what decided")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    for r in [head, *rows]:
        say("  ".join(f"{str(c):<{w}}" for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


def _census(url: str | None, token: Path | None, channel: str) -> dict[str, Any] | None:
    from greenlight.release.cli._census import checked_collector

    checked_collector(url, token)
    if url is None or token is None:
        return None
    from greenlight.release.fleet import fetch_census

    row = fetch_census(url, token, channel)[channel]
    return row if isinstance(row, dict) else None


@app.command("rehearse")
@repo_argument
@click.option("--channel", required=True, help="The channel the candidate ships on.")
@click.option("--version", default=None,
              help="The candidate's version: with --component, what it will be published "
                   "as; alone, a release the repository carries (on any channel). Default: "
                   "what --channel carries.")
@click.option("--component", multiple=True, metavar="NAME=PATH",
              help="A candidate's archive, not published yet: it is signed in a copy of "
                   "the repository as `release publish` will sign it.")
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="With --component: the candidate's product manifest.")
@click.option("--keep-top-folder", is_flag=True,
              help="With --component: as `release publish --keep-top-folder`.")
@click.option("--from", "froms", multiple=True, metavar="VERSION",
              help="Rehearse from this release (repeatable). Default: every release the "
                   "--collector's machines on the channel run, else the channel's recent "
                   "releases and the other channels' current ones.")
@click.option("--scenarios", type=click.Path(path_type=Path), default=None,
              help=f"The machine layers (TOML; default: REPO/{SCENARIOS} when there is one).")
@click.option("--collector", "collector_url", default=None, metavar="URL",
              help="Take the from releases and the cohorts seen from this collector.")
@click.option("--admin-token-file", type=click.Path(path_type=Path), default=None,
              help="With --collector: the file holding its admin token.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Also rehearse this offline bundle of the candidate (`release bundle`): "
                   "sideloaded onto an empty root and onto a root of each from release.")
@click.option("--installer", type=click.Path(path_type=Path), default=None,
              help="Also rehearse this offline installer of the candidate (`release "
                   "installer`): run onto an empty root and onto a root of each from "
                   "release.")
@click.option("--isolation", type=click.Choice(["auto", "netns", "ports"]), default="auto",
              show_default=True,
              help="netns: each path in a network namespace of its own (root on Linux), its "
                   "ports as the release sets them; ports: one network, each path's *_port "
                   "values on free ports; auto: netns where the machine allows it.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None,
              help="Paths at a time (default: the number of CPUs).")
@click.option("--timeout", default="10m", show_default=True,
              help="The longest one path may take; it is stopped, all it started with it.")
@click.option("--keep-work", type=click.Path(path_type=Path), default=None,
              help="Keep each path's folder (its root, logs, repository copy) under this "
                   "folder, for a look after.")
@keys_option
@json_option
def rehearse_cmd(repo: Path, channel: str, version: str | None, component: tuple[str, ...],
                 manifest: Path | None, keep_top_folder: bool, froms: tuple[str, ...],
                 scenarios: Path | None, collector_url: str | None,
                 admin_token_file: Path | None, bundle: Path | None,
                 installer: Path | None, isolation: str,
                 jobs: int | None, timeout: str, keep_work: Path | None, keys: Path | None,
                 as_json: bool) -> None:
    """Rehearse every upgrade path of a candidate release, for real, before it ships.

    For each from release and an empty root, under the release's defaults and each machine
    layer of the scenarios file: a throwaway root installs from (its own manifest), upgrades
    to the candidate the way a machine would (the delta it would take), lets its preflight
    and checks decide, rolls back and checks from again. The matrix is printed and kept in
    REPO/rehearsals/, where `release promote` and `release publish --rollout-plan` look for
    it. Exit 10 when a path failed.
    """
    from greenlight.release._durations import parse_duration
    from greenlight.release._errors import NotFound, RehearsalFailed
    from greenlight.release.cli._repository import parse_components
    from greenlight.release.rehearsal import load_scenarios
    from greenlight.release.rehearsal._rehearse import candidate_of, rehearse

    limit = run_command(lambda: parse_duration(timeout, "--timeout")).total_seconds()
    r = open_repo(repo, keys)
    if scenarios is None and (repo / SCENARIOS).is_file():
        scenarios = repo / SCENARIOS
    layers = run_command(lambda: load_scenarios(scenarios))
    for option, given in (("--bundle", bundle), ("--installer", installer)):
        if given is not None and not given.is_file():
            raise fail(NotFound(f"{option} {given}: no such file"))
    census = run_command(lambda: _census(collector_url, admin_token_file, channel))
    candidate = run_command(lambda: candidate_of(
        r, channel, version, parse_components(list(component)), manifest, keep_top_folder))

    def progress(n: int, total: int, p: "PathResult") -> None:
        if not as_json:
            say(f"[{n:>{len(str(total))}}/{total}] {_line(p)}")
    try:
        record = run_command(lambda: rehearse(
            r, channel, candidate, froms=list(froms) or None, census=census,
            scenarios=layers, bundle=bundle, installer=installer, isolation=isolation,
            jobs=jobs or os.cpu_count() or 2, timeout=limit, keep=keep_work,
            said=lambda line: None if as_json else say(line), said_path=progress))
    except KeyboardInterrupt:  # before click's own "Aborted!": the paths are all stopped
        print("release: interrupted: every path was stopped, nothing left behind",
              file=sys.stderr)
        raise SystemExit(130) from None
    if as_json:
        print_json(record)
    else:
        say()
        _table(record)
        if record.cohorts_unstood:
            say(f"\ncohorts the collector has seen on {channel} that no layer stands for "
                f"(stands_for in the scenarios file): {', '.join(record.cohorts_unstood)}")
        say(f"\n{record.summary()} in {record.seconds:.0f} s; kept in "
            f"{repo}/rehearsals/{channel}/{record.version}.json")
    if not record.passed:
        raise fail(RehearsalFailed(record.summary()))
