"""`updater`: the command line of the client. Parses, calls plain functions, prints.

Human output is short and goes to stdout; errors are one line on stderr; `--json` prints the
report's stable JSON shape instead (errors too, as greenlight.error/1). Exit codes are listed
by `updater exit-codes` and in the README.
"""

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TransferSpeedColumn,
)
from rich.table import Table

from updater._errors import (
    EXIT_CODES,
    EXIT_ROLLBACK_FAILED,
    EXIT_ROLLED_BACK,
    EXIT_UPDATE_AVAILABLE,
    ConfigError,
    GreenlightError,
)
from updater._health import CheckResult
from updater._journal import history, quarantine
from updater._reports import (
    CheckReport,
    ErrorReport,
    HistoryReport,
    StatusReport,
    UpgradeReport,
    dump,
)
from updater._root import InstallRoot, default_root
from updater._services import SystemdBackend, render_unit
from updater._transaction import values_for
from updater._trust import TrustedRepository
from updater._upgrade import (
    check,
    health,
    open_repository,
    recover_if_interrupted,
    recover_root,
    rollback,
    sideload,
    start_services,
    stop_services,
    switch_channel,
    upgrade,
)

app = typer.Typer(
    name="updater",
    help="Greenlight updater: keep this installation on a signed release channel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
_EVIDENCE = ("status", "body", "close_code", "returncode", "stderr", "error", "answers", "got",
             "expected", "last_exit", "log")
err = Console(stderr=True, highlight=False)

RootOpt = Annotated[
    Path,
    typer.Option(
        "--root",
        envvar="GREENLIGHT_ROOT",
        default_factory=default_root,
        show_default="platform data dir, or $GREENLIGHT_ROOT",
        help="Installation root.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the stable JSON report.")]
T = TypeVar("T")


def _fail(error: GreenlightError, as_json: bool) -> typer.Exit:
    if as_json:
        print(dump(ErrorReport(error=str(error), kind=error.kind, exit_code=error.exit_code)))
    else:
        err.print(f"updater: error: {error}", soft_wrap=True)
    return typer.Exit(error.exit_code)


def _run(as_json: bool, work: Callable[[], T], root: InstallRoot | None = None) -> T:
    try:
        if root is not None and root.config_path.exists():
            recover_if_interrupted(root)
        return work()
    except GreenlightError as e:
        raise _fail(e, as_json) from None


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not err.is_terminal:
        yield None
        return
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress("[progress.description]{task.description}", *columns, console=err) as bar:
        task = bar.add_task("downloading", total=None)
        yield lambda n: bar.advance(task, n)


@app.command()
def init(
    root: RootOpt,
    repo: Annotated[str, typer.Option("--repo", help="Repository base URL.")],
    trust: Annotated[Path, typer.Option("--trust", help="The root.json to trust first.")],
    channel: Annotated[str, typer.Option("--channel", help="Channel to follow.")] = "stable",
    as_json: JsonOpt = False,
) -> None:
    """Create an installation root that trusts ROOT_JSON and follows CHANNEL."""

    def work() -> InstallRoot:
        try:
            trusted = trust.read_bytes()
        except OSError as e:
            raise ConfigError(f"--trust {trust}: cannot read: {e.strerror}") from None
        created = InstallRoot.create(root, repo, trusted, channel)
        # Verify the trust anchor now, not at the first check.
        open_repository(created)
        return created

    created = _run(as_json, work)
    if as_json:
        print(dump(_status(created)))
    else:
        out.print(f"initialized {created.path} following {channel} at {repo}")


@app.command("check")
def check_cmd(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Refresh signed metadata and report whether the channel has another release.

    Exit 0 when up to date, 10 when an update is available.
    """
    install = InstallRoot(root)

    def work() -> tuple[CheckReport, TrustedRepository]:
        repo = open_repository(install)
        return check(install, repo), repo

    report, repo = _run(as_json, work, install)
    if report.yanked:
        # A yanked release is treated like a failed health check: leave it now, with the
        # metadata this check already refreshed.
        moved = _run(as_json, lambda: upgrade(install, repo), install)
        print(dump(moved)) if as_json else _print_transaction(moved)
        raise typer.Exit(_exit_for(moved))
    if as_json:
        print(dump(report))
    elif report.quarantined:
        out.print(f"{report.channel}: {report.available} is held back here: {report.quarantined}")
    elif report.rollout and not report.rollout.in_rollout and report.installed != report.available:
        out.print(f"{report.channel}: {report.available} is rolling out "
                  f"({report.rollout.percent}%{', halted' if report.rollout.halted else ''}); "
                  f"this installation (bucket {report.rollout.bucket}) is not in it yet")
    elif report.update_available:
        out.print(
            f"{report.channel}: {report.available} available "
            f"(installed: {report.installed or 'nothing'})"
        )
    else:
        out.print(f"{report.channel}: up to date at {report.installed}")
    raise typer.Exit(EXIT_UPDATE_AVAILABLE if report.update_available else 0)


ForceOpt = Annotated[
    bool, typer.Option("--force", help="Upgrade even if the running release fails its pre-check.")
]


def _print_checks(results: list[CheckResult]) -> None:
    for r in results:
        mark = "ok  " if r.ok else ("FAIL" if r.required else "warn")
        out.print(f"  {mark} {r.name} ({r.type}, {r.latency_ms:.0f} ms): {r.summary}")


def _print_transaction(report: UpgradeReport) -> None:
    if report.outcome == "up-to-date":
        out.print(f"{report.channel}: up to date at {report.to_version}")
    elif report.outcome == "held":
        out.print(f"{report.channel}: not upgrading: {report.note}")
    elif report.outcome == "upgraded":
        out.print(
            f"{report.channel}: upgraded {report.from_version or 'nothing'} -> {report.to_version}"
            f" ({report.bytes_fetched} of {report.bytes_total} bytes fetched)"
        )
    else:
        incident = report.incident
        assert incident is not None
        verb = "ROLLED BACK" if report.outcome == "rolled-back" else "ROLLBACK FAILED"
        out.print(f"{report.channel}: {verb}: {incident.summary}")
        for check_ in incident.failed_checks:
            out.print(f"  failed check {check_['name']}: {check_['summary']}")
            evidence = {k: check_["evidence"][k] for k in _EVIDENCE
                        if check_["evidence"].get(k) not in (None, [], "")}
            if evidence:
                out.print(f"    evidence: {json.dumps(evidence)[:300]}")
        for stop in incident.stop_outcomes:
            out.print(f"  stop: {stop}")
        where = f"now on {report.installed or 'nothing'}, channel {report.channel_now}"
        seconds = incident.timings.get("rollback_seconds")
        took = f" (rolled back in {seconds:.2f}s, services' start-up excluded)" if seconds else ""
        out.print(f"  {where}; {report.to_version} quarantined{took}"
                  if report.outcome == "rolled-back" else f"  {where}: needs a person")


def _exit_for(report: UpgradeReport) -> int:
    return {"rolled-back": EXIT_ROLLED_BACK, "rollback-failed": EXIT_ROLLBACK_FAILED}.get(
        report.outcome, 0)


@app.command("upgrade")
def upgrade_cmd(root: RootOpt, force: ForceOpt = False, as_json: JsonOpt = False) -> None:
    """Download, verify, stage and switch to the active channel's release, health-checked.

    Exit 20 when the new release failed its checks and was rolled back.
    """
    install = InstallRoot(root)
    with _progress(not as_json) as progress:
        report = _run(as_json, lambda: upgrade(install, open_repository(install), progress,
                                               force), install)
    print(dump(report)) if as_json else _print_transaction(report)
    raise typer.Exit(_exit_for(report))


@app.command("sideload")
def sideload_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle file made by `release bundle`.")],
    root: RootOpt,
    force: ForceOpt = False,
    switch: Annotated[bool, typer.Option(
        "--switch-channel", help="Follow the bundle's channel if it is not this root's.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Upgrade from an offline bundle: the same verification and transaction, no network.

    Exit 20 when the new release failed its checks and was rolled back.
    """
    install = InstallRoot(root)
    with _progress(not as_json) as progress:
        report = _run(as_json, lambda: sideload(install, bundle, progress, force, switch), install)
    print(dump(report)) if as_json else _print_transaction(report)
    raise typer.Exit(_exit_for(report))


@app.command("rollback")
def rollback_cmd(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Go back to the previous release by hand: stop, switch, start, check; quarantine this one."""
    install = InstallRoot(root)
    report = _run(as_json, lambda: rollback(install), install)
    if as_json:
        print(dump(report))
    elif report.outcome == "rolled-back":
        out.print(f"rolled back {report.from_version} -> {report.installed}; "
                  f"{report.from_version} quarantined")
    else:
        _print_transaction(report)
    raise typer.Exit(0 if report.outcome == "rolled-back" else _exit_for(report))


@app.command("health")
def health_cmd(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Run the health checks against the installed release now. Exit 1 when one required fails."""
    install = InstallRoot(root)
    report = _run(as_json, lambda: health(install), install)
    if as_json:
        print(dump(report))
    else:
        out.print(f"{report.installed or 'nothing installed'}: "
                  f"{'healthy' if report.healthy else 'UNHEALTHY'}")
        _print_checks(report.results)
    raise typer.Exit(0 if report.healthy else 1)


@app.command("history")
def history_cmd(root: RootOpt, as_json: JsonOpt = False) -> None:
    """What happened here: upgrades, rollbacks and incidents with their evidence."""
    install = InstallRoot(root)
    entries = _run(as_json, lambda: history(install.require()), install)
    if as_json:
        print(dump(HistoryReport(root=str(install.path), entries=entries)))
        return
    for e in entries:
        move = f"{e.from_version or '-'} -> {e.to_version or '-'}"
        out.print(f"{e.at:%Y-%m-%d %H:%M:%S}Z {e.event:16} {e.channel:8} {move:16} {e.summary}")
        for c in e.failed_checks:
            out.print(f"    failed {c['name']}: {c['summary']}")


@app.command("start")
def start_cmd(root: RootOpt) -> None:
    """Start the installed release's services, in order, each ready before the next."""
    install = InstallRoot(root)
    started = _run(False, lambda: start_services(install), install)
    out.print(f"started {', '.join(started) or 'nothing (no [[service]] configured)'}")


@app.command("stop")
def stop_cmd(root: RootOpt) -> None:
    """Stop the services in reverse order (UI before core), drained."""
    install = InstallRoot(root)
    for line in _run(False, lambda: stop_services(install), install):
        out.print(line)


@app.command("systemd-units")
def systemd_units_cmd(
    root: RootOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the unit files to.")],
) -> None:
    """Write a systemd unit for each configured service (backend = "systemd").

    Units run the release through the root's `current` link, so a switch needs no new units.
    """
    install = InstallRoot(root)

    def work() -> list[Path]:
        config = install.config
        values = values_for(install, None)
        written, previous = [], ""
        out_dir.mkdir(parents=True, exist_ok=True)
        for service in config.service:
            unit = SystemdBackend.unit(service)
            path = out_dir / unit
            path.write_text(render_unit(service, values, after=previous,
                                        timeout=config.stop.timeout))
            written.append(path)
            previous = unit
        return written

    for path in _run(False, work):
        out.print(f"wrote {path}")


@app.command("recover")
def recover_cmd(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Finish or undo a transaction that an interrupted updater left behind."""
    install = InstallRoot(root)
    entry = _run(as_json, lambda: recover_root(install.require()))
    if as_json:
        print(entry.model_dump_json(indent=2) if entry else "null")
    else:
        out.print(entry.summary if entry else "nothing to recover")


def _status(install: InstallRoot) -> StatusReport:
    active = install.active_channel()
    events = history(install)
    return StatusReport(
        quarantined={v: e.reason for v, e in quarantine(install).items()},
        last_event=f"{events[-1].event}: {events[-1].summary}" if events else None,
        root=str(install.path),
        repository=install.config.repository.url,
        channel=active.channel,
        channel_since=active.since,
        channel_reason=active.reason,
        installed=install.installed_version(),
        releases=install.installed_releases(),
    )


@app.command()
def status(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Show what is installed, which channel is active and why."""
    install = InstallRoot(root)
    report = _run(as_json, lambda: _status(install), install)
    if as_json:
        print(dump(report))
        return
    table = Table(show_header=False, box=None)
    table.add_row("root", report.root)
    table.add_row("repository", report.repository)
    table.add_row("channel", f"{report.channel} (since {report.channel_since:%Y-%m-%d %H:%M}Z: "
                  f"{report.channel_reason})")
    table.add_row("installed", report.installed or "nothing")
    table.add_row("kept releases", ", ".join(report.releases) or "none")
    for version, reason in report.quarantined.items():
        table.add_row("quarantined", f"{version}: {reason}")
    if report.last_event:
        table.add_row("last event", report.last_event)
    out.print(table)


@app.command()
def channel(
    root: RootOpt,
    name: Annotated[str | None, typer.Argument(help="Channel to switch to.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the active channel, or switch to NAME (verified to exist in the repository)."""
    install = InstallRoot(root)

    def work() -> StatusReport:
        if name is not None:
            switch_channel(install, open_repository(install), name)
        return _status(install)

    report = _run(as_json, work, install)
    if as_json:
        print(dump(report))
    else:
        out.print(f"{report.channel} ({report.channel_reason})")


@app.command("exit-codes")
def exit_codes() -> None:
    """List the exit codes and what they mean."""
    for code, meaning in sorted(EXIT_CODES.items()):
        out.print(f"{code:>3}  {meaning}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
