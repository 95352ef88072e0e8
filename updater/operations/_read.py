"""Operations that only read and verify: open the repository, check, status, and the channel
switch (which verifies the channel before it writes `active.json`). They load neither the
transaction nor the services, so that `updater check` starts fast."""

from greenlight.channels import ChannelFile, check_channel_name, now
from greenlight.updater._errors import UsageError
from greenlight.updater.output import (
    CheckReport,
    ComponentInfo,
    Identity,
    QuarantineEntryInfo,
    QuarantineReport,
    RolloutStatus,
    StatusReport,
)
from greenlight.updater.policy import Plan, decide
from greenlight.updater.product import config_of
from greenlight.updater.store import (
    InstallRoot,
    QuarantineEntry,
    active_channel,
    history,
    hold_of,
    locked,
    pin_of,
    quarantine,
    save_channel_file,
    set_active_channel,
)
from greenlight.updater.trust import FetcherInterface, TrustedRepository

__all__ = ["check", "quarantine_info", "open_repository", "plan_for", "quarantined", "read_channel",
           "status", "switch_channel"]


def open_repository(root: InstallRoot, fetcher: FetcherInterface | None = None
                    ) -> TrustedRepository:
    """The root's TUF client over its configured repository (and `[repository] timeout`).

    Raises:
        ConfigError: no configuration or no trusted root.
        TrustError: the trusted root is not valid.
    """
    config = config_of(root).repository
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
             repo: TrustedRepository | None = None) -> Plan:
    """What this installation should do about `channel_file`, from what is on disk (and, for
    a planned rollout, the online role's signed state from `repo`).

    Raises:
        TrustError, NetworkError: the rollout state of a planned rollout could not be read.
        StoreError: the quarantine or the pin is damaged.
    """
    held = {identity: entry.reason for identity, entry in quarantine(root).items()}
    pin = pin_of(root)
    planned = channel_file.rollout is not None and channel_file.rollout.plan is not None
    state = repo.rollout_state(channel_file.channel) if planned and repo is not None else None
    return decide(channel_file, root.installed_identity(), held, root.installation_id,
                  pin.version if pin else None, state, now())


def _rollout_status(plan: Plan) -> RolloutStatus | None:
    r = plan.rollout
    return None if r is None else RolloutStatus(
        percent=r.percent, halted=r.halted, bucket=r.bucket, in_rollout=r.in_rollout,
        step=r.step, steps=list(r.steps), reason=r.reason)


def check(root: InstallRoot, repo: TrustedRepository) -> CheckReport:
    """Refresh, read the active channel's file, and say what an upgrade would do.

    Raises:
        TrustError, NetworkError, NotFound: as `read_channel`.
        ConfigError: no configuration, or one that does not load.
    """
    active = active_channel(root)
    channel_file = read_channel(root, repo)
    plan = plan_for(root, channel_file, repo)
    return CheckReport(
        rollout=_rollout_status(plan),
        yanked=plan.yanked,
        root=str(root.path),
        channel=active.channel,
        channel_reason=active.reason,
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
    )


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
        repository=config_of(root).repository.url,
        channel=active.channel,
        channel_since=active.since,
        channel_reason=active.reason,
        installed=root.installed_version(),
        releases=root.installed_releases(),
        hold=_hold_text(root),
        pin=pin.version if (pin := pin_of(root)) else None,
    )


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
