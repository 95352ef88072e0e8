"""Staged rollout: which installations take a release while it reaches N percent.

Each installation has a stable random id; its bucket for a release is a number 0-99 derived
from the id, the channel and the release, so the same machine always gets the same answer
for the same release, and a different slice of machines goes first for each release.

A rollout is either a fixed percent set by the channel's signers, or a signed plan of steps
that the online `rollout-<channel>` role moves along (or halts). `effective_rollout` combines
the two so that the online role can never take a machine past the plan: the percent is always
one of the plan's steps, no step comes sooner than `soak` after the one before, and a state
about another release (or another channel) counts for nothing.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime

from greenlight.channels._model import ChannelFile, RolloutState
from greenlight.channels._text import printable

__all__ = ["EffectiveRollout", "admitted", "effective_rollout", "rollout_bucket"]


def rollout_bucket(installation_id: str, channel: str, release: str) -> int:
    digest = hashlib.sha256(f"{installation_id}:{channel}:{release}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass(frozen=True)
class EffectiveRollout:
    """What a machine obeys: the percent reached, whether it is halted, and why."""

    percent: int
    halted: bool
    step: int | None = None
    """the plan's step in force (None for a fixed percent)"""
    steps: tuple[int, ...] = ()
    reason: str | None = None
    """who halted it and why, when it is halted"""


def effective_rollout(channel_file: ChannelFile, state: RolloutState | None,
                      now: datetime, cohort: str | None = None) -> EffectiveRollout | None:
    """The rollout in force for `channel_file`'s release, given the online role's `state`
    (already verified through TUF), the time, and the machine's own cohort: a cohort the
    state holds is halted for that machine, while the others go on."""
    rollout = channel_file.rollout
    if rollout is None:
        return None
    plan = rollout.plan
    signed_halt = "halted by the channel's signers" if rollout.halted else None
    if plan is None:
        return EffectiveRollout(rollout.percent, rollout.halted, reason=signed_halt)
    step, halted, reason = 0, rollout.halted, signed_halt
    if (state is not None and state.channel == channel_file.channel
            and state.release == channel_file.identity.key):
        step = min(state.step, len(plan.steps) - 1)
        if plan.soak > 0:
            elapsed = (now - plan.started_at).total_seconds()
            step = max(0, min(step, int(elapsed // plan.soak)))
        if state.halted and not halted:
            # Signed, but quoting what machines reported: one escaped line, bounded.
            halted, reason = True, printable(
                f"halted by {state.by}: {state.reason or 'no reason given'}", 500)
        elif cohort is not None and cohort in (state.held_cohorts or ()) and not halted:
            halted, reason = True, printable(
                f"held for this machine's cohort {cohort} by {state.by}: "
                f"{state.reason or 'no reason given'}", 500)
    return EffectiveRollout(plan.steps[step], halted, step, tuple(plan.steps), reason)


def admitted(channel_file: ChannelFile, installation_id: str,
             rollout: EffectiveRollout | None = None) -> bool:
    """Whether this installation may take the channel's release now."""
    if rollout is None:
        if channel_file.rollout is None:
            return True
        rollout = EffectiveRollout(channel_file.rollout.percent, channel_file.rollout.halted)
    bucket = rollout_bucket(installation_id, channel_file.channel, channel_file.release)
    return bucket < rollout.percent and not rollout.halted
