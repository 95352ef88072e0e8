"""Operations that change the installed release: upgrade, sideload, download, rollback.

Every operation that changes the root takes the root's lock and first finishes or undoes a
transaction an interrupted updater left behind (`recover`). What to do is decided by the pure
`plan.decide`; an upgrade is then pre-checked on the running release and run as the
transaction of `greenlight.updater.transaction`, which rolls back by itself.
"""

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from greenlight.channels import (
    ChannelFile,
    check_channel_name,
    is_newer,
    now,
    remove_path,
    version_of,
)
from greenlight.updater._errors import (
    ArchiveError,
    ChannelMismatch,
    GreenlightError,
    Interrupted,
    NotFound,
    PrecheckFailed,
    shielded,
    signalled,
)
from greenlight.updater.operations._read import (
    Following,
    basis,
    follow,
    go_back_if_chosen,
    read_channel,
)
from greenlight.updater.output import (
    UpgradeReport,
)
from greenlight.updater.policy import Plan, settles_by_commit
from greenlight.updater.product import (
    CheckResult,
    HealthFailure,
    ServiceControl,
    config_of,
    failed_required,
)
from greenlight.updater.store import (
    HistoryEntry,
    InstallRoot,
    Journal,
    StepRecord,
    active_channel,
    history,
    index_tar,
    locked,
    quarantine,
    queue_event,
    queue_held,
    record,
    refresh_status,
    restore_active_channel,
    set_active_channel,
)
from greenlight.updater.transaction import (
    ROLLBACK_STEPS,
    STEPS,
    Step,
    Transaction,
    do_fetch,
    quarantine_revoked,
    record_interrupted,
    record_left_revoked,
    record_manual_rollback,
    recover,
    roll_back,
    run_steps,
    undo_steps,
)
from greenlight.updater.trust import Progress, TrustedRepository, open_bundle

__all__ = ["download", "previous_release", "rollback", "sideload", "upgrade"]


# --- the transaction -----------------------------------------------------------------------
def _journal(kind: str, channel: str, old: str | None, new: str,
             steps: list[Step[Transaction]], forced: bool = False) -> Journal:
    return Journal.model_validate({
        "kind": kind, "channel": channel, "from_release": old, "to_release": new,
        "forced": forced, "started_at": now(),
        "steps": [StepRecord(name=s.name) for s in steps]})


def _say_under_way(root: InstallRoot) -> None:
    """status.json names the transaction while it runs (a UI shows "updating")."""
    with contextlib.suppress(GreenlightError, OSError):
        refresh_status(root)


def _run(txn: Transaction, report: UpgradeReport) -> UpgradeReport:
    """Run the transaction; roll back on a HealthFailure, undo and re-raise on an error. The
    journal is first written here, inside the handler, and the success's records are shielded:
    a signal at any moment leaves either no journal or one whose steps are undone or finished.
    A signal (or an error) once the post-check passed finishes the commit and records the
    upgrade as any other, then ends the command."""
    try:
        txn.journal.save(txn.root)
        _say_under_way(txn.root)
        run_steps(STEPS, txn)
    except BaseException as caught:
        error = signalled(caught)
        if isinstance(error, HealthFailure):
            with shielded():
                rb = roll_back(txn, error)
            return report.model_copy(update={
                "outcome": "rolled-back" if rb.ok else "rollback-failed",
                "quarantined": version_of(txn.new) if error.new_release_at_fault else None,
                "incident": rb.incident, "bytes_fetched": txn.bytes_fetched,
                "deltas": txn.deltas, "installed": txn.root.installed_version(),
                "channel_now": active_channel(txn.root).channel,
            })
        with shielded():
            if settles_by_commit(txn.journal.state_of("post-check"),
                                 txn.journal.state_of("commit")):
                # it passed: the commit is finished, as always, and it is an upgrade
                next(s for s in STEPS if s.name == "commit").do(txn)
                _finished(txn, report)
            else:
                step = next((s.name for s in txn.journal.steps if s.state == "doing"), None)
                errors = undo_steps(STEPS, txn, f"{type(error).__name__}: {error}")
                txn.journal.finish(txn.root)
                if isinstance(error, Interrupted):
                    record_interrupted(txn, error.name, step, errors)
        if error is caught:
            raise
        raise error from None
    with shielded():
        return _finished(txn, report)


def _finished(txn: Transaction, report: UpgradeReport) -> UpgradeReport:
    """The transaction is committed: its history entry (an upgrade's), the journal gone."""
    old = version_of(txn.old) if txn.old else None
    moved: Literal["upgraded", "downgraded"] = (
        "downgraded" if old is not None and is_newer(old, version_of(txn.new)) else "upgraded")
    if txn.journal.kind == "upgrade":  # what came before: the history knows it
        repair = f" (the repair of {report.repair})" if report.repair else ""
        entry = HistoryEntry(
            event=moved, channel=txn.journal.channel, from_version=old,
            to_version=version_of(txn.new), from_release=txn.old, to_release=txn.new,
            summary=f"{moved} {old or 'nothing'} -> {version_of(txn.new)}{repair}",
            timings=dict(txn.timings))
        record(txn.root, entry)
        queue_event(txn.root, entry, txn.config.outbox_size)
    txn.journal.finish(txn.root)
    return report.model_copy(update={
        "outcome": moved, "note": _takes_over(txn) or report.note,
        "bytes_fetched": txn.bytes_fetched, "pruned": txn.pruned, "deltas": txn.deltas,
        "timings": txn.timings, "installed": txn.root.installed_version(),
        "channel_now": active_channel(txn.root).channel,
    })


def _takes_over(txn: Transaction) -> str | None:
    """Said once, on the move to the first release that brings its own product manifest."""
    if txn.old is None or txn.control.layer(txn.old).from_release:
        return None
    if not txn.control.layer(txn.new).from_release:
        return None
    return (f"{version_of(txn.new)} brings its own product manifest: it now says how the product "
            "runs and is checked; greenlight.toml keeps this machine's layer (docs/manifest.md)")


def upgrade(root: InstallRoot, repo: TrustedRepository, progress: Progress | None = None,
            force: bool = False, allow_downgrade: bool = False,
            decided: Following | None = None) -> UpgradeReport:
    """Move to the active channel's release through the health-checked transaction (or back
    to the chosen channel's, after a fallback, once it is allowed here). An older release
    is installed only when the installed one is revoked, quarantined or down, or with
    `allow_downgrade` (a person's explicit word). `decided`: the decision a check just made
    (`checked`), acted on while what it was made from is unchanged (`basis`).

    Raises:
        BusyError, ConfigError, TrustError, NetworkError, NotFound, StoreError, ArchiveError,
        PrecheckFailed: see `greenlight.updater` for each; nothing changed, or what changed
        was undone.
    """
    with locked(root):
        recover(root, config_of(root))
        return _upgrade_locked(root, repo, progress, force, allow_downgrade, decided)


def sideload(root: InstallRoot, bundle_path: Path, progress: Progress | None = None,
             force: bool = False, switch_channel: bool = False,
             allow_downgrade: bool = False,
             then: Callable[[UpgradeReport], None] | None = None) -> UpgradeReport:
    """`updater upgrade` from a bundle file: same verification, same transaction, no network.
    `then` runs on the report under the same lock (the offline installer leaves itself as
    the root's updater there).

    Raises:
        ArchiveError: not a readable Greenlight bundle; ChannelMismatch: another channel;
        and whatever `upgrade` raises.
    """
    with locked(root):
        report = _sideload_locked(root, bundle_path, progress, force, switch_channel,
                                  allow_downgrade)
        if then is not None:
            then(report)
        return report


def _sideload_locked(root: InstallRoot, bundle_path: Path, progress: Progress | None,
                     force: bool, switch_channel: bool, allow_downgrade: bool
                     ) -> UpgradeReport:
    recover(root, config_of(root))
    remove_path(root.state / "sideload")  # where earlier versions unpacked bundles
    if not bundle_path.is_file():
        raise ArchiveError(f"{bundle_path}: no such bundle file")
    bundle_path = bundle_path.resolve()
    bundle = open_bundle(bundle_path, index_tar(bundle_path), root.metadata_dir,
                         bundle_path.name)
    before = active_channel(root)
    if bundle.channel == before.channel:
        report = _upgrade_locked(root, bundle.repository, progress, force, allow_downgrade)
        return report.model_copy(update={"source": f"bundle {bundle_path.name}"})
    try:
        check_channel_name(bundle.channel)
    except ValueError:
        raise ArchiveError(f"{bundle_path.name}: bundle.json names channel "
                           f"{bundle.channel!r}, not a valid channel name") from None
    if not switch_channel:
        raise ChannelMismatch(
            f"{bundle_path.name} carries channel {bundle.channel!r} but {root.path} "
            f"follows {before.channel!r}; pass --switch-channel to follow "
            f"{bundle.channel!r}")
    # The label in bundle.json is unsigned: the switch happens only once the channel
    # file has verified through TUF, and is undone if the upgrade does not go through.
    read_channel(root, bundle.repository, bundle.channel)
    set_active_channel(root, bundle.channel,
                            f"switched from {before.channel} by a sideload")
    try:
        report = _upgrade_locked(root, bundle.repository, progress, force, allow_downgrade)
    except BaseException:
        restore_active_channel(root, before)
        raise
    return report.model_copy(update={"source": f"bundle {bundle_path.name}"})


def download(root: InstallRoot, repo: TrustedRepository,
             progress: Progress | None = None,
             decided: Following | None = None) -> UpgradeReport:
    """Fetch and verify the channel's release into `downloads/` without installing it (the
    agent's `apply = "download"`, and its downloads outside the install windows). The next
    upgrade finds the artifacts there and fetches nothing. `decided`: as `upgrade`'s.

    Raises:
        the same as `upgrade`, before anything is installed.
    """
    with locked(root):
        recover(root, config_of(root))
        plan = (decided.plan if decided is not None and decided.basis == basis(
            root, bool(decided.basis[-1])) else follow(root, repo).plan)
        channel_file = plan.release_file
        report = UpgradeReport(
            root=str(root.path), channel=channel_file.channel, outcome="up-to-date",
            from_version=plan.installed, to_version=plan.target, installed=plan.installed,
            channel_now=channel_file.channel,
            bytes_total=sum(a.length for a in channel_file.components.values()))
        if plan.action == "held":
            return report.model_copy(update={"outcome": "held", "note": plan.note})
        if not plan.changes_something:
            return report
        journal = _journal("upgrade", channel_file.channel, root.installed_release(),
                           plan.target_id.key, STEPS)  # not saved: nothing to undo
        config = config_of(root)
        txn = Transaction(root, config, ServiceControl.of(root, config), journal, repo,
                          channel_file, progress)
        do_fetch(txn)
        return report.model_copy(update={"bytes_fetched": txn.bytes_fetched,
                                         "deltas": txn.deltas, "note": "downloaded"})


def _upgrade_locked(root: InstallRoot, repo: TrustedRepository, progress: Progress | None,
                    force: bool, allow_downgrade: bool = False,
                    decided: Following | None = None) -> UpgradeReport:
    config = config_of(root)
    control = ServiceControl.of(root, config)
    crashed = control.crashed() if root.installed_release() is not None else []
    if (decided is not None and not allow_downgrade
            and decided.basis == basis(root, bool(crashed))):
        following = decided
    else:
        following = follow(root, repo, bool(crashed), allow_downgrade)
    before = go_back_if_chosen(root, following)
    try:
        return _act(root, repo, following.plan, control, progress, force, crashed)
    except BaseException:
        if following.back_to_chosen:  # nothing was installed: still on the fallback
            restore_active_channel(root, before)
        raise


def _act(root: InstallRoot, repo: TrustedRepository, plan: Plan, control: ServiceControl,
         progress: Progress | None, force: bool, crashed: list[str]) -> UpgradeReport:
    config, channel_file = control.config, plan.release_file
    installed, target = plan.installed, plan.target
    report = UpgradeReport(
        root=str(root.path), channel=channel_file.channel, outcome="up-to-date",
        from_version=installed, to_version=target, installed=installed,
        channel_now=channel_file.channel,
        bytes_total=sum(a.length for a in channel_file.components.values()),
        note=plan.note if plan.action != "held" else None,
    )
    if plan.action == "leave-yanked":
        assert plan.yanked is not None
        return _leave_yanked(root, repo, channel_file, plan.yanked, report, progress)
    if plan.action == "up-to-date":
        return report
    if plan.action == "held":
        assert plan.note is not None
        queue_held(root, channel_file.channel, plan.target_id.key, root.installed_release(),
                   plan.note, config.outbox_size)
        return report.model_copy(update={"outcome": "held", "note": plan.note})

    installed_key = root.installed_release()
    journal = _journal("upgrade", channel_file.channel, installed_key, plan.target_id.key, STEPS,
                       force)
    txn = Transaction(root, config, control, journal, repo, channel_file, progress)
    pre = _pre_check(control, installed_key)
    failed = failed_required(pre or [])
    repair = None
    if crashed:
        # A dead release never blocks its fix: the pre-check's failures are the evidence of
        # what this transaction repairs, and a failed repair is rolled back like any upgrade.
        names = ", ".join(crashed)
        seen = f"; {failed[0].name}: {failed[0].summary}" if failed else ""
        repair = (f"{installed}, which was down (service{'s' if len(crashed) > 1 else ''} "
                  f"{names} had died{seen})")
    elif failed:
        entry = HistoryEntry(
            event="precheck-forced" if force else "precheck-blocked",
            channel=channel_file.channel, from_version=installed, to_version=target,
            summary=f"running release {installed} failed {failed[0].name}: {failed[0].summary}",
            failed_checks=[r.recorded() for r in failed])
        record(root, entry)
        queue_event(root, entry, config.outbox_size)
        if not force:
            raise PrecheckFailed(
                f"pre-check: the running release {installed} fails check {failed[0].name}: "
                f"{failed[0].summary}; nothing changed (fix it, or pass --force)")
    return _run(txn, report.model_copy(update={"precheck": pre, "forced": bool(failed) and
                                               repair is None, "repair": repair}))


def _pre_check(control: ServiceControl, installed: str | None) -> list[CheckResult] | None:
    """The running release's checks; None when there is nothing running to check. A product
    with no services (files and checks only) is checked whenever a release is installed."""
    if installed is None or (control.config_for(installed).service and
                             not control.any_running()):
        return None
    return control.check_now(installed)


def _leave_yanked(root: InstallRoot, repo: TrustedRepository, channel_file: ChannelFile,
                  reason: str, report: UpgradeReport, progress: Progress | None) -> UpgradeReport:
    """The installed release was yanked: treat it as a failed health check. Quarantine it and
    move to what the channel carries now (its previous good release)."""
    installed, identity = root.installed_release(), root.installed_identity()
    assert installed is not None and identity is not None
    why = quarantine_revoked(root, identity, channel_file.channel, reason)
    journal = _journal("upgrade", channel_file.channel, installed, channel_file.identity.key,
                       STEPS)
    config = config_of(root)
    txn = Transaction(root, config, ServiceControl.of(root, config), journal, repo,
                      channel_file, progress)
    result = _run(txn, report)
    if result.outcome not in ("upgraded", "downgraded"):
        return result
    entry = record_left_revoked(txn, identity, why)
    return result.model_copy(update={"outcome": "rolled-back", "incident": entry})


def previous_release(root: InstallRoot) -> str | None:
    """The key of the release this one replaced, if it is still kept and not quarantined
    here (a yanked or failed release is never chosen); None when no kept release is eligible.

    Raises:
        StoreError: the history or the quarantine is damaged.
    """
    installed = root.installed_release()
    held = {identity.key for identity in quarantine(root)}
    eligible = [k for k in root.installed_releases() if k != installed and k not in held]
    for entry in reversed(history(root)):
        if (entry.event in ("upgraded", "downgraded") and entry.to_release == installed
                and entry.from_release in eligible):
            return entry.from_release
    return eligible[-1] if eligible else None


def rollback(root: InstallRoot, reason: str = "rolled back by hand") -> UpgradeReport:
    """`updater rollback`: the automatic procedure, asked for by a person.

    Raises:
        NotFound: no previous release is kept.
    """
    config = config_of(root)
    with locked(root):
        recover(root, config)
        installed, identity = root.installed_release(), root.installed_identity()
        target = previous_release(root)
        if installed is None or identity is None or target is None:
            raise NotFound(f"{root.path}: no previous release to roll back to (none is kept "
                           "that is not quarantined here; see 'updater status')")
        manifest = root.manifest(installed)
        channel = manifest.channel if manifest else active_channel(root).channel
        journal = _journal("rollback", channel, installed, target, ROLLBACK_STEPS)
        txn = Transaction(root, config, ServiceControl.of(root, config), journal)
        report = UpgradeReport(root=str(root.path), channel=channel, outcome="rolled-back",
                               from_version=identity.version, to_version=version_of(target),
                               installed=identity.version, channel_now=channel, bytes_total=0)
        result = _run(txn, report)
        if result.outcome in ("upgraded", "downgraded"):
            record_manual_rollback(txn, identity, reason)
            result = result.model_copy(update={"outcome": "rolled-back"})
        return result
