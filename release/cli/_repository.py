"""`release init`, `publish`, `status`, `promote`, `yank`, `refresh` and `verify`: the
signed repository and its channels."""

from pathlib import Path
from typing import TYPE_CHECKING

import click

from greenlight.release.cli._common import (
    app,
    change_channel,
    fail,
    json_option,
    keys_option,
    open_repo,
    print_awaiting,
    print_json,
    repo_argument,
    rollout_line,
    run_command,
    say,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from greenlight.channels import ChannelFile, RolloutPlan
    from greenlight.release.rehearsal import RehearsalGate
    from greenlight.release.repository._repository import FileRepository

__all__ = ["both", "parse_components", "plan_of", "rehearsal_gate"]

@app.command()
@repo_argument
@keys_option
def init(repo: Path, keys: Path | None) -> None:
    """Create a new signed repository in REPO with one ed25519 key for each top-level role."""
    from greenlight.release.repository._repository import init_repository

    created = run_command(lambda: init_repository(repo, keys))
    say(f"created repository {created.path}")
    say(f"keys (owner-only, keep them safe): {created.keys.folder}")
    say(f"trusted root for clients: {created.metadata_dir / '1.root.json'}")


def parse_components(items: list[str]) -> dict[str, Path]:
    """The --component options, NAME=PATH each, by name.

    Raises:
        UsageError: an item that is not NAME=PATH, or a name given twice.
    """
    from greenlight.release._errors import UsageError

    components: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--component {item!r}: expected NAME=PATH")
        if name in components:
            raise UsageError(f"--component {name}: given twice")
        components[name] = Path(path)
    return components


@app.command("publish")
@repo_argument
@click.option("--channel", required=True, help="Channel to publish on.")
@click.option("--version", required=True, help="Release version, e.g. 1.6.11.")
@click.option("--component", required=True, multiple=True, metavar="NAME=PATH",
              help="A component archive; give one per component.")
@click.option("--fallback", default=None, help="Channel clients fall back to.")
@click.option("--allow-older", is_flag=True,
              help="Publish a version not newer than the current.")
@click.option("--rollout", "rollout_percent", type=int, default=None,
              help="Start a staged rollout at this percent of installations.")
@click.option("--rollout-plan", default=None, metavar="P1,P2,...",
              help="Roll out by these percent steps (e.g. 5,25,100), moved along by the "
                   "collector through the online rollout-<channel> role, or halted by it.")
@click.option("--soak", default="1h", show_default=True,
              help="With --rollout-plan: the least time each step lasts (30s, 10m, 1h, 2d).")
@click.option("--halt-rollbacks", type=int, default=3, show_default=True,
              help="With --rollout-plan: halt once this many machines rolled back.")
@click.option("--halt-ratio", type=float, default=0.05, show_default=True,
              help="With --rollout-plan: or once more than this share of machines failed...")
@click.option("--halt-min-reports", type=int, default=20, show_default=True,
              help="...of at least this many machines reporting.")
@click.option("--halt-sequential", type=float, default=None, metavar="P",
              help="With --rollout-plan: halt by the sequential rule instead, at this "
                   "false-halt probability (e.g. 0.01): once the release's failure rate is "
                   "shown above the previous release's, however often it is looked at.")
@click.option("--halt-min-failures", type=int, default=3, show_default=True,
              help="With --halt-sequential: no halt before this many machines failed.")
@click.option("--halt-feedback", type=int, default=None, metavar="N",
              help="With --rollout-plan: a signal, not a verdict: once N machines' users "
                   "wrote in about the release within a step, the collector does not "
                   "advance it until a person resumes it (it never halts by feedback).")
@click.option("--no-deltas", is_flag=True, help="Do not build patches from recent releases.")
@click.option("--keep-top-folder", is_flag=True,
              help="Unpack archives as they are, even when all members sit under one folder.")
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The release's product manifest (product.toml: its services, checks, "
                   "health and the values it leaves to the machine); see docs/manifest.md.")
@click.option("--requires", default=None, metavar="VERSION",
              help="The oldest Greenlight that may act on this release, for one that relies "
                   "on a behaviour of that Greenlight: the signed `requires` is raised to it "
                   "(never lowered below what the entry's fields need).")
@click.option("--collector", "collector_url", default=None, metavar="URL",
              help="Before signing, ask this collector which Greenlight the machines on "
                   "--channel run, and refuse a release they are too old for while "
                   "greenlight-<channel> carries no updater that is new enough.")
@click.option("--admin-token-file", type=click.Path(path_type=Path), default=None,
              help="With --collector: the file holding its admin token.")
@click.option("--force", default=None, metavar="REASON",
              help="With --collector: publish over that refusal; the reason is recorded in "
                   "REPO/publish-overrides.jsonl.")
@click.option("--without-rehearsal", default=None, metavar="REASON",
              help="Start the rollout (promote) although the release's rehearsal on this "
                   "channel failed or never ran; the reason is recorded in "
                   "REPO/rehearsal-overrides.jsonl and shown by `release status`.")
@keys_option
@json_option
def publish_cmd(repo: Path, channel: str, version: str, component: tuple[str, ...],
                fallback: str | None, allow_older: bool, rollout_percent: int | None,
                rollout_plan: str | None, soak: str, halt_rollbacks: int, halt_ratio: float,
                halt_min_reports: int, halt_sequential: float | None,
                halt_min_failures: int, halt_feedback: int | None, no_deltas: bool,
                keep_top_folder: bool,
                manifest: Path | None, requires: str | None, collector_url: str | None,
                admin_token_file: Path | None, force: str | None,
                without_rehearsal: str | None, keys: Path | None, as_json: bool) -> None:
    """Add a release's component archives and point --channel at it, signed; with patches
    from the channel's (and its fallback's) recent releases where they are small.

    Each archive unpacks into releases/<release>/<component>/ on the machines. An archive
    whose members all sit under one top folder (core/..., core-1.2.3/...) has that folder
    left out; the channel file records it, and this command says so.

    With --collector, it shows which Greenlight the channel's machines run, and refuses
    (exit 1, nothing signed) a release whose `requires` some of them lack while
    greenlight-<channel> carries no updater release that satisfies it.

    A staged rollout (--rollout, --rollout-plan) starts only for a release whose rehearsal
    on --channel (`release rehearse`) passed for these very archives, unless
    --without-rehearsal REASON."""
    from greenlight.release.cli._census import OVERRIDES, CensusGate, census_text, older_than
    from greenlight.release.repository._publish import publish
    from greenlight.release.repository._status import ChannelCensus, ChannelChange

    plan = None if rollout_plan is None else run_command(lambda: plan_of(
        rollout_plan, soak, halt_rollbacks, halt_ratio, halt_min_reports, halt_sequential,
        halt_min_failures, halt_feedback))
    row = run_command(lambda: _census_of(channel, requires, collector_url, admin_token_file,
                                         force))

    gated: list[RehearsalGate | None] = [None]

    def work() -> ChannelChange:
        r = open_repo(repo, keys)
        gate = None if row is None else CensusGate(r, channel, row, force)
        rehearsed = gated[0] = rehearsal_gate(
            r, "starting the rollout", without_rehearsal,
            plan is not None or rollout_percent is not None)
        cf = publish(r, channel, version, parse_components(list(component)), fallback,
                     allow_older, rollout_percent, deltas=not no_deltas,
                     keep_top_folder=keep_top_folder, rollout_plan=plan, manifest=manifest,
                     requires=requires, gate=both(gate, rehearsed))
        census = None if row is None else ChannelCensus(
            machines=row["machines"], greenlight=row["greenlight"],
            older=older_than(row, cf.requires)[0])
        return ChannelChange(channel_file=cf, awaiting_signatures=r.pending(), census=census,
                             override=gate.override if gate else None)

    result = run_command(work)
    if as_json:
        print_json(result)
        return
    say(_published(result.channel_file))
    if result.census is not None:
        say(f"Greenlight on {channel}: {census_text(result.census.model_dump())}")
    if result.override is not None:
        say(f"published over the census (--force): {result.override['refusal']}; reason: "
            f"{result.override['reason']}; recorded in {repo / OVERRIDES}")
    if gated[0] is not None and gated[0].recorded:
        say(f"started without a passed rehearsal (--without-rehearsal): recorded in "
            f"{repo}/rehearsal-overrides.jsonl")
    print_awaiting(result.awaiting_signatures)


def rehearsal_gate(repo: "FileRepository", action: str, without: str | None,
                   applies: bool = True) -> "RehearsalGate | None":
    """The check that the release's rehearsal on its channel passed (`RehearsalGate`);
    none where there is nothing to gate (a publish that starts no rollout).

    Raises:
        SystemExit: a --without-rehearsal with no reason, or on a publish that starts no
            rollout (said as a usage error, exit 2).
    """
    from greenlight.release._errors import UsageError
    from greenlight.release.rehearsal import RehearsalGate

    if without is not None and not without.strip():
        raise fail(UsageError("--without-rehearsal REASON: say why it ships unrehearsed"))
    if without is not None and not applies:
        raise fail(UsageError("--without-rehearsal goes with --rollout or --rollout-plan: a "
                              "publish that starts no rollout is not gated"))
    return RehearsalGate(repo, action, without) if applies else None


def both(*gates: "Callable[[ChannelFile], None] | None") -> "Callable[[ChannelFile], None]":
    def gate(entry: "ChannelFile") -> None:
        for g in gates:
            if g is not None:
                g(entry)
    return gate


def _census_of(channel: str, requires: str | None, url: str | None, token: Path | None,
               force: str | None) -> "dict[str, Any] | None":
    """The checked values of publish's new options, and with --collector, the census of
    `channel` (before anything is done: an unreachable collector changes nothing)."""
    from greenlight.channels import check_channel_name
    from greenlight.release.cli._census import checked_collector
    from greenlight.release.repository._channels import checked_requires

    if requires is not None:
        checked_requires(requires)
    checked_collector(url, token, force)
    if url is None or token is None:
        return None
    from greenlight.release.fleet import fetch_census

    return fetch_census(url, token, check_channel_name(channel))[channel]


def plan_of(steps: str, soak: str, rollbacks: int, ratio: float, min_reports: int,
          sequential: float | None = None, min_failures: int = 3,
          feedback: int | None = None) -> "RolloutPlan":
    """The --rollout-plan and its options as a plan whose soak starts now.

    Raises:
        UsageError: a --soak that is not a duration, steps that are not percents, or a plan
            or halt rule out of its range.
    """
    from pydantic import ValidationError

    from greenlight.channels import (
        FeedbackRule,
        HaltRule,
        RolloutPlan,
        SequentialRule,
        describe_validation,
        now,
    )
    from greenlight.release._durations import parse_duration
    from greenlight.release._errors import UsageError

    seconds = parse_duration(soak, "--soak").total_seconds()
    try:
        percents = [int(p) for p in steps.split(",")]
    except ValueError:
        raise UsageError(f"--rollout-plan {steps!r}: expected percents such as 5,25,100"
                           ) from None
    try:
        rule = None if sequential is None else SequentialRule(false_halt=sequential,
                                                              min_failures=min_failures)
        return RolloutPlan(steps=percents, soak=seconds, started_at=now(), halt=HaltRule(
            rollbacks=rollbacks, failure_ratio=ratio, min_reports=min_reports,
            sequential=rule,
            feedback=None if feedback is None else FeedbackRule(machines=feedback)))
    except ValidationError as e:
        raise UsageError(f"--rollout-plan {steps!r}: {describe_validation(e)}") from None


def _published(cf: "ChannelFile") -> str:
    """The publish line, with the layout each archive will unpack to."""
    layout = "; ".join(
        f"{name}: {a.strip_prefix}/* -> {name}/ (top folder left out)" if a.strip_prefix
        else f"{name}: archive root -> {name}/"
        for name, a in cf.components.items())
    deltas = "; ".join(
        f"{name} from {d.from_version} {d.length:,} B ({d.method}, "
        f"{d.length / a.length:.0%} of {a.length:,} B)"
        for name, a in cf.components.items() for d in a.deltas)
    rollout = "" if cf.rollout is None else f"\nrollout: {rollout_line(cf)}"
    return (f"published {cf.channel} {cf.release} ({', '.join(cf.components)})\n"
            f"layout: {layout}\ndeltas: {deltas or 'none'}{rollout}")


@app.command()
@repo_argument
@click.option("--collector", "collector_url", default=None, metavar="URL",
              help="Also show which Greenlight versions the machines on each channel run, "
                   "as this collector counts them.")
@click.option("--admin-token-file", type=click.Path(path_type=Path), default=None,
              help="With --collector: the file holding its admin token.")
@keys_option
@json_option
def status(repo: Path, collector_url: str | None, admin_token_file: Path | None,
           keys: Path | None, as_json: bool) -> None:
    """Channels, releases, roles, thresholds and expiry dates; with --collector, the
    Greenlight versions each channel's machines run."""
    import time

    from greenlight.release.cli._census import census_text, checked_collector, with_census
    from greenlight.release.repository._status import repository_status

    run_command(lambda: checked_collector(collector_url, admin_token_file))
    report = run_command(lambda: repository_status(open_repo(repo, keys)))
    if collector_url is not None and admin_token_file is not None:
        report = run_command(lambda: with_census(report, collector_url, admin_token_file))
    from greenlight.release.cli._rehearsals import rehearsal_lines, rehearsal_status

    pairs = [(c.channel, c.release) for c in report.channels if c.updater_for is None
             and not c.channel.startswith("greenlight-")]
    if as_json:
        import json

        print(json.dumps({**report.model_dump(mode="json", by_alias=True),
                          "rehearsals": rehearsal_status(repo, pairs)}, indent=2))
        return
    w = max([10, *(len(c.channel) for c in report.channels)])
    say(f"{'channel':<{w}} {'release':<10} {'rollout':<10} {'fallback':<10} {'published':<17} "
        f"{'revoked':<10} promoted from")
    for c in report.channels:
        say(f"{c.channel:<{w}} {c.release:<10} {c.rollout:<10} {c.fallback or '-':<10} "
            f"{c.published_at:%Y-%m-%d %H:%M}Z  {', '.join(c.revoked) or '-':<10} "
            f"{c.promoted_from or '-'}")
    for c in report.channels:
        if c.updater_for is not None:
            say(f"{c.channel} carries Greenlight's updater for the machines on "
                f"{c.updater_for}: its release {c.release} is the updater's Greenlight version")
    if collector_url is not None:
        say(f"\nGreenlight on the machines (collector {collector_url}):")
        for c in report.channels:
            if c.census is not None:
                older = (f"; {c.census.older} run older than {c.requires}, which "
                         f"{c.release} requires" if c.census.older else "")
                say(f"  {c.channel}: {census_text(c.census.model_dump())}{older}")
    rehearsed = rehearsal_lines(repo, pairs)
    if rehearsed:
        say("\nRehearsals (release rehearse) of each channel's release:")
        for line in rehearsed:
            say(line)
    say()
    rw = max([16, *(len(r.role) for r in report.roles)])
    say(f"{'role':<{rw}} {'version':>7} {'threshold':>10}  expires")
    now = time.time()
    for r in report.roles:
        days = (r.expires.timestamp() - now) / 86400
        when = (f"EXPIRED {-days:.0f} days ago: clients refuse it; renew: {r.renewal}"
                if r.expired else f"in {days:.0f} days")
        say(f"{r.role:<{rw}} {r.version:>7} {f'{r.threshold} of {r.keys}':>10}  "
            f"{r.expires:%Y-%m-%d %H:%M}Z ({when})")
    if report.awaiting_signatures:
        say(f"\nawaiting signatures: {', '.join(report.awaiting_signatures)}")


@app.command("promote")
@repo_argument
@click.option("--from", "source", required=True, help="Channel to promote from.")
@click.option("--to", "target", required=True, help="Channel to promote to.")
@click.option("--version", default=None,
              help="Release to promote (default: what --from carries).")
@click.option("--allow-older", is_flag=True,
              help="Promote a version not newer than --to carries.")
@click.option("--without-rehearsal", default=None, metavar="REASON",
              help="Promote although the release's rehearsal on this "
                   "channel failed or never ran; the reason is recorded in "
                   "REPO/rehearsal-overrides.jsonl and shown by `release status`.")
@keys_option
@json_option
def promote_cmd(repo: Path, source: str, target: str, version: str | None, allow_older: bool,
                without_rehearsal: str | None, keys: Path | None, as_json: bool) -> None:
    """Point --to at the very artifacts --from carries (same hashes, nothing re-uploaded).

    Only a release whose rehearsal on --to (`release rehearse --channel TO --version V`)
    passed for these very artifacts, unless --without-rehearsal REASON."""
    from greenlight.release.repository._lifecycle import promote

    gated: list[RehearsalGate | None] = [None]

    def change(r: "FileRepository") -> "ChannelFile":
        gated[0] = rehearsal_gate(r, "promotion", without_rehearsal)
        return promote(r, source, target, version, allow_older, gate=gated[0])
    change_channel(repo, keys, as_json, change,
                   lambda cf: f"promoted {cf.release} from {source} to {target}"
                   + (" (without a passed rehearsal: recorded in "
                      f"{repo}/rehearsal-overrides.jsonl)"
                      if gated[0] is not None and gated[0].recorded else ""))


@app.command("yank")
@repo_argument
@click.option("--channel", required=True, help="Channel that carries it.")
@click.option("--version", required=True, help="Release to revoke.")
@click.option("--reason", required=True, help="Why; clients record it.")
@keys_option
@json_option
def yank_cmd(repo: Path, channel: str, version: str, reason: str, keys: Path | None,
             as_json: bool) -> None:
    """Revoke a release: the channel goes back to its previous good release."""
    from greenlight.release.repository._lifecycle import yank

    change_channel(repo, keys, as_json, lambda r: yank(r, channel, version, reason),
                    lambda cf: f"yanked {version} on {channel}; it now carries {cf.release}")


@app.command("refresh")
@repo_argument
@click.option("--check", is_flag=True,
              help="Only report; exit 1 when a role expires within --within.")
@click.option("--within", default="3d", show_default=True, help="Window for --check.")
@keys_option
def refresh_cmd(repo: Path, check: bool, within: str, keys: Path | None) -> None:
    """Re-sign timestamp and snapshot with fresh expiry (run it from a timer or cron job)."""
    from greenlight.release._durations import parse_duration
    from greenlight.release.repository._upkeep import expiring, refresh, renewal

    if check:
        found = run_command(lambda: expiring(open_repo(repo, keys),
                                             parse_duration(within, "--within")))
        from datetime import UTC, datetime

        for role, when in found.items():
            verb = "EXPIRED at" if when <= datetime.now(UTC) else "expires"
            say(f"{role} {verb} {when:%Y-%m-%d %H:%M}Z (within {within}); renew: "
                f"{renewal(role)}")
        if found:
            raise SystemExit(1)
        say(f"nothing expires within {within}")
        return
    renewed = run_command(lambda: refresh(open_repo(repo, keys)))
    say(", ".join(f"{role} valid until {until}" for role, until in renewed.items()))


@app.command("verify")
@repo_argument
@keys_option
@json_option
def verify_cmd(repo: Path, keys: Path | None, as_json: bool) -> None:
    """Verify the whole published tree offline, as a client would."""
    from greenlight.release.repository._upkeep import verify

    result = run_command(lambda: verify(open_repo(repo, keys)))
    if as_json:
        print_json(result)
        return
    say(f"ok: root v{result.root_version}, channels "
        + ", ".join(f"{c} {v}" for c, v in result.channels.items())
        + f", {result.artifacts_verified} artifact(s) verified")
