"""Operations that only read and verify: open the repository, check, status, and the channel
switch (which verifies the channel before it writes `active.json`). They load neither the
transaction nor the services, so that `updater check` starts fast."""

from dataclasses import dataclass

from greenlight.channels import ChannelFile, check_channel_name, now
from greenlight.updater._errors import ArchiveError, ConfigError, NotFound, UsageError
from greenlight.updater.output import (
    CheckReport,
    ComponentInfo,
    Identity,
    QuarantineEntryInfo,
    QuarantineReport,
    RolloutStatus,
    StatusReport,
)
from greenlight.updater.policy import Plan, decide, follow_plan
from greenlight.updater.product import config_of, machine_cohort
from greenlight.updater.store import (
    ActiveChannel,
    InstallRoot,
    QuarantineEntry,
    active_channel,
    feedback_refusal,
    greenlight_info,
    history,
    hold_of,
    locked,
    pin_of,
    quarantine,
    queued_feedback,
    refusal,
    save_channel_file,
    set_active_channel,
)
from greenlight.updater.trust import FetcherInterface, TrustedRepository

__all__ = ["Following", "basis", "check", "checked", "follow", "go_back_if_chosen",
           "open_repository", "plan_for", "quarantine_info", "quarantined", "read_channel",
           "status", "switch_channel"]


def open_repository(root: InstallRoot, fetcher: FetcherInterface | None = None
                    ) -> TrustedRepository:
    """The root's TUF client over its configured repository (and `[repository] timeout`).

    Raises:
        ConfigError: no configuration, no trusted root, or no repository (an air-gapped
            root: it is updated by sideloading bundles).
        TrustError: the trusted root is not valid.
    """
    config = config_of(root).repository
    if config is None:
        raise ConfigError(
            f"{root.config_path}: no [repository]: this root is air-gapped and is updated by "
            "'updater sideload BUNDLE' (or an offline installer); to update it online, add "
            "[repository] url = \"https://...\"")
    return TrustedRepository(root.metadata_dir, config.metadata, config.targets,
                             fetcher=fetcher, timeout=config.timeout, min_rate=config.min_rate)


def read_channel(
    root: InstallRoot, repo: TrustedRepository, channel: str | None = None
) -> ChannelFile:
    """A channel's file (the active one by default), verified, and kept in state/channels/.

    Raises:
        NotFound: the repository has no such channel.
        TrustError: the channel file refused.
        NetworkError: the repository unreachable or too slow.
        StoreError: state/channels/ could not be written.
    """
    channel = channel or active_channel(root).channel
    channel_file, raw = repo.channel_file(channel, root.channels_dir / f"{channel}.json")
    save_channel_file(root, channel_file, raw)
    return channel_file


def switch_channel(root: InstallRoot, repo: TrustedRepository, channel: str) -> None:
    """Make `channel` the active one, once the repository proves it carries it.

    Raises:
        UsageError: not a valid channel name; NotFound: the repository does not carry it.
    """
    try:
        check_channel_name(channel)
    except ValueError as e:
        raise UsageError(str(e)) from None
    with locked(root):
        previous = active_channel(root).channel
        read_channel(root, repo, channel)
        if channel != previous:
            set_active_channel(root, channel, f"switched from {previous} by the user")


def plan_for(root: InstallRoot, channel_file: ChannelFile,
             repo: TrustedRepository | None = None, installed_down: bool = False,
             allow_downgrade: bool = False) -> Plan:
    """What this installation should do about `channel_file`, from what is on disk (and, for
    a planned rollout, the online role's signed state from `repo`); `installed_down`: the
    installed release's services crashed; `allow_downgrade`: a person asked to move down.

    Raises:
        TrustError, NetworkError: the rollout state of a planned rollout could not be read.
        StoreError: the quarantine or the pin is damaged.
    """
    held = {identity: entry.reason for identity, entry in quarantine(root).items()}
    pin = pin_of(root)
    planned = channel_file.rollout is not None and channel_file.rollout.plan is not None
    state = repo.rollout_state(channel_file.channel) if planned and repo is not None else None
    return decide(channel_file, root.installed_identity(), held, root.installation_id,
                  pin.version if pin else None, state, now(), installed_down, allow_downgrade,
                  cohort=machine_cohort(root) if planned else None)


@dataclass(frozen=True)
class Following:
    """The channel this machine acts on now, and the plan for it."""

    active: ActiveChannel
    plan: Plan
    back_to_chosen: bool = False
    """the plan is the chosen channel's: acting on it ends a fallback"""
    note: str | None = None
    """after a fallback: where the chosen channel stands here"""
    basis: tuple[object, ...] = ()
    """what it was decided from on this machine (`basis`): still the same, it stands"""

    @property
    def channel(self) -> str:
        return self.plan.release_file.channel


def basis(root: InstallRoot, installed_down: bool = False) -> tuple[object, ...]:
    """What a decision took from this machine: the installed release, the active channel, the
    quarantine, the pin, and whether the installed release is down. A caller that decided
    (the agent's check) and acts later (its upgrade) acts on that decision while these are
    unchanged, and decides again otherwise.

    Raises:
        StoreError: the quarantine or the pin is damaged.
    """
    pin = pin_of(root)
    return (root.installed_release(), active_channel(root),
            tuple(sorted(i.key for i in quarantine(root))), pin.version if pin else None,
            installed_down)


def follow(root: InstallRoot, repo: TrustedRepository, installed_down: bool = False,
           allow_downgrade: bool = False) -> Following:
    """The active channel's plan; after a fallback, the chosen channel's instead as soon as
    `returns_to_chosen` allows it (a fallback channel the repository no longer carries is
    left for the chosen one too). Changes nothing: the caller that acts switches back.

    Raises:
        NotFound, TrustError, NetworkError, StoreError: as `read_channel` and `plan_for`.
    """
    active = active_channel(root)
    seen = basis(root, installed_down)
    plan: Plan | None = None
    try:
        plan = plan_for(root, read_channel(root, repo, active.channel), repo, installed_down,
                        allow_downgrade)
    except NotFound:
        if not active.fallen_back:
            raise
    if not active.fallen_back:
        assert plan is not None
        return Following(active, plan, basis=seen)
    chosen = active.chosen_channel
    try:
        chosen_plan = plan_for(root, read_channel(root, repo, chosen), repo, installed_down,
                               allow_downgrade)
    except (NotFound, ArchiveError):  # a source without it (a bundle of the fallback): stay
        if plan is None:
            raise
        return Following(active, plan, note=f"on {active.channel} after a fallback from "
                                            f"{chosen}; {chosen} is not in this source",
                         basis=seen)
    acted, back = follow_plan(plan, chosen_plan)
    if back:
        return Following(active, acted, back_to_chosen=True, basis=seen,
                         note=f"back to {chosen}: it carries {chosen_plan.target}, allowed here")
    where = (chosen_plan.note or chosen_plan.action).rstrip(".")
    return Following(active, acted, basis=seen,
                     note=f"on {active.channel} after a fallback from {chosen}; "
                          f"{chosen}: {where}")


def go_back_if_chosen(root: InstallRoot, following: Following) -> ActiveChannel:
    """Follow the chosen channel again when `following` says so (under the lock); return the
    active channel as it was, for a caller that must restore it.

    Raises:
        StoreError: active.json could not be written.
    """
    if following.back_to_chosen:
        set_active_channel(root, following.channel, following.note or "back to the chosen "
                                                                     "channel")
    return following.active


def _rollout_status(plan: Plan) -> RolloutStatus | None:
    r = plan.rollout
    return None if r is None else RolloutStatus(
        percent=r.percent, halted=r.halted, bucket=r.bucket, in_rollout=r.in_rollout,
        step=r.step, steps=list(r.steps), reason=r.reason)


def check(root: InstallRoot, repo: TrustedRepository,
          installed_down: bool = False) -> CheckReport:
    """Refresh, read the active channel's file, and say what an upgrade would do (the chosen
    channel's, when an upgrade would go back to it after a fallback); `installed_down`: the
    installed release's services crashed (a caller that knows says so).

    Raises:
        TrustError, NetworkError, NotFound: as `read_channel`.
        ConfigError: no configuration, or one that does not load.
    """
    return checked(root, repo, installed_down)[0]


def checked(root: InstallRoot, repo: TrustedRepository,
            installed_down: bool = False) -> tuple[CheckReport, Following]:
    """`check`'s report, and the decision it reports, for a caller that acts on it next
    (`upgrade(..., decided=)`): decided once, with one look at the clock.

    Raises:
        TrustError, NetworkError, NotFound: as `read_channel`.
        ConfigError: no configuration, or one that does not load.
    """
    following = follow(root, repo, installed_down=installed_down)
    active, plan = following.active, following.plan
    channel_file = plan.release_file
    return CheckReport(
        rollout=_rollout_status(plan),
        yanked=plan.yanked,
        root=str(root.path),
        channel=following.channel,
        channel_reason=(following.note or active.reason) if following.back_to_chosen
        else active.reason,
        chosen_channel=active.chosen if active.fallen_back else None,
        channel_note=following.note,
        note=plan.note if plan.action != "held" else None,
        installed=plan.installed,
        available=channel_file.release,
        installed_release=plan.installed_id.key if plan.installed_id else None,
        available_release=plan.target_id.key,
        update_available=plan.changes_something,
        quarantined=plan.quarantined,
        held=plan.note if plan.action == "held" else None,
        fallback=channel_file.fallback,
        published_at=channel_file.published_at,
        components={
            name: ComponentInfo(**a.model_dump()) for name, a in channel_file.components.items()
        },
    ), following


def status(root: InstallRoot) -> StatusReport:
    """What is installed, the active channel and why, the kept and quarantined releases.

    Raises:
        ConfigError: not an installation root; StoreError: damaged state.
    """
    root.require()
    active = active_channel(root)
    events = history(root)
    installed = root.installed_release()
    manifest = None if installed is None else root.manifest(installed)
    identity = None if manifest is None else Identity(
        key=manifest.identity.key, version=manifest.version, digest=manifest.identity.digest,
        components={name: a.sha256 for name, a in sorted(manifest.components.items())})
    return StatusReport(
        identity=identity,
        quarantined={i.key: e.reason for i, e in quarantine(root).items()},
        last_event=f"{events[-1].event}: {events[-1].summary}" if events else None,
        root=str(root.path),
        repository=repository.url if (repository := config_of(root).repository) else None,
        channel=active.channel,
        channel_since=active.since,
        channel_reason=active.reason,
        chosen_channel=active.chosen if active.fallen_back else None,
        installed=root.installed_version(),
        releases=root.installed_releases(),
        manifest=(manifest.manifest.target
                  if manifest is not None and manifest.manifest is not None else None),
        hold=_hold_text(root),
        pin=pin.version if (pin := pin_of(root)) else None,
        reports=refusal(root),
        feedback=_feedback_waiting(root),
        greenlight=greenlight_info(root),
    )


def _feedback_waiting(root: InstallRoot) -> str | None:
    """How much feedback waits in the queue, and why (its last refusal), or None."""
    waiting = len(queued_feedback(root))
    if not waiting:
        return None
    why = feedback_refusal(root) or "the agent, or the next command, sends it"
    return f"{waiting} queued: {why}"


def _hold_text(root: InstallRoot) -> str | None:
    hold = hold_of(root)
    if hold is None:
        return None
    until = f"until {hold.until:%Y-%m-%d %H:%M}Z" if hold.until else "until 'updater unhold'"
    return f"{until}, by {hold.by or 'someone'}" + (f": {hold.reason}" if hold.reason else "")


def quarantine_info(entries: "list[QuarantineEntry]") -> list[QuarantineEntryInfo]:
    """One quarantine entry as command output.

    Raises:
        Nothing.
    """
    return [QuarantineEntryInfo(release=e.identity.key, version=e.version, digest=e.digest,
                                channel=e.channel, reason=e.reason, at=e.at)
            for e in sorted(entries, key=lambda e: e.at)]


def quarantined(root: InstallRoot) -> QuarantineReport:
    """The releases quarantined here, oldest entry first, with their reasons.

    Raises:
        ConfigError: no configuration here.
        StoreError: quarantine.json is damaged.
    """
    return QuarantineReport(root=str(root.require().path),
                            entries=quarantine_info(list(quarantine(root).values())))
