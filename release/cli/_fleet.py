"""`release collector` and `release rollout`: the fleet, and staged rollouts."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from greenlight.release.cli._common import (
    DefaultGroup,
    app,
    change_channel,
    json_option,
    keys_option,
    repo_argument,
    rollout_line,
    run_command,
    say,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__: list[str] = []

class _CollectorGroup(DefaultGroup):
    """`release collector --db ...` runs it (`serve`); `release collector migrate` migrates
    its database's schema."""

    default = "serve"


@app.group("collector", cls=_CollectorGroup)
def collector_group() -> None:
    """The fleet collector.

    \b
    release collector [serve] --db URL --fleet-token-file F --admin-token-file F ...
    release collector migrate --db URL
    """


_DB = click.option("--db", default="sqlite:///greenlight-collector.sqlite3", show_default=True,
                   help="Database URL: sqlite:///FILE, or postgresql+psycopg://USER@HOST/DB.")


@collector_group.command("migrate")
@_DB
def migrate(db: str) -> None:
    """Bring the collector's database to this collector's schema (Alembic), once, whatever
    collectors share it: every revision only adds, so the replicas not yet upgraded go on
    serving it; then upgrade them one at a time."""
    from greenlight.release.fleet import migrate_database

    before, after = run_command(lambda: migrate_database(db))
    say(f"the collector's schema is at {after}" + (
        "" if before == after else
        " (the database was empty)" if before is None else
        " (it was made by a collector before the schema was versioned)"
        if before == "unversioned" else f" (it was at {before})"))


@collector_group.command("serve")
@_DB
@click.option("--port", type=int, default=8081, show_default=True, help="Port on 127.0.0.1.")
@click.option("--fleet-token-file", required=True, type=click.Path(path_type=Path),
              help="File holding the token machines send reports with.")
@click.option("--admin-token-file", required=True, type=click.Path(path_type=Path),
              help="File holding the token of the dashboard and the admin endpoints.")
@click.option("--repo", type=click.Path(path_type=Path), default=None,
              help="Guard this repository's planned rollouts: halt them by their rule, move "
                   "them along their steps.")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path), default=None,
              help="With --repo: the folder holding the rollout-<channel>, snapshot and "
                   "timestamp keys (default: the repository's keys folder).")
@click.option("--tick", type=float, default=10.0, show_default=True,
              help="Seconds between looks at every planned rollout (with --repo) and at "
                   "reports to prune (with --retention).")
@click.option("--enrolment", type=click.Choice(["open", "approved", "preauthorized"]),
              default="open", show_default=True,
              help="How a new machine key is admitted: by the fleet token (counting towards a "
                   "halt only if enrolled before the rollout began), by an admin "
                   "(release machines approve), or only if loaded (release machines load).")
@click.option("--enrol-rate", type=int, default=120, show_default=True,
              help="New machine keys a minute at most, for the whole collector.")
@click.option("--retention", default=None, metavar="DURATION",
              help="Prune reports received longer ago than this (90d, 8w; at least 1d), "
                   "except those of rollouts under way; and the enrolments of keys admitted "
                   "by the fleet token alone that have no report left.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="HOST[:PORT]",
              help="A name the dashboard and admin endpoints answer under besides "
                   "127.0.0.1:PORT (the Host your TLS proxy forwards); repeatable.")
@click.option("--max-connections", type=int, default=4096, show_default=True,
              help="Open connections at most (the last 1/16 kept for the admin and the "
                   "machines the collector counts).")
@click.option("--max-connections-per-address", "per_address", type=int, default=0,
              show_default=True,
              help="Open connections from one peer address at most (0: no bound). The "
                   "collector listens on 127.0.0.1, so behind a proxy every connection is "
                   "the proxy's: bound clients in the proxy (nginx's limit_conn).")
@click.option("--feedback-retention", default="90d", show_default=True, metavar="DURATION",
              help="Prune user feedback received longer ago than this (at least 1d).")
@click.option("--feedback-rate", type=int, default=10, show_default=True,
              help="User feedback taken from one machine key in any 24 hours.")
@click.option("--feedback-newcomers", type=int, default=500, show_default=True,
              help="User feedback taken in any 24 hours from all the keys that count for "
                   "nothing yet (pending, or enrolled less than a day ago), together.")
@click.option("--feedback-max", type=int, default=100_000, show_default=True,
              help="User feedback kept at most (keys not established stop at 3/4 of it).")
def serve(db: str, port: int, fleet_token_file: Path, admin_token_file: Path,
              repo: Path | None, keys_dir: Path | None, tick: float, enrolment: str,
              enrol_rate: int, retention: str | None, allowed_hosts: tuple[str, ...],
              max_connections: int, per_address: int, feedback_retention: str,
              feedback_rate: int, feedback_newcomers: int, feedback_max: int) -> None:
    """Run the fleet collector on 127.0.0.1: machines' signed reports and users' feedback
    in, rollouts out. Stateless: several processes may share one PostgreSQL (and one
    repository folder)."""
    from greenlight.release._durations import parse_duration
    from greenlight.release.fleet import FEEDBACK_NEWCOMER_KEY, FeedbackLimits, serve_collector

    kept = None if retention is None else run_command(
        lambda: parse_duration(retention, "--retention"))
    limits = FeedbackLimits(
        daily=feedback_rate, newcomers=feedback_newcomers,
        newcomer_key=min(FEEDBACK_NEWCOMER_KEY, feedback_rate), rows=feedback_max,
        retention=run_command(lambda: parse_duration(feedback_retention, "--feedback-retention")))

    def log(line: str) -> None:
        say(line)
        sys.stdout.flush()

    run_command(lambda: serve_collector(db, port, fleet_token_file, admin_token_file,
                                 ready=lambda url: log(f"collecting at {url} (Ctrl-C stops)"),
                                 repo=repo, keys=keys_dir, tick=tick, log=log,
                                 enrolment=enrolment, enrol_rate=enrol_rate, retention=kept,
                                 allowed_hosts=allowed_hosts,
                                 max_connections=max_connections, per_address=per_address,
                                 feedback=limits))


class _RolloutGroup(DefaultGroup):
    """`release rollout REPO --channel C ...` changes a rollout; `release rollout status`
    reports on them. The first form is the group's hidden default command."""

    default = "change"


@app.group("rollout", cls=_RolloutGroup)
def rollout_group() -> None:
    """Staged rollouts.

    \b
    release rollout REPO --channel C (--percent N | --halt | --resume)
    release rollout status --collector URL --admin-token-file FILE
    """


@rollout_group.command("change", hidden=True)
@repo_argument
@click.option("--channel", required=True, help="Channel whose release rolls out.")
@click.option("--percent", type=int, default=None,
              help="Share of installations, 0-100 (replaces a plan).")
@click.option("--halt", is_flag=True, help="Stop the rollout where it is.")
@click.option("--resume", is_flag=True,
              help="Lift a halt (a person's or the collector's) once someone has looked.")
@keys_option
@json_option
def rollout_cmd(repo: Path, channel: str, percent: int | None, halt: bool, resume: bool,
                keys: Path | None, as_json: bool) -> None:
    """Stage the channel's release to a share of installations, halt it, or resume it."""
    from greenlight.release.repository._lifecycle import rollout

    change_channel(repo, keys, as_json, lambda r: rollout(r, channel, percent, halt, resume),
                    lambda cf: f"{channel} {cf.release}: {rollout_line(cf)}")


@rollout_group.command("status")
@click.option("--collector", "url", required=True, help="The collector's URL.")
@click.option("--admin-token-file", required=True, type=click.Path(path_type=Path),
              help="File holding the collector's admin token.")
@json_option
def rollout_status_cmd(url: str, admin_token_file: Path, as_json: bool) -> None:
    """Per release: machines reporting, upgraded, rolled back, dead ends, each failure
    against the release it belongs to (a release that crashed on stop, with the release the
    machines were upgrading to), the failing checks ranked with an example, the step it is
    at, and who halted it and why."""
    from greenlight.release.fleet import fetch_rollouts

    answer = run_command(lambda: fetch_rollouts(url, admin_token_file))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    if not answer["rollouts"]:
        say("no reports yet")
    for r in answer["rollouts"]:
        o = r["outcomes"]
        say(f"{r['channel']} {r['release']}: {r['machines']} machines reporting; "
            f"{o.get('upgraded', 0)} upgraded, {o.get('rolled-back', 0)} rolled back, "
            f"{o.get('dead-end', 0)} dead ends, {o.get('precheck-blocked', 0)} pre-check "
            f"blocked, {o.get('held', 0)} held"
            + "".join(f", {o[k]} {words}" for k, words in (("crash-loop", "in a crash loop"),
                                                          ("crashed-on-stop", "crashed on stop"))
                      if o.get(k)))
        for f in r.get("failures") or []:  # each under the release it belongs to
            if isinstance(f, dict):
                say(f"  failed: {f.get('machines')} machine(s): {f.get('text')}")
        plan = r.get("plan")
        if plan:
            where = f"step {plan['step'] + 1} of {len(plan['steps'])} ({plan['percent']}%)"
            if plan["halted"]:
                where += f", HALTED by {plan['by']}: {plan['reason']}"
            elif plan.get("held_cohorts"):
                where += (f", cohort(s) {', '.join(plan['held_cohorts'])} HELD by "
                          f"{plan['by']}: {plan['reason']}")
            elif plan.get("by"):
                where += f", set by {plan['by']} at {plan['at']}"
            wrote = plan.get("feedback")
            if isinstance(wrote, dict):  # the plan's feedback rule: a signal, never a halt
                where += (f"; PAUSED: {wrote['machines']} machines wrote in since the step "
                          "began; advancing waits for a person (release rollout --resume)"
                          if wrote.get("paused") else
                          f"; {wrote['machines']} of {wrote['rule']} machines wrote in")
            say(f"  rollout: {where}")
        for c in r["checks"]:
            say(f"  {c['reports']:>4} x {c['name']}: {c['example']}")


@app.group("machines")
def machines_group() -> None:
    """The fleet's machine keys at a collector: list, approve, revoke, load."""


def _collector_options(f: "Callable[..., None]") -> "Callable[..., None]":
    f = click.option("--admin-token-file", required=True, type=click.Path(path_type=Path),
                     help="File holding the collector's admin token.")(f)
    return click.option("--collector", "url", required=True, help="The collector's URL.")(f)


@machines_group.command("list")
@_collector_options
@click.option("--state", type=click.Choice(["active", "pending", "revoked"]), default=None,
              help="Only the machines in this state.")
@json_option
def machines_list(url: str, admin_token_file: Path, state: str | None, as_json: bool) -> None:
    """Machine keys, newest first: id, state, how each was enrolled, and when; with the
    counts, and whether the last hour's enrolments are a spike."""
    from greenlight.release.fleet import admin_call

    path = "v1/machines" + (f"?state={state}" if state else "")
    answer = run_command(lambda: admin_call(url, admin_token_file, "GET", path))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    c = answer["counts"]
    say(f"enrolment {answer['enrolment']}: {c['active']} active, {c['pending']} pending, "
        f"{c['revoked']} revoked; {c['last_hour']} new in the last hour"
        + (" (A SPIKE: over 3x the week's hourly average)" if c["spike"] else ""))
    for m in answer["machines"]:
        say(f"  {m['id']}  {m['state']:<8} {m['source']:<13} {m['enrolled']}")


def _change(url: str, admin_token_file: Path, action: str, ids: tuple[str, ...]) -> None:
    from greenlight.release.fleet import admin_call

    answer = run_command(lambda: admin_call(url, admin_token_file, "POST",
                                            f"v1/machines/{action}", {"ids": list(ids)}))
    say(f"{action}d {answer['changed']} of {len(ids)} machine key(s)")


@machines_group.command("approve")
@_collector_options
@click.argument("ids", nargs=-1, required=True)
def machines_approve(url: str, admin_token_file: Path, ids: tuple[str, ...]) -> None:
    """Let pending machine keys (enrolment approved) count, by id."""
    _change(url, admin_token_file, "approve", ids)


@machines_group.command("revoke")
@_collector_options
@click.argument("ids", nargs=-1, required=True)
def machines_revoke(url: str, admin_token_file: Path, ids: tuple[str, ...]) -> None:
    """Refuse these machine keys' reports from now on; what they sent stops counting."""
    _change(url, admin_token_file, "revoke", ids)


@machines_group.command("load")
@_collector_options
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def machines_load(url: str, admin_token_file: Path, file: Path) -> None:
    """Load machine keys (one public key a line, as `updater identity` prints it; # starts
    a comment) as active: for enrolment preauthorized, from the provisioning that built the
    machines."""
    from greenlight.release._errors import NotFound
    from greenlight.release.fleet import admin_call

    def keys() -> list[str]:
        try:
            lines = file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise NotFound(f"{file}: cannot read: {e}") from None
        return [w for line in lines for w in line.split("#", 1)[0].split()[:1]]

    answer = run_command(lambda: admin_call(url, admin_token_file, "POST", "v1/machines/load",
                                            {"keys": keys()}))
    say(f"loaded {answer['added']} machine key(s); {answer['known']} known already")
