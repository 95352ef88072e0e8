"""The rollback policy, and recovery of a transaction an interrupted updater left behind.

A failed post-check (or a service that dies, or does not come up) rolls back by itself: the
previous release back in place and started, the active channel switched to the channel's
fallback, the failed release quarantined, the checks run again. If the previous release then
fails too, the transaction stops in a reported dead end; it never loops. Recovery undoes an
interrupted transaction, except one whose post-check passed: that one it commits.
"""

import time
from dataclasses import dataclass

from greenlight.channels import now, version_of
from greenlight.updater.product import Config, HealthFailure, ServiceControl, failed_required
from greenlight.updater.store import (
    HistoryEntry,
    InstallRoot,
    Journal,
    QuarantineEntry,
    add_to_quarantine,
    quarantine,
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
                fallback, f"automatic fallback: {version_of(txn.new)} on {txn.journal.channel} "
                          f"failed {names}")
        else:
            fallback = None
        add_to_quarantine(txn.root, QuarantineEntry.of(
            txn.channel_file.identity, txn.journal.channel, failure.summary, now()))
    ok = not errors
    summary = failure.summary
    if txn.old is not None and ok:
        try:
            txn.control.post_check(txn.old, txn.config.health.grace, 0.0)
        except HealthFailure as second:
            ok = False
            errors.append(f"previous release {version_of(txn.old)} is unhealthy too: "
                          f"{second.summary}")
    restored = time.monotonic()
    seconds = max(0.0, restored - failure.at - txn.control.start_seconds)
    if errors:
        summary = f"{failure.summary}; rollback failed: {'; '.join(errors)}"
    txn.journal.finish(txn.root)
    return Rollback(ok, summary, fallback, round(seconds, 4))


def _version(key: str | None) -> str | None:
    return None if key is None else version_of(key)


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
                             from_version=_version(journal.from_release),
                             to_version=version_of(journal.to_release),
                             from_release=journal.from_release, to_release=journal.to_release,
                             summary=f"interrupted {journal.kind} to "
                                     f"{version_of(journal.to_release)} committed")
    else:
        interrupted = next((s.name for s in journal.steps if s.state in ("doing", "undoing")),
                           "between steps")
        errors = undo_steps(STEPS, txn, f"interrupted at {interrupted}")
        journal.finish(root)
        held = {i.key: e.reason for i, e in quarantine(root).items()}
        if journal.from_release in held:  # the yanked release an upgrade was leaving
            errors.append(f"{version_of(journal.from_release)} is quarantined here "
                          f"({held[journal.from_release]}); the next upgrade leaves it again")
        # Whatever was running when the updater died: the current release's services run.
        try:
            control.start_all(root.installed_release())
        except HealthFailure as e:
            errors.append(str(e))
        entry = HistoryEntry(
            event="recovered", channel=journal.channel,
            from_version=version_of(journal.to_release),
            to_version=_version(journal.from_release),
            from_release=journal.to_release, to_release=journal.from_release,
            summary=f"interrupted {journal.kind} to {version_of(journal.to_release)} "
                    f"(at {interrupted}) undone; "
                    f"back on {_version(journal.from_release) or 'nothing'}"
                    + (f"; problems: {'; '.join(errors)}" if errors else ""))
    record(root, entry)
    return entry
