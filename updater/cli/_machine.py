"""The commands about the product and the machine's settings: health, history, identity,
start, stop, systemd units, quarantine, holds and pins, and the exit codes."""

from pathlib import Path
from typing import TYPE_CHECKING

import click

from greenlight.updater._errors import (
    EXIT_CODES,
    UsageError,
)

if TYPE_CHECKING:
    from datetime import datetime



from greenlight.updater.cli._common import (
    app,
    json_option,
    open_root,
    print_json,
    root_option,
    run_command,
    say,
)
from greenlight.updater.cli._format import print_checks, print_quarantine

__all__: list[str] = []


@app.command("health")
@root_option
@json_option
def health_cmd(root: Path | None, as_json: bool) -> None:
    """Run the health checks against the installed release now.

    Exit 1 when a required check fails, or when no check is configured: nothing checked is
    never reported as healthy.
    """
    from greenlight.updater.operations import health

    install = open_root(root)
    report = run_command(as_json, lambda: health(install), install)
    if as_json:
        print_json(report)
    else:
        verdict = ("NOTHING CHECKED: greenlight.toml configures no services and no checks"
                   if not report.checked else "healthy" if report.healthy else "UNHEALTHY")
        say(f"{report.installed or 'nothing installed'}: {verdict}")
        if report.from_release:
            services = ", ".join(f"{n} [{w}]" for n, w in report.services.items()) or "none"
            say(f"  configured by the release's manifest, under greenlight.toml; services: "
                f"{services}")
        print_checks(report.results, tagged=report.from_release)
        for name in report.disabled:
            say(f"  off  {name} [release]: disabled by this machine (disabled_checks)")
        for warning in report.warnings:
            say(f"  note: {warning}")
    raise SystemExit(0 if report.healthy else 1)


@app.command("history")
@root_option
@json_option
def history_cmd(root: Path | None, as_json: bool) -> None:
    """What happened here: upgrades, rollbacks and incidents with their evidence."""
    from greenlight.updater.output import HistoryReport
    from greenlight.updater.store import history

    install = open_root(root)
    entries = run_command(as_json, lambda: history(install.require()), install)
    if as_json:
        print_json(HistoryReport(root=str(install.path), entries=entries))
        return
    for e in entries:
        move = (f"{e.from_version or '-'} -> {e.to_version or '-'}" if e.to_version
                else e.from_version or "-")
        say(f"{e.at:%Y-%m-%d %H:%M:%S}Z {e.event:16} {e.channel:8} {move:16} {e.summary}")
        for c in e.failed_checks:
            say(f"    failed {c.name}: {c.summary}")


@app.command("identity")
@root_option
@click.option("--key", "key_only", is_flag=True,
              help="Print only the public key (one line, for `release machines load`).")
@json_option
def identity_cmd(root: Path | None, key_only: bool, as_json: bool) -> None:
    """This machine's identity in the fleet: the id its reports carry and the public key
    they are signed with (the private key stays in state/machine-key.pem, 0600)."""
    import json

    from greenlight.channels import public_key_text

    install = open_root(root)
    key = run_command(as_json, lambda: public_key_text(install.require().machine_key), install)
    if as_json:
        print(json.dumps({"schema": "greenlight.identity/1", "root": str(install.path),
                          "id": install.machine_id, "key": key}, indent=2))
    elif key_only:
        print(key)
    else:
        say(f"machine id  {install.machine_id}")
        say(f"public key  {key}")


@app.command("start")
@root_option
def start_cmd(root: Path | None) -> None:
    """Start the installed release's services, in order, each ready before the next."""
    from greenlight.updater.operations import start_services

    install = open_root(root)
    started = run_command(False, lambda: start_services(install), install)
    say(f"started {', '.join(started) or 'nothing (no [[service]] configured)'}")


@app.command("stop")
@root_option
def stop_cmd(root: Path | None) -> None:
    """Stop the services in reverse order (UI before core), drained."""
    from greenlight.updater.operations import stop_services

    install = open_root(root)
    for line in run_command(False, lambda: stop_services(install), install):
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

    install = open_root(root)
    for path in run_command(False, lambda: write_systemd_units(install, out_dir)):
        say(f"wrote {path}")


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

    install = open_root(root)
    print_quarantine(run_command(as_json, lambda: quarantined(install), install), as_json)


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
    install = open_root(root or outer_root)
    as_json = as_json or outer_json
    print_quarantine(run_command(as_json, lambda: lift(install, release), install), as_json)


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
    from greenlight.updater.operations import acting_person
    from greenlight.updater.store import set_hold

    install = open_root(root)
    ends = _when(until) if until else None
    by = acting_person()
    hold = run_command(False, lambda: set_hold(install.require(), ends, reason, by), install)
    say(f"automatic installs held {f'until {hold.until:%Y-%m-%d %H:%M}Z' if hold.until else ''}"
        .rstrip() + (f": {reason}" if reason else ""))


@app.command("unhold")
@root_option
def unhold_cmd(root: Path | None) -> None:
    """End a hold: the agent installs again at its next cycle."""
    from greenlight.updater.store import clear_hold

    install = open_root(root)
    had = run_command(False, lambda: clear_hold(install.require()), install)
    say("hold ended" if had else "no hold was in force")


@app.command("pin")
@click.argument("version")
@root_option
def pin_cmd(version: str, root: Path | None) -> None:
    """Keep this installation on VERSION even when the channel moves (still verified; left
    if it is revoked). `updater upgrade` and the agent install only VERSION."""
    from greenlight.channels import canonical_version
    from greenlight.updater.operations import acting_person
    from greenlight.updater.store import set_pin

    install = open_root(root)

    def work() -> str:
        try:
            canonical = canonical_version(version)
        except ValueError as e:
            raise UsageError(str(e)) from None
        return set_pin(install.require(), canonical, acting_person()).version

    say(f"pinned to {run_command(False, work, install)}")


@app.command("unpin")
@root_option
def unpin_cmd(root: Path | None) -> None:
    """End a pin: the channel's release is the goal again."""
    from greenlight.updater.store import clear_pin

    install = open_root(root)
    had = run_command(False, lambda: clear_pin(install.require()), install)
    say("pin ended" if had else "no pin was set")


@app.command("exit-codes")
def exit_codes() -> None:
    """List the exit codes and what they mean."""
    for code, meaning in sorted(EXIT_CODES.items()):
        say(f"{code:>3}  {meaning}")
