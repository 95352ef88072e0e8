"""`check`, `upgrade`, `rollback`, `health`: the client's operations as plain functions.

Every operation that changes the root takes the root's lock and first finishes or undoes a
transaction an interrupted updater left behind (`recover`). An upgrade is planned (refresh,
channel file, quarantine), pre-checked on the running release, then run as the transaction of
`updater._transaction`; a failed post-check rolls back by itself.
"""

from pathlib import Path

from channels import ChannelFile, admitted, rollout_bucket
from updater._bundle import opened_bundle
from updater._downloads import Progress
from updater._errors import BusyError, ChannelMismatch, NotFound, PrecheckFailed, ServiceError
from updater._health import CheckResult, failed_required
from updater._journal import (
    HistoryEntry,
    Journal,
    QuarantineEntry,
    StepRecord,
    add_to_quarantine,
    history,
    locked,
    quarantine,
    record,
)
from updater._reports import (
    CheckReport,
    ComponentInfo,
    HealthReport,
    RolloutStatus,
    UpgradeReport,
)
from updater._root import InstallRoot, now
from updater._services import backend_for
from updater._transaction import (
    ROLLBACK_STEPS,
    STEPS,
    HealthFailure,
    Step,
    Transaction,
    all_checks,
    outside_transaction,
    recover,
    roll_back,
    run_steps,
    start_all,
    stop_all,
    undo_steps,
)
from updater._trust import TrustedRepository


def open_repository(root: InstallRoot, fetcher: object | None = None) -> TrustedRepository:
    config = root.config.repository
    return TrustedRepository(
        root.metadata_dir, config.metadata, config.targets, fetcher=fetcher  # type: ignore[arg-type]
    )


def read_channel(
    root: InstallRoot, repo: TrustedRepository, channel: str | None = None
) -> ChannelFile:
    """A channel's file (the active one by default), verified, and kept in state/channels/."""
    channel = channel or root.active_channel().channel
    channel_file, raw = repo.channel_file(channel, root.channels_dir / f"{channel}.json")
    root.save_channel_file(channel_file, raw)
    return channel_file


def switch_channel(root: InstallRoot, repo: TrustedRepository, channel: str) -> None:
    """Make `channel` the active one, once the repository proves it carries it."""
    with locked(root):
        previous = root.active_channel().channel
        read_channel(root, repo, channel)
        if channel != previous:
            root.set_active_channel(channel, f"switched from {previous} by the user")


def _rollout(root: InstallRoot, channel_file: ChannelFile) -> RolloutStatus | None:
    if channel_file.rollout is None:
        return None
    return RolloutStatus(
        percent=channel_file.rollout.percent, halted=channel_file.rollout.halted,
        bucket=rollout_bucket(root.installation_id, channel_file.channel, channel_file.release),
        in_rollout=admitted(channel_file, root.installation_id))


def check(root: InstallRoot, repo: TrustedRepository) -> CheckReport:
    active = root.active_channel()
    channel_file = read_channel(root, repo)
    installed = root.installed_version()
    held = quarantine(root).get(channel_file.release)
    rollout = _rollout(root, channel_file)
    yanked = channel_file.is_revoked(installed) if installed else None
    return CheckReport(
        rollout=rollout,
        yanked=yanked.reason if yanked else None,
        root=str(root.path),
        channel=active.channel,
        channel_reason=active.reason,
        installed=installed,
        available=channel_file.release,
        # The channel's release is the goal, even when older (after a switch to stable),
        # unless it failed here before.
        update_available=installed != channel_file.release and held is None
        and (rollout is None or rollout.in_rollout),
        quarantined=held.reason if held else None,
        fallback=channel_file.fallback,
        published_at=channel_file.published_at,
        components={
            name: ComponentInfo(**a.model_dump()) for name, a in channel_file.components.items()
        },
    )


def health(root: InstallRoot) -> HealthReport:
    config = root.config
    installed = root.installed_version()
    checker = outside_transaction(root, config).checker(installed)
    results = [checker.run(c) for c in all_checks(config)]
    return HealthReport(root=str(root.path), installed=installed, results=results,
                        healthy=not failed_required(results))


def start_services(root: InstallRoot) -> list[str]:
    """Start the installed release's services in order, each ready before the next."""
    with locked(root):
        txn = outside_transaction(root, root.config)
        try:
            start_all(txn, root.installed_version())
        except HealthFailure as failure:
            raise ServiceError(failure.summary) from None
        return [s.name for s in root.config.service]


def stop_services(root: InstallRoot) -> list[str]:
    """Stop the services in reverse order, drained as the config says."""
    with locked(root):
        txn = outside_transaction(root, root.config)
        return [o.describe() for o in stop_all(txn, root.installed_version())]


def _pre_check(txn: Transaction) -> list[CheckResult] | None:
    """The running release's checks; None when there is nothing running to check."""
    if txn.old is None or not any(txn.services.is_running(s.name) for s in txn.config.service):
        return None if txn.config.service else []
    return [txn.checker(txn.old).run(c) for c in all_checks(txn.config)]


def _journal(kind: str, channel: str, old: str | None, new: str, steps: list[Step],
             forced: bool = False) -> Journal:
    return Journal(kind=kind, channel=channel, from_version=old, to_version=new,  # type: ignore[arg-type]
                   forced=forced, started_at=now(), steps=[StepRecord(name=s.name) for s in steps])


def _incident(txn: Transaction, failure: HealthFailure, rollback_seconds: float,
              fallback: str | None, ok: bool, summary: str) -> HistoryEntry:
    entry = HistoryEntry(
        event="rolled-back" if ok else "rollback-failed",
        channel=txn.journal.channel, from_version=txn.new, to_version=txn.old,
        fallback_channel=fallback, summary=summary,
        failed_checks=[r.model_dump(mode="json") for r in failure.results if not r.ok],
        stop_outcomes=[o.describe() for o in failure.stops],
        timings={**txn.timings, "rollback_seconds": rollback_seconds},
    )
    record(txn.root, entry)
    return entry


def _run(txn: Transaction, report: UpgradeReport) -> UpgradeReport:
    """Run the transaction; roll back on a HealthFailure, undo and re-raise on an error."""
    try:
        run_steps(txn)
    except HealthFailure as failure:
        rb = roll_back(txn, failure)
        entry = _incident(txn, failure, rb.rollback_seconds, rb.fallback_channel, rb.ok, rb.summary)
        return report.model_copy(update={
            "outcome": "rolled-back" if rb.ok else "rollback-failed",
            "incident": entry, "bytes_fetched": txn.bytes_fetched, "deltas": txn.deltas,
            "installed": txn.root.installed_version(),
            "channel_now": txn.root.active_channel().channel,
        })
    except BaseException as error:
        undo_steps(txn, f"{type(error).__name__}: {error}")
        txn.journal.finish(txn.root)
        raise
    txn.journal.finish(txn.root)
    return report.model_copy(update={
        "outcome": "upgraded", "bytes_fetched": txn.bytes_fetched, "pruned": txn.pruned,
        "deltas": txn.deltas,
        "timings": txn.timings, "installed": txn.root.installed_version(),
        "channel_now": txn.root.active_channel().channel,
    })


def upgrade(root: InstallRoot, repo: TrustedRepository, progress: Progress | None = None,
            force: bool = False) -> UpgradeReport:
    """Move to the active channel's release through the health-checked transaction."""
    with locked(root):
        recover(root, root.config)
        return _upgrade_locked(root, repo, progress, force)


def sideload(root: InstallRoot, bundle_path: Path, progress: Progress | None = None,
             force: bool = False, switch_channel: bool = False) -> UpgradeReport:
    """`updater upgrade` from a bundle file: same verification, same transaction, no network."""
    with locked(root):
        recover(root, root.config)
        with opened_bundle(root, bundle_path) as bundle:
            active = root.active_channel().channel
            if bundle.channel != active:
                if not switch_channel:
                    raise ChannelMismatch(
                        f"{bundle_path.name} carries channel {bundle.channel!r} but {root.path} "
                        f"follows {active!r}; pass --switch-channel to follow {bundle.channel!r}")
                root.set_active_channel(bundle.channel, f"switched from {active} by a sideload")
            report = _upgrade_locked(root, bundle.repository, progress, force)
            return report.model_copy(update={"source": f"bundle {bundle_path.name}"})


def _upgrade_locked(root: InstallRoot, repo: TrustedRepository, progress: Progress | None,
                    force: bool) -> UpgradeReport:
    config = root.config
    channel_file = read_channel(root, repo)
    installed = root.installed_version()
    target = channel_file.release
    report = UpgradeReport(
        root=str(root.path), channel=channel_file.channel, outcome="up-to-date",
        from_version=installed, to_version=target, installed=installed,
        channel_now=channel_file.channel,
        bytes_total=sum(a.length for a in channel_file.components.values()),
    )
    yanked = channel_file.is_revoked(installed) if installed else None
    if yanked is not None:
        return _leave_yanked(root, repo, channel_file, yanked.reason, report, progress)
    if installed == target:
        return report
    held = quarantine(root).get(target)
    if held is not None:
        return report.model_copy(update={"outcome": "held", "note": (
            f"{target} is quarantined here since {held.at:%Y-%m-%d %H:%M}Z: {held.reason}")})
    rollout = _rollout(root, channel_file)
    if rollout is not None and not rollout.in_rollout:
        why = "halted" if rollout.halted else f"at {rollout.percent}%"
        return report.model_copy(update={"outcome": "held", "note": (
            f"{target} is in a staged rollout ({why}); this installation's bucket is "
            f"{rollout.bucket}, not yet included")})

    journal = _journal("upgrade", channel_file.channel, installed, target, STEPS, force)
    txn = Transaction(root, config, backend_for(root, config), journal, repo, channel_file,
                      progress)
    pre = _pre_check(txn)
    failed = failed_required(pre or [])
    if failed:
        entry = HistoryEntry(
            event="precheck-forced" if force else "precheck-blocked",
            channel=channel_file.channel, from_version=installed, to_version=target,
            summary=f"running release {installed} failed {failed[0].name}: {failed[0].summary}",
            failed_checks=[r.model_dump(mode="json") for r in failed])
        record(root, entry)
        if not force:
            raise PrecheckFailed(
                f"pre-check: the running release {installed} fails check {failed[0].name}: "
                f"{failed[0].summary}; nothing changed (fix it, or pass --force)")
    journal.save(root)
    return _run(txn, report.model_copy(update={"precheck": pre, "forced": bool(failed)}))


def _leave_yanked(root: InstallRoot, repo: TrustedRepository, channel_file: ChannelFile,
                  reason: str, report: UpgradeReport, progress: Progress | None) -> UpgradeReport:
    """The installed release was yanked: treat it as a failed health check. Quarantine it and
    move to what the channel carries now (its previous good release)."""
    installed = root.installed_version()
    assert installed is not None
    why = f"{installed} yanked on {channel_file.channel}: {reason}"
    add_to_quarantine(root, QuarantineEntry(version=installed, channel=channel_file.channel,
                                            reason=why, at=now()))
    journal = _journal("upgrade", channel_file.channel, installed, channel_file.release, STEPS)
    journal.save(root)
    txn = Transaction(root, root.config, backend_for(root, root.config), journal, repo,
                      channel_file, progress)
    result = _run(txn, report)
    if result.outcome != "upgraded":
        return result
    entry = HistoryEntry(event="yanked", channel=channel_file.channel, from_version=installed,
                         to_version=channel_file.release, summary=why, timings=txn.timings)
    record(root, entry)
    return result.model_copy(update={"outcome": "rolled-back", "incident": entry})


def previous_release(root: InstallRoot) -> str | None:
    """The release this one replaced, if it is still kept."""
    installed = root.installed_version()
    for entry in reversed(history(root)):
        if entry.event == "upgraded" and entry.to_version == installed and entry.from_version:
            if root.manifest(entry.from_version) is not None:
                return entry.from_version
    kept = [v for v in root.installed_releases() if v != installed]
    return kept[-1] if kept else None


def rollback(root: InstallRoot, reason: str = "rolled back by hand") -> UpgradeReport:
    """`updater rollback`: the automatic procedure, asked for by a person."""
    config = root.config
    with locked(root):
        recover(root, config)
        installed = root.installed_version()
        target = previous_release(root)
        if installed is None or target is None:
            raise NotFound(f"{root.path}: no previous release is kept to roll back to")
        manifest = root.manifest(installed)
        channel = manifest.channel if manifest else root.active_channel().channel
        journal = _journal("rollback", channel, installed, target, ROLLBACK_STEPS)
        journal.save(root)
        txn = Transaction(root, config, backend_for(root, config), journal)
        report = UpgradeReport(root=str(root.path), channel=channel, outcome="rolled-back",
                               from_version=installed, to_version=target, installed=installed,
                               channel_now=channel, bytes_total=0)
        result = _run(txn, report)
        if result.outcome == "upgraded":
            add_to_quarantine(root, QuarantineEntry(version=installed, channel=channel,
                                                    reason=reason, at=now()))
            record(root, HistoryEntry(event="manual-rollback", channel=channel,
                                      from_version=installed, to_version=target, summary=reason,
                                      timings=txn.timings))
            result = result.model_copy(update={"outcome": "rolled-back"})
        return result


def recover_root(root: InstallRoot) -> HistoryEntry | None:
    with locked(root):
        return recover(root, root.config)


def recover_if_interrupted(root: InstallRoot) -> HistoryEntry | None:
    """What every command runs first: recover a transaction nobody is running any more."""
    if not Journal.path(root).exists():
        return None
    try:
        return recover_root(root)
    except BusyError:
        return None  # its updater is alive and will finish it

