"""The halt judgement of a planned rollout, as one pure function: the collector gathers the
evidence (distinct machines that failed, that reported, the most failed check) and signs
what this returns; the rule itself does no I/O and reads no clock.

    judge(plan, evidence, now) -> Verdict

The order of the rules is the policy:
1. a rollout already halted (by its signers or the collector) is left alone;
2. at least `rollbacks` distinct machines failed the release, or more than `failure_ratio`
   of at least `min_reports` distinct reporting machines did: halt, saying how many of how
   many and the most failed check;
3. the step has soaked `soak` seconds and is not the last: advance one step;
4. otherwise: nothing.

Only reports received since the rollout was last resumed (`counted_since`) are evidence: the
caller asks its store with that bound.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from greenlight.channels import HaltRule, printable

__all__ = ["Evidence", "RolloutPosition", "Verdict", "judge"]

REASON_MAX = 400


@dataclass(frozen=True)
class Evidence:
    """What the fleet said about one release since `counted_since`."""

    failed: int
    """distinct machines that rolled back or reached a dead end"""
    total: int
    """distinct machines that reported an outcome that counts (upgraded or failed)"""
    top_check: tuple[str, str] | None = None
    """the most failed check's name, and one example summary"""


@dataclass(frozen=True)
class RolloutPosition:
    """Where a planned rollout stands: its signed plan and the online role's word."""

    version: str
    steps: tuple[int, ...]
    step: int
    soak: float
    rule: HaltRule
    halted: bool
    step_began: datetime


@dataclass(frozen=True)
class Verdict:
    action: Literal["halt", "advance", "none"]
    reason: str | None = None
    """why it halts (one line, at most REASON_MAX characters)"""
    step: int | None = None
    """the step it advances to"""


def judge(position: RolloutPosition, evidence: Evidence, now: datetime) -> Verdict:
    """What to do with a planned rollout now (see the module's rules, in order)."""
    if position.halted:
        return Verdict("none")
    rule, failed, total = position.rule, evidence.failed, evidence.total
    if failed >= rule.rollbacks or (total >= rule.min_reports and total > 0
                                    and failed / total > rule.failure_ratio):
        top = evidence.top_check
        reason = (f"{failed} of {total} machines reporting on {position.version} rolled back"
                  + (f"; most failed check {printable(top[0], 80)}: {printable(top[1], 160)}"
                     if top else ""))
        return Verdict("halt", reason=reason[:REASON_MAX])
    last = len(position.steps) - 1
    if position.step < last and (now - position.step_began).total_seconds() >= position.soak:
        return Verdict("advance", step=position.step + 1)
    return Verdict("none")
