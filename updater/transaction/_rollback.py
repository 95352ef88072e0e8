"""The rollback policy, in one place, and recovery of a transaction an interrupted updater
left behind.

Every way a release is rolled back or set aside here goes through this module, which owns
each of its effects: undo, the fallback switch, the quarantine, the incident in the history,
and the fleet report (queued by an explicit call, sent later by the caller). What those
effects are is decided by pure functions, `greenlight.updater.policy` (`_rollback.py`):
`plan_rollback` before the writes, `rollback_verdict` from what they found, and
`settles_by_commit`, the rule that a transaction whose post-check passed is committed, for
the upgrade (`operations`) and the recovery here alike.

- `roll_back`: a failed post-check (or a service that dies, or does not come up) rolls back by
  itself: the previous release back in place and started, the active channel switched to the
  channel's fallback, the failed release quarantined, the checks run again, the incident
  recorded and reported. If the previous release then fails too, the transaction stops in a
  reported dead end; it never loops.
- `quarantine_revoked` / `record_left_revoked`: a yanked installed release is quarantined
  before the machine leaves it, and the move is recorded once it went through.
- `record_manual_rollback`: `updater rollback` quarantines the release it left.
- `recover`: undoes an interrupted transaction, except one whose post-check passed: that one
  it commits. Its `recovered` entry says which step was interrupted and what it found and
  did there: killed before `stop`, the running release was never touched and is left as it
  was (nothing started, nothing of its services' past quoted).
"""

import time
from dataclasses import dataclass

from greenlight.channels import ReleaseId, now, version_of
from greenlight.updater.policy import (
    RollbackFacts,
    plan_rollback,
    rollback_verdict,
    settles_by_commit,
)
from greenlight.updater.product import Config, HealthFailure, ServiceControl, failed_required
from greenlight.updater.store import (
    HistoryEntry,
    InstallRoot,
    Journal,
    QuarantineEntry,
    active_channel,
    add_to_quarantine,
    quarantine,
    queue_event,
    record,
    set_active_channel,
)
from greenlight.updater.transaction._engine import undo_steps
from greenlight.updater.transaction._steps import STEPS, STEPS_OF, Transaction

__all__ = ["Rollback", "quarantine_revoked", "record_interrupted", "record_left_revoked",
           "record_manual_rollback",
           "recover", "roll_back"]


@dataclass
class Rollback:
    ok: bool
    """the previous release is back and healthy; False: a dead end"""
    incident: HistoryEntry
    """what was recorded: the summary, the fallback channel, the timings"""


def roll_back(txn: Transaction, failure: HealthFailure) -> Rollback:
    """Put the previous release back, healthy, record the incident, queue its report, and say
    what happened. The decisions are `policy.plan_rollback` and `policy.rollback_verdict`;
    this carries them out. Never raises for what it undoes: a failed undo is in the summary
    (and the incident is then a `rollback-failed` dead end)."""
    txn.control.start_seconds = 0.0
    # A manual rollback has no channel file: its target is a kept release, named by its own.
    kept = txn.root.manifest(txn.new) if txn.channel_file is None else None
    identity = txn.channel_file.identity if txn.channel_file is not None else (
        kept.identity if kept is not None else None)
    plan = plan_rollback(RollbackFacts(
        channel=txn.journal.channel, new=txn.new, old=txn.old,
        new_at_fault=failure.new_release_at_fault,
        fallback=txn.channel_file.fallback if txn.channel_file is not None else None,
        failed=tuple(r.name for r in failed_required(failure.results)),
        known=identity is not None))
    errors = undo_steps(STEPS, txn, failure.summary)
    if plan.switch_to is not None:
        set_active_channel(txn.root, plan.switch_to, plan.switch_reason,
                           chosen=active_channel(txn.root).chosen_channel)
    if plan.quarantine and identity is not None:
        add_to_quarantine(txn.root, QuarantineEntry.of(
            identity, txn.journal.channel, failure.summary, now()))
    unhealthy = None
    if plan.recheck_old and not errors and txn.old is not None:
        try:
            txn.control.post_check(txn.old, txn.control.config_for(txn.old).health.grace, 0.0)
        except HealthFailure as second:
            unhealthy = second.summary
    verdict = rollback_verdict(failure.summary, errors, txn.old, unhealthy)
    seconds = max(0.0, time.monotonic() - failure.at - txn.control.start_seconds)
    txn.journal.finish(txn.root)
    incident = HistoryEntry(
        event=verdict.event,
        channel=txn.journal.channel, from_version=version_of(txn.new),
        to_version=version_of(txn.old) if txn.old else None,
        from_release=txn.new, to_release=txn.old, fallback_channel=plan.switch_to,
        summary=verdict.summary,
        failed_checks=[r.recorded() for r in failure.results if not r.ok],
        stop_outcomes=[o.describe() for o in failure.stops],
        timings={**txn.timings, "rollback_seconds": round(seconds, 4)},
        preflight=failure.preflight, fault="new" if failure.new_release_at_fault else "old",
    )
    record(txn.root, incident)
    queue_event(txn.root, incident, txn.config.outbox_size)
    return Rollback(verdict.ok, incident)


def quarantine_revoked(root: InstallRoot, identity: ReleaseId, channel: str, reason: str) -> str:
    """The installed release was yanked on `channel`: quarantine it before the machine leaves
    it (treated as a failed health check); return the one-line why."""
    why = f"{identity.version} yanked on {channel}: {reason}"
    add_to_quarantine(root, QuarantineEntry.of(identity, channel, why, now()))
    return why


def record_left_revoked(txn: Transaction, identity: ReleaseId, why: str) -> HistoryEntry:
    """Record that the machine left the yanked release `identity` for the channel's."""
    assert txn.channel_file is not None
    entry = HistoryEntry(event="yanked", channel=txn.channel_file.channel,
                         from_version=identity.version, to_version=txn.channel_file.release,
                         from_release=identity.key, to_release=txn.new,
                         summary=why, timings=txn.timings)
    record(txn.root, entry)
    return entry


def record_manual_rollback(txn: Transaction, identity: ReleaseId, reason: str) -> HistoryEntry:
    """`updater rollback` went through: quarantine the release it left, and record it."""
    channel = txn.journal.channel
    add_to_quarantine(txn.root, QuarantineEntry.of(identity, channel, reason, now()))
    entry = HistoryEntry(event="manual-rollback", channel=channel,
                         from_version=identity.version, to_version=version_of(txn.new),
                         from_release=identity.key, to_release=txn.new, summary=reason,
                         timings=txn.timings)
    record(txn.root, entry)
    return entry


def record_interrupted(txn: Transaction, signal_name: str, step: str | None,
                       errors: list[str]) -> HistoryEntry:
    """A signal stopped the transaction and its steps were undone: say so in the history."""
    new, old = version_of(txn.new), _version(txn.old)
    failed = f"; the undo failed: {'; '.join(errors)}" if errors else ""
    entry = HistoryEntry(
        event="interrupted", channel=txn.journal.channel, from_version=new, to_version=old,
        from_release=txn.new, to_release=txn.old, timings=txn.timings,
        summary=f"interrupted by {signal_name} during {step or 'the start'} of {new}; undone: "
                f"{old or 'nothing'} is installed{failed}")
    record(txn.root, entry)
    return entry


def _version(key: str | None) -> str | None:
    return None if key is None else version_of(key)


def recover(root: InstallRoot, config: Config) -> HistoryEntry | None:
    """Finish or undo a transaction an interrupted updater left behind (caller holds the lock)."""
    journal = Journal.load(root)
    if journal is None:
        return None
    control = ServiceControl.of(root, config)
    txn = Transaction(root, config, control, journal)
    steps = STEPS_OF[journal.kind]
    if settles_by_commit(journal.state_of("post-check"), journal.state_of("commit")):
        next(s for s in steps if s.name == "commit").do(txn)
        journal.finish(root)
        entry = HistoryEntry(event="recovered", channel=journal.channel,
                             from_version=_version(journal.from_release),
                             to_version=version_of(journal.to_release),
                             from_release=journal.from_release, to_release=journal.to_release,
                             summary=f"interrupted {journal.kind} to "
                                     f"{version_of(journal.to_release)} committed")
    else:
        step = next((s.name for s in journal.steps if s.state in ("doing", "undoing")), None)
        last = next((s.name for s in reversed(journal.steps) if s.state == "done"), None)
        interrupted = (f"during {step}" if step else f"after {last}" if last
                       else "before its first step")
        # The running release is touched from `stop` on; before it, it was left alone.
        touched = journal.state_of("stop") != "pending"
        errors = undo_steps(steps, txn, f"interrupted {interrupted}")
        journal.finish(root)
        held = {i.key: e.reason for i, e in quarantine(root).items()}
        if journal.from_release in held:  # the yanked release an upgrade was leaving
            errors.append(f"{version_of(journal.from_release)} is quarantined here "
                          f"({held[journal.from_release]}); the next upgrade leaves it again")
        if touched:
            # What the transaction stopped: the current release's services run again (a
            # service found running is not started, nor blamed for what it did before).
            try:
                control.start_all(root.installed_release())
            except HealthFailure as e:
                errors.append(str(e))
            done = f" undone; back on {_version(journal.from_release) or 'nothing'}"
        else:
            said = ([*txn.undone, "nothing else had changed"] if txn.undone
                    else ["nothing had changed"])
            kept = (f"{version_of(journal.from_release)} left as it was"
                    if journal.from_release else "nothing installed, as before")
            done = ": " + "; ".join([*said, kept])
        entry = HistoryEntry(
            event="recovered", channel=journal.channel,
            from_version=version_of(journal.to_release),
            to_version=_version(journal.from_release),
            from_release=journal.to_release, to_release=journal.from_release,
            summary=f"interrupted {journal.kind} to {version_of(journal.to_release)} "
                    f"({interrupted}){done}"
                    + (f"; problems: {'; '.join(errors)}" if errors else ""))
    record(root, entry)
    return entry
