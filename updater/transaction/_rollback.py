"""The rollback policy, and recovery of a transaction an interrupted updater left behind.

A failed post-check (or a service that dies, or does not come up) rolls back by itself: the
previous release back in place and started, the active channel switched to the channel's
fallback, the failed release quarantined, the checks run again. If the previous release then
fails too, the transaction stops in a reported dead end; it never loops. Recovery undoes an
interrupted transaction, except one whose post-check passed: that one it commits.
"""

import time
from dataclasses import dataclass

from greenlight.channels import now
from greenlight.updater.product import Config, HealthFailure, ServiceControl, failed_required
from greenlight.updater.store import (
    HistoryEntry,
    InstallRoot,
    Journal,
    QuarantineEntry,
    add_to_quarantine,
    record,
)
from greenlight.updater.transaction._engine import undo_steps
from greenlight.updater.transaction._steps import STEPS, Transaction, do_commit

__all__ = ["Rollback", "recover", "roll_back"]


@dataclass
class Rollback:
    ok: bool
    summary: str
    fallback_channel: str | None
    rollback_seconds: float


def roll_back(txn: Transaction, failure: HealthFailure) -> Rollback:
    """Put the previous release back, healthy, and say what happened."""
    assert txn.channel_file is not None
    txn.control.start_seconds = 0.0
    errors = undo_steps(STEPS, txn, failure.summary)
    fallback = None
    if failure.new_release_at_fault:
        fallback = txn.channel_file.fallback
        if fallback is not None and fallback != txn.journal.channel:
            names = ", ".join(r.name for r in failed_required(failure.results)) or "start-up"
            txn.root.set_active_channel(
                fallback, f"automatic fallback: {txn.new} on {txn.journal.channel} failed {names}")
        else:
            fallback = None
        add_to_quarantine(txn.root, QuarantineEntry(
            version=txn.new, channel=txn.journal.channel, reason=failure.summary, at=now()))
    ok = not errors
    summary = failure.summary
    if txn.old is not None and ok:
        try:
            txn.control.post_check(txn.old, txn.config.health.grace, 0.0)
        except HealthFailure as second:
            ok = False
            errors.append(f"previous release {txn.old} is unhealthy too: {second.summary}")
    restored = time.monotonic()
    seconds = max(0.0, restored - failure.at - txn.control.start_seconds)
    if errors:
        summary = f"{failure.summary}; rollback failed: {'; '.join(errors)}"
    txn.journal.finish(txn.root)
    return Rollback(ok, summary, fallback, round(seconds, 4))


def recover(root: InstallRoot, config: Config) -> HistoryEntry | None:
    """Finish or undo a transaction an interrupted updater left behind (caller holds the lock)."""
    journal = Journal.load(root)
    if journal is None:
        return None
    control = ServiceControl.of(root, config)
    txn = Transaction(root, config, control, journal)
    if journal.state_of("post-check") == "done" and journal.state_of("commit") != "undone":
        do_commit(txn)
        journal.finish(root)
        entry = HistoryEntry(event="recovered", channel=journal.channel,
                             from_version=journal.from_version, to_version=journal.to_version,
                             summary=f"interrupted upgrade to {journal.to_version} committed")
    else:
        interrupted = next((s.name for s in journal.steps if s.state in ("doing", "undoing")),
                           "between steps")
        errors = undo_steps(STEPS, txn, f"interrupted at {interrupted}")
        journal.finish(root)
        # Whatever was running when the updater died: the current release's services run.
        try:
            control.start_all(root.installed_version())
        except HealthFailure as e:
            errors.append(str(e))
        entry = HistoryEntry(
            event="recovered", channel=journal.channel, from_version=journal.to_version,
            to_version=journal.from_version,
            summary=f"interrupted upgrade to {journal.to_version} (at {interrupted}) undone; "
                    f"back on {journal.from_version or 'nothing'}"
                    + (f"; problems: {'; '.join(errors)}" if errors else ""))
    record(root, entry)
    return entry
