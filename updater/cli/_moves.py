"""The commands that move the installation: init, check, upgrade, sideload, rollback,
recover, status, channel and the agent."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from greenlight.updater._errors import (
    EXIT_HELD,
    EXIT_UPDATE_AVAILABLE,
    EXIT_YANKED,
    ConfigError,
    UsageError,
)

if TYPE_CHECKING:
    from greenlight.updater.output import StatusReport, VerifyReport
    from greenlight.updater.store import InstallRoot


from greenlight.updater.cli._common import (
    app,
    force_option,
    json_option,
    open_root,
    print_json,
    progress_bar,
    root_option,
    run_command,
    say,
)
from greenlight.updater.cli._format import exit_for, finish_transaction, print_transaction

__all__: list[str] = []


@app.command()
@root_option
@click.option("--repo", default=None, help="Repository base URL.")
@click.option("--offline", is_flag=True,
              help="An air-gapped root: no repository, updated by `updater sideload` only.")
@click.option("--trust", required=True, type=click.Path(path_type=Path),
              help="The root.json to trust first.")
@click.option("--channel", default="stable", show_default=True, help="Channel to follow.")
@json_option
def init(root: Path | None, repo: str | None, offline: bool, trust: Path, channel: str,
         as_json: bool) -> None:
    """Create an installation root that trusts the --trust root.json and follows --channel:
    online with --repo URL, or air-gapped with --offline."""
    from greenlight.updater.operations import status
    from greenlight.updater.product import init_root
    from greenlight.updater.trust import TrustedRepository

    def work() -> "StatusReport":
        if (repo is None) == (not offline):
            raise UsageError("give --repo URL (the repository this root updates from), or "
                             "--offline for an air-gapped root that only sideloads bundles")
        try:
            trusted = trust.read_bytes()
        except OSError as e:
            raise ConfigError(f"--trust {trust}: cannot read: {e.strerror}") from None
        created = init_root(open_root(root).path, repo, trusted, channel)
        # The trust anchor is verified now, not at the first check or sideload (the client
        # reads only its local root here: nothing is fetched).
        TrustedRepository(created.metadata_dir, "http://127.0.0.1/", "http://127.0.0.1/")
        return status(created)

    report = run_command(as_json, work)
    if as_json:
        print_json(report)
    elif repo is None:
        say(f"initialized {report.root} following {channel}, air-gapped: update it with "
            "'updater sideload BUNDLE'")
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
    from greenlight.updater.operations import check, crashed_services, open_repository

    install = open_root(root)
    report = run_command(as_json, lambda: check(install, open_repository(install),
                                                bool(crashed_services(install))), install)
    if not as_json and report.channel_note:
        say(report.channel_note)
    if as_json:
        print_json(report)
    elif report.yanked and not report.held:
        say(f"{report.channel}: the installed {report.installed} was YANKED: {report.yanked}; "
            f"run 'updater upgrade' to leave it for {report.available}")
    elif report.quarantined and report.installed_release != report.available_release:
        say(f"{report.channel}: {report.available} is held back here: {report.quarantined} "
            f"(see 'updater quarantine')")
    elif (report.held and report.rollout and not report.rollout.in_rollout
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
        note = f"; {report.note}" if report.note else ""
        say(f"{report.channel}: {report.available} available "
            f"(installed: {report.installed or 'nothing'}){note}")
    else:
        say(f"{report.channel}: up to date at {report.installed}")
    if report.yanked and not report.held:
        raise SystemExit(EXIT_YANKED)
    if report.held:
        raise SystemExit(EXIT_HELD)
    raise SystemExit(EXIT_UPDATE_AVAILABLE if report.update_available else 0)


allow_downgrade_option = click.option(
    "--allow-downgrade", is_flag=True,
    help="Install the channel's release even when it is older than the installed one.")


@app.command("upgrade")
@root_option
@force_option
@allow_downgrade_option
@json_option
def upgrade_cmd(root: Path | None, force: bool, allow_downgrade: bool, as_json: bool) -> None:
    """Download, verify, stage and switch to the active channel's release, health-checked.

    Never to an older release unless the installed one was yanked, quarantined or is down, or
    with --allow-downgrade. Exit 20 when the new release failed its checks and was rolled
    back, 15 when the channel's release is held back here (quarantined, older, or not yet in
    its staged rollout).
    """
    from greenlight.updater.operations import open_repository, upgrade

    install = open_root(root)
    with progress_bar(not as_json) as progress:
        report = run_command(as_json, lambda: upgrade(install, open_repository(install), progress,
                                                      force, allow_downgrade),
                             install, sends=True)
    finish_transaction(report, as_json)


@app.command("sideload")
@click.argument("bundle", type=click.Path(path_type=Path))
@root_option
@force_option
@click.option("--switch-channel", "switch", is_flag=True,
              help="Follow the bundle's channel if it is not this root's.")
@allow_downgrade_option
@json_option
def sideload_cmd(bundle: Path, root: Path | None, force: bool, switch: bool,
                 allow_downgrade: bool, as_json: bool) -> None:
    """Upgrade from BUNDLE, an offline bundle made by `release bundle`: the same verification
    and transaction, no network.

    Exit 20 when the new release failed its checks and was rolled back, 15 when the
    channel's release is held back here (quarantined, or not yet in its staged rollout).
    """
    from greenlight.updater.operations import sideload

    install = open_root(root)
    _greenlight_first(install, bundle, as_json)
    with progress_bar(not as_json) as progress:
        report = run_command(as_json, lambda: sideload(install, bundle, progress, force, switch,
                                                       allow_downgrade), install, sends=True)
    finish_transaction(report, as_json)


def _greenlight_first(install: "InstallRoot", bundle: Path, as_json: bool) -> None:
    """A bundle that carries a newer Greenlight for this root moves it first (qualified and
    activated as online); the sideload then goes on in the new version (re-executed)."""
    import os

    from greenlight.updater.selfupdate import from_bundle
    from greenlight.updater.store import entry_point, greenlight_kind

    if not install.config_path.exists() or greenlight_kind(install) != "exe":
        return
    moved = run_command(as_json, lambda: from_bundle(
        install, bundle, told=lambda line: None if as_json else say(line)), install)
    if moved is None or moved.outcome in ("up-to-date", "unmanaged"):
        return
    if not as_json:
        say(moved.note)
    if moved.outcome == "updated":
        point = entry_point(install)
        sys.stdout.flush()
        os.execv(point, [str(point), *sys.argv[1:]])


@app.command("rollback")
@root_option
@json_option
def rollback_cmd(root: Path | None, as_json: bool) -> None:
    """Go back to the previous release by hand: stop, switch, start, check; quarantine this one.

    Exit 20 when the previous release fails its checks here: it is quarantined instead, and
    this one is started again."""
    from greenlight.updater.operations import rollback

    install = open_root(root)
    report = run_command(as_json, lambda: rollback(install), install, sends=True)
    # Still on the release it left: the target failed its checks here and was undone (20).
    moved = report.outcome == "rolled-back" and report.installed != report.from_version
    if as_json:
        print_json(report)
    elif moved:
        say(f"rolled back {report.from_version} -> {report.installed}; "
            f"{report.from_version} quarantined")
    else:
        print_transaction(report)
    raise SystemExit(0 if moved else exit_for(report))


@app.command("recover")
@root_option
@json_option
def recover_cmd(root: Path | None, as_json: bool) -> None:
    """Finish or undo a transaction that an interrupted updater left behind."""
    from greenlight.updater.operations import recover_root

    install = open_root(root)
    entry = run_command(as_json, lambda: recover_root(install.require()))
    if as_json:
        print(entry.model_dump_json(indent=2) if entry else "null")
    else:
        say(entry.summary if entry else "nothing to recover")


@app.command()
@root_option
@json_option
def status(root: Path | None, as_json: bool) -> None:
    """Show what is installed, which channel is active and why."""
    from greenlight.updater import operations

    install = open_root(root)
    report = run_command(as_json, lambda: operations.status(install), install)
    if as_json:
        print_json(report)
        return
    rows = [("root", report.root), ("repository", report.repository),
            ("channel", f"{report.channel} (since {report.channel_since:%Y-%m-%d %H:%M}Z: "
                        f"{report.channel_reason})"),
            ("installed", report.installed or "nothing")]
    if report.chosen_channel:
        rows.insert(3, ("chosen channel", f"{report.chosen_channel} (returned to once it "
                                          "carries a release allowed here)"))
    if report.identity is not None:
        rows.append(("identity", f"{report.identity.key}  sha256 {report.identity.digest}"))
        rows += [(f"  {name}", f"sha256 {digest}")
                 for name, digest in report.identity.components.items()]
    if report.installed:
        rows.append(("configured by", "its release's manifest, under greenlight.toml"
                     if report.manifest else "greenlight.toml"))
    rows.append(("kept releases", ", ".join(report.releases) or "none"))
    rows += [("quarantined", f"{v}: {reason}") for v, reason in report.quarantined.items()]
    if report.hold:
        rows.append(("held", report.hold))
    if report.pin:
        rows.append(("pinned to", report.pin))
    if report.last_event:
        rows.append(("last event", report.last_event))
    if report.reports:
        rows.append(("fleet reports", report.reports))
    if report.feedback:
        rows.append(("feedback", report.feedback))
    if report.greenlight is not None:
        g = report.greenlight
        rows.append(("greenlight", f"{g.version} ({g.kind}" + (
            f"; fallback {g.previous}" if g.previous else "") + (
            f"; on probation for {g.probation} more cycle{'s' if g.probation > 1 else ''}"
            if g.probation else "") + ")"))
        rows += [("greenlight put aside", f"{v}: {why}") for v, why in g.quarantined.items()]
    for label, value in rows:
        say(f"{label:<14} {value}")


@app.command()
@click.argument("name", required=False)
@root_option
@json_option
def channel(name: str | None, root: Path | None, as_json: bool) -> None:
    """Show the active channel, or switch to NAME (verified to exist in the repository)."""
    from greenlight.updater.operations import open_repository, status, switch_channel

    install = open_root(root)

    def work() -> "StatusReport":
        if name is not None:
            switch_channel(install, open_repository(install), name)
        return status(install)

    report = run_command(as_json, work, install)
    if as_json:
        print_json(report)
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
    install = open_root(root)
    run_command(False, install.require)
    if not once:
        import os

        from greenlight.updater._errors import block_interrupts
        from greenlight.updater.agent import loop_argv

        argv = loop_argv(install)
        block_interrupts()  # a stop from here on waits, pending, for the loop
        os.execv(argv[0], argv)
    from greenlight.updater.agent import run_once

    raise SystemExit(run_once(install, failures, report))


@app.command("verify")
@root_option
@click.option("--repair", is_flag=True,
              help="Re-stage the release from verified bytes when it differs (the services "
                   "restart, checked; undone if it fails).")
@click.option("--bundle", "bundle", type=click.Path(path_type=Path), default=None,
              help="With --repair: take the verified bytes from this offline bundle of the "
                   "installed release (a sideloaded release whose archives are not kept).")
@json_option
def verify_cmd(root: Path | None, repair: bool, bundle: Path | None, as_json: bool) -> None:
    """Compare the installed release's files with the file lists it was published with
    (signed beside its archives): each file's type, size, mode and sha256; what is changed,
    missing or extra is named.

    Exit 16 when it differs (0 once --repair re-staged it).
    """
    from greenlight.channels import printable
    from greenlight.updater._errors import EXIT_DAMAGED, ConfigError, UsageError
    from greenlight.updater.operations import open_repository, repair_from_bundle, verify
    from greenlight.updater.operations import repair as repair_release

    install = open_root(root)

    def work() -> "VerifyReport":
        if bundle is not None and not repair:
            raise UsageError("--bundle is the source of a repair: pass --repair too")
        if not repair:
            return verify(install)
        if bundle is not None:
            return repair_from_bundle(install, bundle)
        try:
            repo = open_repository(install)
        except ConfigError:  # air-gapped: kept archives only
            repo = None
        return repair_release(install, repo)

    report = run_command(as_json, work, install, sends=repair)
    if as_json:
        print_json(report)
    else:
        say(report.summary)
        for d in report.differences[:200]:
            say(f"  {d.kind:<8} {printable(d.path, 200)}" + (f" ({d.what})" if d.what else ""))
        if len(report.differences) > 200:
            say(f"  ... and {len(report.differences) - 200} more (--json lists them all)")
    if report.differences:
        raise SystemExit(EXIT_DAMAGED)
