"""The commands about Greenlight itself: self-update (and its fall-back) and qualify."""

import sys
from pathlib import Path

import click

from greenlight.updater.cli._common import (
    app,
    json_option,
    open_root,
    print_json,
    root_option,
    run_command,
    say,
)

__all__: list[str] = []


@app.command("self-update")
@root_option
@click.option("--fall-back", "fall_back_reason", default=None, metavar="REASON",
              help="Put the active version aside (quarantined, for REASON) and go back to the "
                   "previous one; the agent's loop runs this when a new version's first "
                   "cycles fail.")
@click.option("--active", "expected", default=None, metavar="VERSION",
              help="With --fall-back: only when VERSION is the active one.")
@click.option("--lift", "lifted", default=None, metavar="VERSION",
              help="Lift the quarantine of Greenlight VERSION here, once its cause is gone.")
@json_option
def self_update_cmd(root: Path | None, fall_back_reason: str | None, expected: str | None,
                    lifted: str | None, as_json: bool) -> None:
    """Move this machine's Greenlight to the newest release of its updater channel
    (greenlight-<channel>): fetched and verified with this root's trust, qualified against
    this root read-only, then activated in one crash-safe step. The previous version stays as
    the fallback. Exit 0 when it moved, had nothing to do, fell back or kept the active version
    (the note says why), 15 when a newer one is held back (outside its rollout, quarantined
    here, no build for this platform) or this Greenlight is moved by something else (a Python
    environment), 20 when the new version failed to qualify and was quarantined (this one
    stays), 9 when --lift names a version that is not quarantined."""
    from greenlight.updater._errors import EXIT_HELD, EXIT_ROLLED_BACK, UsageError
    from greenlight.updater.selfupdate import fall_back, lift, self_update

    install = open_root(root)

    def work():  # type: ignore[no-untyped-def]
        install.require()
        if fall_back_reason is not None and lifted is not None:
            raise UsageError("give --fall-back or --lift, not both")
        if expected is not None and fall_back_reason is None:
            raise UsageError("--active goes with --fall-back")
        if fall_back_reason is not None:
            return fall_back(install, " ".join(fall_back_reason.split())[:300], expected)
        if lifted is not None:
            return lift(install, lifted)
        from greenlight.updater.operations import open_repository

        return self_update(install, open_repository(install),
                           told=lambda line: None if as_json else say(line))

    # A fall-back, or a lift, runs whatever the product's state: it never waits on recovering
    # a transaction (the version it puts aside may have left one the older cannot read).
    plain = fall_back_reason is not None or lifted is not None
    report = run_command(as_json, work, None if plain else install, sends=not plain)
    if as_json:
        print_json(report)
    else:
        say(report.note)
    code = {"held": EXIT_HELD, "unmanaged": EXIT_HELD,
            "quarantined": EXIT_ROLLED_BACK}.get(report.outcome, 0)
    if code:
        sys.exit(code)


@app.command("qualify", hidden=True)
@root_option
@json_option
def qualify_cmd(root: Path | None, as_json: bool) -> None:
    """Load everything this Greenlight would act on in this root, read-only (a new version
    runs this before it takes over); exit 0 when every check passed, 1 otherwise."""
    from greenlight.updater.selfupdate import qualify

    report = run_command(as_json, lambda: qualify(open_root(root).path))
    if as_json:
        print_json(report)
    else:
        for c in report.checks:
            say(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    if not report.ok:
        sys.exit(1)
