"""The halt judgement of a planned rollout, as one pure function: the collector gathers the
evidence (distinct machines that failed, that reported, the most failed check) and signs
what this returns; the rule itself does no I/O and reads no clock.

    judge(plan, evidence, now) -> Verdict

A halt may be narrowed to one cohort by the caller (`confined_to`): when the machines of one
kind alone meet the rule and the others do not, that kind is held and the rollout goes on.

The order of the rules is the policy:
1. a rollout already halted (by its signers or the collector) is left alone;
2. by the count rule: at least `rollbacks` distinct machines failed the release, or more
   than `failure_ratio` of at least `min_reports` distinct reporting machines did; or, when
   the plan names the sequential rule, by it instead (`sequential_e`): halt, saying how
   many of how many, how they failed, and the most failed check;
3. the step has soaked `soak` seconds and is not the last: advance one step, unless the
   plan names a feedback rule (`HaltRule.feedback`) and at least that many distinct machines'
   users wrote in about the release within the step (`Evidence.feedback`): then pause, a
   signal for a person, never a halt (halts stay automatic, advancing waits for a person);
4. otherwise: nothing.

Only reports received since the rollout was last resumed (`counted_since`) are evidence, and
only feedback received since the step began and since that resume: the caller asks its
store with those bounds. Which machines and reports count is said once, in `_evidence`.
"""

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from greenlight.channels import HaltRule, SequentialRule, printable

__all__ = ["REASON_MAX", "Evidence", "RolloutPosition", "Verdict", "baseline_rate",
           "confined_to", "judge", "sequential_e"]

_MIXTURE = (1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""the alternatives the sequential rule weighs, as multiples of the baseline's rate"""

REASON_MAX = 400


@dataclass(frozen=True)
class Evidence:
    """What the fleet said about one release since `counted_since`."""

    failed: int
    """distinct machines that failed: rolled back, reached a dead end, went into a crash
    loop, or (the release being left) crashed when an upgrade stopped it"""
    total: int
    """distinct machines that reported an outcome that counts (upgraded or failed)"""
    top_check: tuple[str, str] | None = None
    """the most failed check's name, and one example summary"""
    baseline: tuple[int, int] | None = None
    """the previous release's record on the fleet: distinct machines failed, reporting"""
    kinds: tuple[tuple[str, int], ...] = ()
    """distinct machines by failed outcome (`rolled-back`, `dead-end`, `crash-loop`,
    `crashed-on-stop`), for the reason; empty: all said to have rolled back"""
    feedback: int = 0
    """distinct machines whose users wrote in about the release within the current step
    (and since the last resume)"""


KIND_WORDS = {"rolled-back": "rolled back", "dead-end": "at a dead end",
              "crash-loop": "in a crash loop",
              "crashed-on-stop": "crashed on stop"}


def _failed(evidence: Evidence, share: str | None = None) -> str:
    """How the machines failed, in words: "rolled back" when they all did, else each way
    (with the `share` of the machines they are, when given)."""
    ahead = f"{share}: " if share else ""
    if all(kind == "rolled-back" for kind, _ in evidence.kinds):
        return "rolled back" + (f" ({share})" if share else "")
    return f"failed ({ahead}" + ", ".join(f"{n} {KIND_WORDS.get(kind, kind)}"
                                          for kind, n in evidence.kinds) + ")"


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
    action: Literal["halt", "advance", "pause", "none"]
    reason: str | None = None
    """why it halts, or why it does not advance (one line, at most REASON_MAX characters)"""
    step: int | None = None
    """the step it advances to"""


def baseline_rate(baseline: tuple[int, int] | None, floor: float) -> float:
    """The failure rate a release is held to: an upper estimate of the previous release's
    (its rate plus two standard errors, a prior of one failure in two machines added), never
    below `floor`."""
    if baseline is None:
        return floor
    failed, total = baseline
    rate = (failed + 1) / (total + 2)
    return min(0.5, max(floor, rate + 2 * math.sqrt(rate * (1 - rate) / (total + 2))))


def sequential_e(failed: int, total: int, p0: float) -> float:
    """The e-value, after `total` machines of which `failed` failed, against "the failure
    rate is at most `p0`": a mixture of likelihood ratios over rates above p0 (`_MIXTURE`),
    equally weighted. Under the null its expectation is at most 1 at every count, so by
    Ville's inequality it ever reaches 1/alpha with probability at most alpha: the rule may be
    looked at after every report (anytime-valid)."""
    if total <= 0:
        return 1.0
    logs = []
    for m in _MIXTURE:
        p1 = min(0.999, p0 * m)
        if p1 <= p0:
            continue
        logs.append(failed * math.log(p1 / p0)
                    + (total - failed) * math.log((1 - p1) / (1 - p0)))
    top = max(logs)
    return math.exp(min(700.0, top)) * sum(math.exp(x - top) for x in logs) / len(logs)


def _sequential_halt(rule: SequentialRule, evidence: Evidence, version: str) -> str | None:
    failed, total = evidence.failed, evidence.total
    if failed < rule.min_failures:
        return None
    p0 = baseline_rate(evidence.baseline, rule.floor)
    e = sequential_e(failed, total, p0)
    if e < 1 / rule.false_halt:
        return None
    how = _failed(evidence, f"{failed / total:.1%}")
    return (f"{failed} of {total} machines reporting on {version} {how}, above the "
            f"baseline's {p0:.2%} (sequential rule: e-value "
            f"{e:.3g} >= {1 / rule.false_halt:g}, false-halt probability {rule.false_halt:g})")


def _met(rule: HaltRule, evidence: Evidence, version: str) -> str | None:
    """Why the halt rule is met by `evidence`, in one line; None when it is not."""
    failed, total = evidence.failed, evidence.total
    if rule.sequential is not None:
        return _sequential_halt(rule.sequential, evidence, version)
    if failed >= rule.rollbacks or (total >= rule.min_reports and total > 0
                                    and failed / total > rule.failure_ratio):
        return f"{failed} of {total} machines reporting on {version} {_failed(evidence)}"
    return None


def confined_to(position: RolloutPosition, by_cohort: dict[str | None, Evidence],
                baseline: tuple[int, int] | None = None,
                known: set[str] | None = None) -> tuple[str, str] | None:
    """The cohort a failure is confined to, and why, when it is: that cohort's machines
    alone meet the halt rule, all the machines outside it, together, do not, and the fleet
    has other cohorts (`known`: those the channel's machines ever named). None when no
    cohort, or more than one, is to blame, or the failing one is the whole fleet: halt them
    all."""
    meeting = [(c, why) for c, e in by_cohort.items() if c is not None
               and (why := _met(position.rule, Evidence(e.failed, e.total, None, baseline,
                                                        e.kinds),
                                position.version)) is not None]
    if len(meeting) != 1:
        return None
    cohort, why = meeting[0]
    if known is not None and not known - {cohort}:
        return None  # one kind of machine is all there is: a halt for everyone
    rest = [e for c, e in by_cohort.items() if c != cohort]
    outside = Evidence(sum(e.failed for e in rest), sum(e.total for e in rest), None, baseline)
    if _met(position.rule, outside, position.version) is not None:
        return None
    return cohort, f"cohort {cohort}: {why}"


def judge(position: RolloutPosition, evidence: Evidence, now: datetime) -> Verdict:
    """What to do with a planned rollout now (see the module's rules, in order)."""
    if position.halted:
        return Verdict("none")
    why = _met(position.rule, evidence, position.version)
    if why is not None:
        top = evidence.top_check
        reason = (why + (f"; most failed check {printable(top[0], 80)}: "
                         f"{printable(top[1], 160)}" if top else ""))
        return Verdict("halt", reason=reason[:REASON_MAX])
    last = len(position.steps) - 1
    if position.step < last and (now - position.step_began).total_seconds() >= position.soak:
        wrote = position.rule.feedback
        if wrote is not None and evidence.feedback >= wrote.machines:
            n = evidence.feedback
            return Verdict("pause", reason=f"{n} machine{'s' if n != 1 else ''} wrote in "
                                           "since the step began")
        return Verdict("advance", step=position.step + 1)
    return Verdict("none")
