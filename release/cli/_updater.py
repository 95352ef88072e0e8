"""`release publish-updater`: Greenlight's own updater, signed as a release of its own."""

import tempfile
from pathlib import Path

import click

from greenlight.release.cli._common import (
    app,
    change_channel,
    json_option,
    keys_option,
    repo_argument,
    rollout_line,
    run_command,
    say,
)

__all__: list[str] = []


def _exes(items: tuple[str, ...]) -> dict[str, Path]:
    from greenlight.channels import check_component_name
    from greenlight.release._errors import UsageError

    found: dict[str, Path] = {}
    for item in items:
        tag, sep, path = item.partition("=")
        if not sep or not tag or not path:
            raise UsageError(f"--exe {item!r}: expected PLATFORM=PATH (e.g. linux-x86_64=dist/"
                             "updater)")
        try:
            check_component_name(f"updater-{tag}")
        except ValueError as e:
            raise UsageError(f"--exe {item!r}: {e}") from None
        if tag in found:
            raise UsageError(f"--exe {tag}: given twice")
        found[tag] = Path(path)
    return found


@app.command("publish-updater")
@repo_argument
@click.option("--channel", required=True,
              help="The product channel whose machines take it: it is published on "
                   "greenlight-<channel>.")
@click.option("--exe", "exes", multiple=True, metavar="PLATFORM=PATH",
              help="A built one-file updater for PLATFORM (linux-x86_64, windows-x86_64, ...); "
                   "repeatable. Default: build this checkout's for this machine's platform.")
@click.option("--version", "version", default=None,
              help="The Greenlight version it is (default: what the executable says; "
                   "required when none of them runs here).")
@click.option("--rollout", "rollout_percent", type=int, default=None,
              help="Start a staged rollout at this percent of machines.")
@click.option("--rollout-plan", default=None, metavar="P1,P2,...",
              help="Roll out by these percent steps, moved along or halted by the collector, "
                   "as a product release's.")
@click.option("--soak", default="1h", show_default=True,
              help="With --rollout-plan: the least time each step lasts.")
@click.option("--halt-rollbacks", type=int, default=3, show_default=True,
              help="With --rollout-plan: halt once this many machines put it aside.")
@click.option("--halt-ratio", type=float, default=0.05, show_default=True,
              help="With --rollout-plan: or once more than this share of machines failed...")
@click.option("--halt-min-reports", type=int, default=20, show_default=True,
              help="...of at least this many machines reporting.")
@keys_option
@json_option
def publish_updater(repo: Path, channel: str, exes: tuple[str, ...], version: str | None,
                    rollout_percent: int | None, rollout_plan: str | None, soak: str,
                    halt_rollbacks: int, halt_ratio: float, halt_min_reports: int,
                    keys: Path | None, as_json: bool) -> None:
    """Publish Greenlight's updater as a release of channel greenlight-<channel>: one
    archive per platform (the one-file executable as `updater`), signed under this
    repository's keys. Machines on --channel whose Greenlight is such an executable take it
    at their agent's next cycle (or `updater self-update`): verified, qualified against
    their root, then activated, the version before kept as their fallback."""
    from greenlight.channels import this_platform, updater_channel, updater_component
    from greenlight.release.cli._repository import plan_of
    from greenlight.release.distribution._updater import (
        build_updater,
        exe_version,
        updater_archive,
    )
    from greenlight.release.repository._publish import publish

    plan = None if rollout_plan is None else run_command(lambda: plan_of(
        rollout_plan, soak, halt_rollbacks, halt_ratio, halt_min_reports))
    given = run_command(lambda: _exes(exes))
    target = run_command(lambda: updater_channel(channel))
    with tempfile.TemporaryDirectory(prefix="greenlight-publish-updater-") as tmp:
        if not given:
            built = run_command(lambda: build_updater(
                Path(tmp) / "dist", told=lambda line: None if as_json else say(line)))
            given = {this_platform(): built}
        here = given.get(this_platform())
        made = version or run_command(lambda: exe_version(here) if here is not None
                                      else exe_version(next(iter(given.values()))))
        if here is not None and version is not None:
            said = run_command(lambda: exe_version(here))
            if said != version:
                from greenlight.release._errors import UsageError
                from greenlight.release.cli._common import fail

                raise fail(UsageError(f"--version {version}: the {this_platform()} "
                                      f"executable says it is {said}"))
        archives = run_command(lambda: {
            updater_component(tag): updater_archive(path, Path(tmp) / "archives", made, tag)
            for tag, path in given.items()})

        def describe(cf: object) -> str:
            from greenlight.channels import ChannelFile

            assert isinstance(cf, ChannelFile)
            rollout = "" if cf.rollout is None else f"\nrollout: {rollout_line(cf)}"
            return (f"published Greenlight {cf.release} on {cf.channel} for machines on "
                    f"{channel} ({', '.join(sorted(cf.components))}){rollout}")

        change_channel(repo, keys, as_json, lambda r: publish(
            r, target, made, archives, None, False, rollout_percent, deltas=False,
            rollout_plan=plan), describe)
