"""`updater`: the command line of the client. Parses, calls `operations`, prints.

Human output is short and goes to stdout; errors are one line on stderr; `--json` prints the
report's stable JSON shape instead (errors too, as greenlight.error/1). Exit codes are listed
by `updater exit-codes` and in the README.

Only click is imported up front: every command imports what it uses when it runs, so
`updater --help` costs an interpreter and click, and `updater check` what a check needs
(typer was measured at 60 ms a process more than click, most of it its pydantic adapters).
"""

import contextlib
import errno
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from greenlight.updater._errors import (
    EXIT_CODES,
    EXIT_HELD,
    EXIT_ROLLBACK_FAILED,
    EXIT_ROLLED_BACK,
    EXIT_UPDATE_AVAILABLE,
    EXIT_YANKED,
    ConfigError,
    GreenlightError,
    StoreError,
    UsageError,
)

if TYPE_CHECKING:
    from datetime import datetime

    from pydantic import BaseModel

    from greenlight.updater.output import QuarantineReport, StatusReport, UpgradeReport
    from greenlight.updater.product import CheckResult
    from greenlight.updater.store import InstallRoot

__all__ = ["app", "main"]



@click.group(name="updater", context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """Greenlight updater: keep this installation on a signed release channel."""
    from greenlight.channels import lean_process

    lean_process()


_EVIDENCE = ("status", "body", "close_code", "returncode", "stderr", "error", "answers", "got",
             "expected", "last_exit", "log")

root_option = click.option(
    "--root", type=click.Path(path_type=Path), envvar="GREENLIGHT_ROOT", default=None,
    show_default="the platform's data folder", show_envvar=True, help="Installation root.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the stable JSON report.")
force_option = click.option("--force", is_flag=True,
                            help="Upgrade even if the running release fails its pre-check.")
T = TypeVar("T")


def say(line: str = "") -> None:
    print(line, flush=False)


def _dump(report: "BaseModel") -> None:
    from greenlight.updater.output import dump

    print(dump(report))


def _fail(error: GreenlightError, as_json: bool) -> SystemExit:
    if as_json:
        from greenlight.updater.output import ErrorReport

        _dump(ErrorReport(error=str(error), kind=error.kind, exit_code=error.exit_code))
    else:
        print(f"updater: error: {error}", file=sys.stderr)
    return SystemExit(error.exit_code)


def _keep_status(root: "InstallRoot", result: object) -> None:
    """state/status.json after every command (what a UI reads); never fails the command.
    A local write only: no command but those that change the installation sends anything."""
    from greenlight.updater.output import status_update
    from greenlight.updater.store import refresh_status

    if not root.config_path.exists():
        return
    with contextlib.suppress(GreenlightError, OSError):
        refresh_status(root, **status_update(result))  # type: ignore[arg-type]


def _send_reports(root: "InstallRoot") -> None:
    """The fleet-report outbox (opt-in), sent after a command that changed the installation,
    or kept for the next one; never fails the command."""
    from greenlight.updater.store import queued

    if queued(root):
        from greenlight.updater.agent import send_reports

        send_reports(root)


def _run(as_json: bool, work: Callable[[], T], root: "InstallRoot | None" = None,
         sends: bool = False) -> T:
    """The one error funnel: every command's work runs here (after recovery, for a root).
    With `sends`, a command that changed the installation sends the report outbox after."""
    from greenlight.updater.operations import recover_if_interrupted

    try:
        if root is not None and root.config_path.exists():
            recover_if_interrupted(root)
        result = work()
        if root is not None:
            _keep_status(root, result)
            if sends:
                _send_reports(root)
        return result
    except GreenlightError as e:
        raise _fail(e, as_json) from None
    except OSError as e:  # local state that could not be written or read, not a bug
        hint = " (disk full)" if e.errno == errno.ENOSPC else ""
        where = e.filename or "local state"
        raise _fail(StoreError(f"{where}: {e.strerror or e}{hint}"), as_json) from None


def _root(path: Path | None) -> "InstallRoot":
    from greenlight.updater.store import InstallRoot, default_root

    return InstallRoot(path if path is not None else default_root())


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress("{task.description}", *columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("downloading", total=None)
        yield lambda n: bar.advance(task, n)


@app.command()
@root_option
@click.option("--repo", required=True, help="Repository base URL.")
@click.option("--trust", required=True, type=click.Path(path_type=Path),
              help="The root.json to trust first.")
@click.option("--channel", default="stable", show_default=True, help="Channel to follow.")
@json_option
def init(root: Path | None, repo: str, trust: Path, channel: str, as_json: bool) -> None:
    """Create an installation root that trusts the --trust root.json and follows --channel."""
    from greenlight.updater.operations import open_repository, status
    from greenlight.updater.product import init_root

    def work() -> "StatusReport":
        try:
            trusted = trust.read_bytes()
        except OSError as e:
            raise ConfigError(f"--trust {trust}: cannot read: {e.strerror}") from None
        created = init_root(_root(root).path, repo, trusted, channel)
        open_repository(created)  # verify the trust anchor now, not at the first check
        return status(created)

    report = _run(as_json, work)
    if as_json:
        _dump(report)
    else:
        say(f"initialized {report.root} following {channel} at {repo}")


@app.command("check")
@root_option
@json_option
def check_cmd(root: Path | None, as_json: bool) -> None:
    """Refresh signed metadata and report whether the channel has another release.

    Read-only: it never stops, starts or installs anything. Exit 0 when up to date, 10 when
    an update is available, 14 when the installed release was yanked (`updater upgrade`
    leaves it), 15 when the channel's release is held back here (quarantined, or not yet in
    its staged rollout).
    """
    from greenlight.updater.operations import check, open_repository

    install = _root(root)
    report = _run(as_json, lambda: check(install, open_repository(install)), install)
    if as_json:
        _dump(report)
    elif report.yanked:
        say(f"{report.channel}: the installed {report.installed} was YANKED: {report.yanked}; "
            f"run 'updater upgrade' to leave it for {report.available}")
    elif report.quarantined and report.installed_release != report.available_release:
        say(f"{report.channel}: {report.available} is held back here: {report.quarantined} "
            f"(see 'updater quarantine')")
    elif (report.rollout and not report.rollout.in_rollout
          and report.installed_release != report.available_release):
        r = report.rollout
        where = f"{r.percent}%" + (f", step {r.step + 1} of {len(r.steps)}"
                                   if r.step is not None else "")
        if r.halted:
            where += f", HALTED: {r.reason}" if r.reason else ", halted"
        say(f"{report.channel}: {report.available} is rolling out ({where}); "
            f"this installation (bucket {r.bucket}) is not in it yet")
    elif report.held:
        say(f"{report.channel}: {report.available} is held back here: {report.held}")
    elif report.update_available and report.installed == report.available:
        say(f"{report.channel}: {report.available_release} available: the same version as the "
            f"installed {report.installed_release}, other bytes")
    elif report.update_available:
        say(f"{report.channel}: {report.available} available "
            f"(installed: {report.installed or 'nothing'})")
    else:
        say(f"{report.channel}: up to date at {report.installed}")
    if report.yanked:
        raise SystemExit(EXIT_YANKED)
    if report.held:
        raise SystemExit(EXIT_HELD)
    raise SystemExit(EXIT_UPDATE_AVAILABLE if report.update_available else 0)


def _print_checks(results: "list[CheckResult]") -> None:
    for r in results:
        mark = "ok  " if r.ok else ("FAIL" if r.required else "warn")
        say(f"  {mark} {r.name} ({r.type}, {r.latency_ms:.0f} ms): {r.summary}")


def _print_transaction(report: "UpgradeReport") -> None:
    import json

    if report.outcome == "up-to-date":
        say(f"{report.channel}: up to date at {report.to_version}")
    elif report.outcome == "held":
        say(f"{report.channel}: not upgrading: {report.note}")
    elif report.outcome == "upgraded":
        say(f"{report.channel}: upgraded {report.from_version or 'nothing'} -> "
            f"{report.to_version} ({report.bytes_fetched} of {report.bytes_total} bytes fetched)")
    else:
        incident = report.incident
        assert incident is not None
        verb = "ROLLED BACK" if report.outcome == "rolled-back" else "ROLLBACK FAILED"
        say(f"{report.channel}: {verb}: {incident.summary}")
        for check_ in incident.failed_checks:
            say(f"  failed check {check_.name}: {check_.summary}")
            evidence = {k: check_.evidence[k] for k in _EVIDENCE
                        if check_.evidence.get(k) not in (None, [], "")}
            if evidence:
                say(f"    evidence: {json.dumps(evidence)[:300]}")
        for stop in incident.stop_outcomes:
            say(f"  stop: {stop}")
        where = f"now on {report.installed or 'nothing'}, channel {report.channel_now}"
        seconds = incident.timings.get("rollback_seconds")
        took = f" (rolled back in {seconds:.2f}s, services' start-up excluded)" if seconds else ""
        held = (f"{report.quarantined} quarantined" if report.quarantined else
                f"{report.to_version} not quarantined (the running release failed, not it)")
        say(f"  {where}; {held}{took}"
            if report.outcome == "rolled-back" else f"  {where}: needs a person")


def _exit_for(report: "UpgradeReport") -> int:
    return {"rolled-back": EXIT_ROLLED_BACK, "rollback-failed": EXIT_ROLLBACK_FAILED,
            "held": EXIT_HELD}.get(report.outcome, 0)


def _finish_transaction(report: "UpgradeReport", as_json: bool) -> NoReturn:
    _dump(report) if as_json else _print_transaction(report)
    raise SystemExit(_exit_for(report))


@app.command("upgrade")
@root_option
@force_option
@json_option
def upgrade_cmd(root: Path | None, force: bool, as_json: bool) -> None:
    """Download, verify, stage and switch to the active channel's release, health-checked.

    Exit 20 when the new release failed its checks and was rolled back, 15 when the
    channel's release is held back here (quarantined, or not yet in its staged rollout).
    """
    from greenlight.updater.operations import open_repository, upgrade

    install = _root(root)
    with _progress(not as_json) as progress:
        report = _run(as_json, lambda: upgrade(install, open_repository(install), progress,
                                               force), install, sends=True)
    _finish_transaction(report, as_json)


@app.command("sideload")
@click.argument("bundle", type=click.Path(path_type=Path))
@root_option
@force_option
@click.option("--switch-channel", "switch", is_flag=True,
              help="Follow the bundle's channel if it is not this root's.")
@json_option
def sideload_cmd(bundle: Path, root: Path | None, force: bool, switch: bool,
                 as_json: bool) -> None:
    """Upgrade from BUNDLE, an offline bundle made by `release bundle`: the same verification
    and transaction, no network.

    Exit 20 when the new release failed its checks and was rolled back, 15 when the
    channel's release is held back here (quarantined, or not yet in its staged rollout).
    """
    from greenlight.updater.operations import sideload

    install = _root(root)
    with _progress(not as_json) as progress:
        report = _run(as_json, lambda: sideload(install, bundle, progress, force, switch), install,
                      sends=True)
    _finish_transaction(report, as_json)


@app.command("rollback")
@root_option
@json_option
def rollback_cmd(root: Path | None, as_json: bool) -> None:
    """Go back to the previous release by hand: stop, switch, start, check; quarantine this one."""
    from greenlight.updater.operations import rollback

    install = _root(root)
    report = _run(as_json, lambda: rollback(install), install, sends=True)
    if as_json:
        _dump(report)
    elif report.outcome == "rolled-back":
        say(f"rolled back {report.from_version} -> {report.installed}; "
            f"{report.from_version} quarantined")
    else:
        _print_transaction(report)
    raise SystemExit(0 if report.outcome == "rolled-back" else _exit_for(report))


@app.command("health")
@root_option
@json_option
def health_cmd(root: Path | None, as_json: bool) -> None:
    """Run the health checks against the installed release now.

    Exit 1 when a required check fails, or when no check is configured: nothing checked is
    never reported as healthy.
    """
    from greenlight.updater.operations import health

    install = _root(root)
    report = _run(as_json, lambda: health(install), install)
    if as_json:
        _dump(report)
    else:
        verdict = ("NOTHING CHECKED: greenlight.toml configures no services and no checks"
                   if not report.checked else "healthy" if report.healthy else "UNHEALTHY")
        say(f"{report.installed or 'nothing installed'}: {verdict}")
        _print_checks(report.results)
    raise SystemExit(0 if report.healthy else 1)


@app.command("history")
@root_option
@json_option
def history_cmd(root: Path | None, as_json: bool) -> None:
    """What happened here: upgrades, rollbacks and incidents with their evidence."""
    from greenlight.updater.output import HistoryReport
    from greenlight.updater.store import history

    install = _root(root)
    entries = _run(as_json, lambda: history(install.require()), install)
    if as_json:
        _dump(HistoryReport(root=str(install.path), entries=entries))
        return
    for e in entries:
        move = (f"{e.from_version or '-'} -> {e.to_version or '-'}" if e.to_version
                else e.from_version or "-")
        say(f"{e.at:%Y-%m-%d %H:%M:%S}Z {e.event:16} {e.channel:8} {move:16} {e.summary}")
        for c in e.failed_checks:
            say(f"    failed {c.name}: {c.summary}")


@app.command("start")
@root_option
def start_cmd(root: Path | None) -> None:
    """Start the installed release's services, in order, each ready before the next."""
    from greenlight.updater.operations import start_services

    install = _root(root)
    started = _run(False, lambda: start_services(install), install)
    say(f"started {', '.join(started) or 'nothing (no [[service]] configured)'}")


@app.command("stop")
@root_option
def stop_cmd(root: Path | None) -> None:
    """Stop the services in reverse order (UI before core), drained."""
    from greenlight.updater.operations import stop_services

    install = _root(root)
    for line in _run(False, lambda: stop_services(install), install):
        say(line)


@app.command("systemd-units")
@root_option
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write the unit files to.")
def systemd_units_cmd(root: Path | None, out_dir: Path) -> None:
    """Write a systemd unit for each configured service (backend = "systemd").

    Units run the release through the root's `current` link, so a switch needs no new units.
    """
    from greenlight.updater.operations import write_systemd_units

    install = _root(root)
    for path in _run(False, lambda: write_systemd_units(install, out_dir)):
        say(f"wrote {path}")


@app.command("recover")
@root_option
@json_option
def recover_cmd(root: Path | None, as_json: bool) -> None:
    """Finish or undo a transaction that an interrupted updater left behind."""
    from greenlight.updater.operations import recover_root

    install = _root(root)
    entry = _run(as_json, lambda: recover_root(install.require()))
    if as_json:
        print(entry.model_dump_json(indent=2) if entry else "null")
    else:
        say(entry.summary if entry else "nothing to recover")


@app.group("quarantine", invoke_without_command=True)
@root_option
@json_option
@click.pass_context
def quarantine_cmd(ctx: click.Context, root: Path | None, as_json: bool) -> None:
    """List the releases quarantined here, with why; 'clear' lifts one.

    A quarantined release is never installed automatically. Lift it once the cause is
    fixed (a wrong path in greenlight.toml, say): the next upgrade may install it again.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = (root, as_json)
        return
    from greenlight.updater.operations import quarantined

    install = _root(root)
    _print_quarantine(_run(as_json, lambda: quarantined(install), install), as_json)


def _print_quarantine(report: "QuarantineReport", as_json: bool) -> None:
    if as_json:
        _dump(report)
        return
    for e in report.lifted:
        say(f"lifted {e.release} (was: {e.reason})")
    if not report.entries:
        say("nothing is quarantined here")
    for e in report.entries:
        say(f"{e.release:<26} {e.at:%Y-%m-%d %H:%M}Z {e.channel}: {e.reason}")


@quarantine_cmd.command("clear")
@click.argument("release")
@root_option
@json_option
@click.pass_obj
def quarantine_clear_cmd(obj: tuple[Path | None, bool] | None, release: str,
                         root: Path | None, as_json: bool) -> None:
    """Lift the quarantine of RELEASE: a version (all of its releases) or a release key
    such as 1.2@3f2a9c1d4e5f. The history records who lifted it, and when."""
    from greenlight.updater.operations import lift

    outer_root, outer_json = obj or (None, False)
    install = _root(root or outer_root)
    as_json = as_json or outer_json
    _print_quarantine(_run(as_json, lambda: lift(install, release), install), as_json)


@app.command()
@root_option
@json_option
def status(root: Path | None, as_json: bool) -> None:
    """Show what is installed, which channel is active and why."""
    from greenlight.updater import operations

    install = _root(root)
    report = _run(as_json, lambda: operations.status(install), install)
    if as_json:
        _dump(report)
        return
    rows = [("root", report.root), ("repository", report.repository),
            ("channel", f"{report.channel} (since {report.channel_since:%Y-%m-%d %H:%M}Z: "
                        f"{report.channel_reason})"),
            ("installed", report.installed or "nothing")]
    if report.identity is not None:
        rows.append(("identity", f"{report.identity.key}  sha256 {report.identity.digest}"))
        rows += [(f"  {name}", f"sha256 {digest}")
                 for name, digest in report.identity.components.items()]
    rows.append(("kept releases", ", ".join(report.releases) or "none"))
    rows += [("quarantined", f"{v}: {reason}") for v, reason in report.quarantined.items()]
    if report.hold:
        rows.append(("held", report.hold))
    if report.pin:
        rows.append(("pinned to", report.pin))
    if report.last_event:
        rows.append(("last event", report.last_event))
    for label, value in rows:
        say(f"{label:<14} {value}")


@app.command()
@click.argument("name", required=False)
@root_option
@json_option
def channel(name: str | None, root: Path | None, as_json: bool) -> None:
    """Show the active channel, or switch to NAME (verified to exist in the repository)."""
    from greenlight.updater.operations import open_repository, status, switch_channel

    install = _root(root)

    def work() -> "StatusReport":
        if name is not None:
            switch_channel(install, open_repository(install), name)
        return status(install)

    report = _run(as_json, work, install)
    if as_json:
        _dump(report)
    else:
        say(f"{report.channel} ({report.channel_reason})")


@app.command("agent")
@root_option
@click.option("--once", is_flag=True, help="Run one cycle and exit (for timers and tests).")
@click.option("--failures", type=int, default=0, hidden=True)
@click.option("--report", type=click.Path(path_type=Path), default=None, hidden=True)
def agent_cmd(root: Path | None, once: bool, failures: int, report: Path | None) -> None:
    """Keep this installation current by itself, by the [agent] policy in greenlight.toml:
    check every interval (with jitter), install inside the windows unless held, leave a
    revoked release at once, back off on repository errors. Logs to logs/agent.log.

    Between cycles only a small stdlib loop stays in memory; each cycle runs as a child.
    """
    install = _root(root)
    _run(False, install.require)
    if not once:
        import os

        from greenlight.updater.agent import loop_argv

        argv = loop_argv(install)
        os.execv(argv[0], argv)
    from greenlight.updater.agent import run_once

    raise SystemExit(run_once(install, failures, report))


def _when(text: str) -> "datetime":
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected an ISO date or time, e.g. 2026-12-01 "
                                 "or 2026-12-01T08:00") from None
    return at.astimezone(UTC) if at.tzinfo is None else at


@app.command("hold")
@root_option
@click.option("--until", "until", default=None, metavar="DATE",
              help="ISO date or time the hold ends (local time unless it names a zone); "
                   "default: until `updater unhold`.")
@click.option("--reason", default="", help="Why, for the status and the history.")
def hold_cmd(root: Path | None, until: str | None, reason: str) -> None:
    """Hold automatic installs (the agent's); never holds leaving a revoked release."""
    from greenlight.updater.operations._change import _who
    from greenlight.updater.store import set_hold

    install = _root(root)
    ends = _when(until) if until else None
    hold = _run(False, lambda: set_hold(install.require(), ends, reason, _who()), install)
    say(f"automatic installs held {f'until {hold.until:%Y-%m-%d %H:%M}Z' if hold.until else ''}"
        .rstrip() + (f": {reason}" if reason else ""))


@app.command("unhold")
@root_option
def unhold_cmd(root: Path | None) -> None:
    """End a hold: the agent installs again at its next cycle."""
    from greenlight.updater.store import clear_hold

    install = _root(root)
    had = _run(False, lambda: clear_hold(install.require()), install)
    say("hold ended" if had else "no hold was in force")


@app.command("pin")
@click.argument("version")
@root_option
def pin_cmd(version: str, root: Path | None) -> None:
    """Keep this installation on VERSION even when the channel moves (still verified; left
    if it is revoked). `updater upgrade` and the agent install only VERSION."""
    from greenlight.channels import canonical_version
    from greenlight.updater.operations._change import _who
    from greenlight.updater.store import set_pin

    install = _root(root)

    def work() -> str:
        try:
            canonical = canonical_version(version)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return set_pin(install.require(), canonical, _who()).version

    say(f"pinned to {_run(False, work, install)}")


@app.command("unpin")
@root_option
def unpin_cmd(root: Path | None) -> None:
    """End a pin: the channel's release is the goal again."""
    from greenlight.updater.store import clear_pin

    install = _root(root)
    had = _run(False, lambda: clear_pin(install.require()), install)
    say("pin ended" if had else "no pin was set")


@app.command("exit-codes")
def exit_codes() -> None:
    """List the exit codes and what they mean."""
    for code, meaning in sorted(EXIT_CODES.items()):
        say(f"{code:>3}  {meaning}")


def main() -> None:
    """The `updater` console script: no traceback ever reaches the user."""
    try:
        app(prog_name="updater")
    except KeyboardInterrupt:
        print("updater: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug: say so in one line, with the documented exit code 1
        print(f"updater: internal error: {type(e).__name__}: {e} (please report it)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
