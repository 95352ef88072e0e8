"""The rollback decision, as pure functions: what a failed transaction does, from the facts
(no I/O, no clock). `transaction/_rollback.py` gathers the facts and carries the plan out.

A rollback runs in two halves, because its second decision rests on what the first half's
writes found:

1. `plan_rollback(facts)`: whether the active channel switches to the channel's fallback,
   whether the failed release is quarantined, and whether the previous release is checked
   again once it is back;
2. `rollback_verdict(...)`: from what undoing found and what the re-check said, whether the
   machine is back on a healthy release (`rolled-back`) or at a dead end (`rollback-failed`),
   and the incident's summary. A dead end is final: nothing here ever loops.

And one rule both the upgrade and the recovery of an interrupted one follow:
`settles_by_commit`: a transaction whose post-check passed is finished by committing it,
never undone.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from greenlight.channels import version_of

__all__ = ["RollbackFacts", "RollbackPlan", "RollbackVerdict", "plan_rollback",
           "rollback_verdict", "settles_by_commit"]


@dataclass(frozen=True)
class RollbackFacts:
    channel: str
    """the channel the transaction ran on"""
    new: str
    """the release key that was tried (a manual rollback: the release it went for)"""
    old: str | None
    """the release key the machine goes back to; None: nothing was installed before"""
    new_at_fault: bool
    """the release tried failed; False: the release being left crashed when it was stopped"""
    fallback: str | None
    """the channel file's fallback channel; None: it names none, or there is no channel file
    (a manual rollback goes to a kept release)"""
    failed: tuple[str, ...]
    """the required checks that failed (empty: the release did not start)"""
    known: bool
    """the failed release's identity is known, so it can be quarantined"""


@dataclass(frozen=True)
class RollbackPlan:
    switch_to: str | None
    """the channel to make active (the fallback), or None to stay"""
    switch_reason: str
    quarantine: bool
    """quarantine the release tried, on the transaction's channel"""
    recheck_old: bool
    """run the previous release's post-check once it is back (when undoing went well)"""


@dataclass(frozen=True)
class RollbackVerdict:
    ok: bool
    event: Literal["rolled-back", "rollback-failed"]
    summary: str


def plan_rollback(facts: RollbackFacts) -> RollbackPlan:
    """What a failed transaction changes besides undoing its steps. Only a release at fault
    moves the machine: the fallback switch (to a channel other than its own) and the
    quarantine. When the release being left crashed on stop, the release tried is not blamed
    and the channel stays."""
    switch_to = None
    if facts.new_at_fault and facts.fallback is not None and facts.fallback != facts.channel:
        switch_to = facts.fallback
    names = ", ".join(facts.failed) or "start-up"
    reason = (f"automatic fallback: {version_of(facts.new)} on {facts.channel} failed {names}"
              if switch_to is not None else "")
    return RollbackPlan(switch_to=switch_to, switch_reason=reason,
                        quarantine=facts.new_at_fault and facts.known,
                        recheck_old=facts.old is not None)


def rollback_verdict(failure: str, undo_errors: Sequence[str], old: str | None,
                     old_unhealthy: str | None) -> RollbackVerdict:
    """Where the rollback of a transaction that failed with `failure` ended: `undo_errors`,
    what undoing its steps could not do; `old_unhealthy`, the previous release's failed
    re-check (None: it passed, or was not run)."""
    errors = list(undo_errors)
    if old is not None and old_unhealthy is not None:
        errors.append(f"previous release {version_of(old)} is unhealthy too: {old_unhealthy}")
    if errors:
        return RollbackVerdict(False, "rollback-failed",
                               f"{failure}; rollback failed: {'; '.join(errors)}")
    return RollbackVerdict(True, "rolled-back", failure)


def settles_by_commit(post_check: str, commit: str) -> bool:
    """Whether an interrupted or failing transaction is finished by committing it: its
    post-check passed (state "done") and its commit was not undone."""
    return post_check == "done" and commit != "undone"
