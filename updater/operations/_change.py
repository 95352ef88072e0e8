"""Operations that change the installation or its services: upgrade, sideload, rollback,
recovery, health checks and service control.

Every operation that changes the root takes the root's lock and first finishes or undoes a
transaction an interrupted updater left behind (`recover`). What to do is decided by the pure
`plan.decide`; an upgrade is then pre-checked on the running release and run as the
transaction of `greenlight.updater.transaction`, which rolls back by itself.
"""

import contextlib
import os
import sys
from pathlib import Path

from greenlight.channels import ChannelFile, check_channel_name, now, remove_path, version_of
from greenlight.updater._errors import (
    ArchiveError,
    ChannelMismatch,
    GreenlightError,
    NotFound,
    PrecheckFailed,
    ServiceError,
)
from greenlight.updater.operations._read import (
    plan_for,
    quarantine_info,
    quarantined,
    read_channel,
)
from greenlight.updater.output import (
    HealthReport,
    QuarantineReport,
    UpgradeReport,
)
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
    lift_quarantine,
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
    record_left_revoked,
    record_manual_rollback,
    recover,
    roll_back,
    run_steps,
    undo_steps,
)
from greenlight.updater.trust import Progress, TrustedRepository, open_bundle

__all__ = ["acting_person", "download", "health", "lift", "previous_release", "rollback",
           "sideload", "start_services", "stop_services", "upgrade", "write_systemd_units"]


def health(root: InstallRoot) -> HealthReport:
    """Every check, now, against the installed release.

    Raises:
        ConfigError: no configuration, or one that does not load.
    """
    control = ServiceControl.of(root, config_of(root))
    results = control.check_now(root.installed_release())
    healthy = bool(results) and not failed_required(results)  # nothing checked is not healthy
    return HealthReport(root=str(root.path), installed=root.installed_version(), results=results,
                        checked=len(results), healthy=healthy)


def start_services(root: InstallRoot) -> list[str]:
    """Start the installed release's services in order, each ready before the next.

    Raises:
        ServiceError: a service would not start or become ready.
        BusyError: another updater holds the root.
    """
    with locked(root):
        control = ServiceControl.of(root, config_of(root))
        try:
            control.start_all(root.installed_release())
        except HealthFailure as failure:
            raise ServiceError(failure.summary) from None
        return [s.name for s in config_of(root).service]


def stop_services(root: InstallRoot) -> list[str]:
    """Stop the services in reverse order, drained as the config says.

    Raises:
        ConfigError: no configuration, or one that does not load.
        BusyError: another updater holds the root.
    """
    with locked(root):
        control = ServiceControl.of(root, config_of(root))
        return [o.describe() for o in control.stop_all(root.installed_release())]


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
    """Run the transaction; roll back on a HealthFailure, undo and re-raise on an error."""
    _say_under_way(txn.root)
    try:
        run_steps(STEPS, txn)
    except HealthFailure as failure:
        rb = roll_back(txn, failure)
        return report.model_copy(update={
            "outcome": "rolled-back" if rb.ok else "rollback-failed",
            "quarantined": version_of(txn.new) if failure.new_release_at_fault else None,
            "incident": rb.incident, "bytes_fetched": txn.bytes_fetched, "deltas": txn.deltas,
            "installed": txn.root.installed_version(),
            "channel_now": active_channel(txn.root).channel,
        })
    except BaseException as error:
        undo_steps(STEPS, txn, f"{type(error).__name__}: {error}")
        txn.journal.finish(txn.root)
        raise
    if txn.journal.kind == "upgrade":  # what came before: the history knows it
        old = version_of(txn.old) if txn.old else None
        upgraded = HistoryEntry(
            event="upgraded", channel=txn.journal.channel, from_version=old,
            to_version=version_of(txn.new), from_release=txn.old, to_release=txn.new,
            summary=f"upgraded {old or 'nothing'} -> {version_of(txn.new)}",
            timings=dict(txn.timings))
        record(txn.root, upgraded)
        queue_event(txn.root, upgraded, txn.config.outbox_size)
    txn.journal.finish(txn.root)
    return report.model_copy(update={
        "outcome": "upgraded", "bytes_fetched": txn.bytes_fetched, "pruned": txn.pruned,
        "deltas": txn.deltas,
        "timings": txn.timings, "installed": txn.root.installed_version(),
        "channel_now": active_channel(txn.root).channel,
    })


def upgrade(root: InstallRoot, repo: TrustedRepository, progress: Progress | None = None,
            force: bool = False) -> UpgradeReport:
    """Move to the active channel's release through the health-checked transaction.

    Raises:
        BusyError, ConfigError, TrustError, NetworkError, NotFound, StoreError, ArchiveError,
        PrecheckFailed: see `greenlight.updater` for each; nothing changed, or what changed
        was undone.
    """
    with locked(root):
        recover(root, config_of(root))
        return _upgrade_locked(root, repo, progress, force)


def sideload(root: InstallRoot, bundle_path: Path, progress: Progress | None = None,
             force: bool = False, switch_channel: bool = False) -> UpgradeReport:
    """`updater upgrade` from a bundle file: same verification, same transaction, no network.

    Raises:
        ArchiveError: not a readable Greenlight bundle; ChannelMismatch: another channel;
        and whatever `upgrade` raises.
    """
    with locked(root):
        recover(root, config_of(root))
        remove_path(root.state / "sideload")  # where earlier versions unpacked bundles
        if not bundle_path.is_file():
            raise ArchiveError(f"{bundle_path}: no such bundle file")
        bundle_path = bundle_path.resolve()
        bundle = open_bundle(bundle_path, index_tar(bundle_path), root.metadata_dir,
                             bundle_path.name)
        before = active_channel(root)
        if bundle.channel == before.channel:
            report = _upgrade_locked(root, bundle.repository, progress, force)
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
            report = _upgrade_locked(root, bundle.repository, progress, force)
        except BaseException:
            restore_active_channel(root, before)
            raise
        return report.model_copy(update={"source": f"bundle {bundle_path.name}"})


def download(root: InstallRoot, repo: TrustedRepository,
             progress: Progress | None = None) -> UpgradeReport:
    """Fetch and verify the channel's release into `downloads/` without installing it (the
    agent's `apply = "download"`, and its downloads outside the install windows). The next
    upgrade finds the artifacts there and fetches nothing.

    Raises:
        the same as `upgrade`, before anything is installed.
    """
    with locked(root):
        recover(root, config_of(root))
        channel_file = read_channel(root, repo)
        plan = plan_for(root, channel_file, repo)
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
                    force: bool) -> UpgradeReport:
    config = config_of(root)
    channel_file = read_channel(root, repo)
    plan = plan_for(root, channel_file, repo)
    installed, target = plan.installed, plan.target
    report = UpgradeReport(
        root=str(root.path), channel=channel_file.channel, outcome="up-to-date",
        from_version=installed, to_version=target, installed=installed,
        channel_now=channel_file.channel,
        bytes_total=sum(a.length for a in channel_file.components.values()),
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
    control = ServiceControl.of(root, config)
    txn = Transaction(root, config, control, journal, repo, channel_file, progress)
    pre = _pre_check(control, installed_key)
    failed = failed_required(pre or [])
    if failed:
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
    journal.save(root)
    return _run(txn, report.model_copy(update={"precheck": pre, "forced": bool(failed)}))


def _pre_check(control: ServiceControl, installed: str | None) -> list[CheckResult] | None:
    """The running release's checks; None when there is nothing running to check. A product
    with no services (files and checks only) is checked whenever a release is installed."""
    if installed is None or (control.config.service and not control.any_running()):
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
    journal.save(root)
    config = config_of(root)
    txn = Transaction(root, config, ServiceControl.of(root, config), journal, repo,
                      channel_file, progress)
    result = _run(txn, report)
    if result.outcome != "upgraded":
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
        if (entry.event == "upgraded" and entry.to_release == installed
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
        journal.save(root)
        txn = Transaction(root, config, ServiceControl.of(root, config), journal)
        report = UpgradeReport(root=str(root.path), channel=channel, outcome="rolled-back",
                               from_version=identity.version, to_version=version_of(target),
                               installed=identity.version, channel_now=channel, bytes_total=0)
        result = _run(txn, report)
        if result.outcome == "upgraded":
            record_manual_rollback(txn, identity, reason)
            result = result.model_copy(update={"outcome": "rolled-back"})
        return result


def acting_person() -> str:
    """The person acting: the login behind sudo when there is one.

    Raises:
        Nothing: an unprintable login is shown as its repr.
    """
    import getpass

    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return user if user.isprintable() else repr(user)


def lift(root: InstallRoot, release: str) -> QuarantineReport:
    """`updater quarantine clear RELEASE`: lift the quarantine of a version (all its
    releases) or of one release key; the history records who lifted it and when. A lifted
    release may be installed again by the next upgrade.

    Raises:
        NotFound: nothing quarantined here is named `release`.
    """
    with locked(root):
        lifted = lift_quarantine(root, release)
        if not lifted:
            raise NotFound(f"{release!r} is not quarantined here (see 'updater quarantine')")
        by = acting_person()
        for entry in lifted:
            record(root, HistoryEntry(
                event="quarantine-lifted", channel=entry.channel, from_version=entry.version,
                from_release=entry.identity.key, by=by,
                summary=f"quarantine of {entry.identity.key} lifted by {by} "
                        f"(was: {entry.reason})"))
        report = quarantined(root)
        return report.model_copy(update={"lifted": quarantine_info(lifted)})


def write_systemd_units(root: InstallRoot, out_dir: Path) -> list[Path]:
    """A unit file for each configured service, in start order, into `out_dir`.

    Raises:
        ConfigError: no configuration, or one that does not load.
        OSError: `out_dir` could not be written.
    """
    from greenlight.updater.product import SystemdBackend, render_unit, values_for

    config = config_of(root)
    values = values_for(root, None)
    written, previous = [], ""
    out_dir.mkdir(parents=True, exist_ok=True)
    for service in config.service:
        unit = SystemdBackend.unit(service)
        path = out_dir / unit
        path.write_text(render_unit(service, values, after=previous, timeout=config.stop.timeout))
        written.append(path)
        previous = unit
    agent = out_dir / AGENT_UNIT
    agent.write_text(_agent_unit(root, [SystemdBackend.unit(s) for s in config.service],
                                config.backend == "process"))
    return [*written, agent]


AGENT_UNIT = "greenlight-agent.service"


def _agent_unit(root: InstallRoot, product_units: list[str], owns_services: bool) -> str:
    """The agent's own unit: restarted on failure, started after the product's units (it
    may stop and start them, so it must not race their start at boot), and stopped by
    SIGTERM like any service (a transaction it is in is finished or undone at its next start).
    With the process backend the services it starts live in its cgroup: KillMode=process
    keeps them running when the agent is stopped or restarted."""
    import shlex

    from greenlight.updater.product import frozen

    program = [sys.executable] if frozen() else [sys.executable, "-m", "greenlight.updater.cli"]
    command = " ".join(shlex.quote(p) for p in [*program, "agent", "--root", str(root.path)])
    after = " ".join(["network-online.target", *product_units])
    return (f"[Unit]\nDescription=Greenlight agent for {root.path}\n"
            f"Wants=network-online.target\nAfter={after}\n\n"
            f"[Service]\nType=simple\nExecStart={command}\nRestart=on-failure\n"
            f"RestartSec=30\nKillSignal=SIGTERM\nTimeoutStopSec=120\n"
            + ("KillMode=process\n" if owns_services else "")
            + "\n[Install]\nWantedBy=multi-user.target\n")
