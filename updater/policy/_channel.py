"""What should this machine do now? One pure function, used by `check`, `upgrade` and
`sideload`: no I/O, no clock, nothing but its arguments (the way python-tuf keeps every trust
decision in a state machine that does no I/O).

    decide(channel_file, installed, quarantined, installation_id, pin, rollout_state, at) -> Plan

Releases are compared by identity (`ReleaseId`: the version and every component's sha256),
never by the version string alone: the same version with other bytes is another release.

The order of the rules is the policy:
1. the installed release was revoked (yanked) on the channel: leave it for what the channel
   carries now, or, when a staged rollout leaves this installation out, for the release
   before the rollout; never for a release quarantined here (held: a fixed release is the
   way out);
2. the channel carries what is installed, the same bytes: up to date;
3. a person pinned this installation to another version than the channel's: held (a pin never
   keeps a revoked release: rule 1 comes first);
4. the channel's release failed here before (quarantined): held;
5. a staged rollout that does not include this installation yet (or is halted): held; but an
   installation with nothing installed gets the release the channel carried before the
   rollout (`Rollout.previous`), by these same rules. A planned rollout's step comes from the
   online role's signed state, never past the plan (`channels._rollout.effective_rollout`);
   the time it is judged at is an argument;
6. no automatic downgrade: a release older than the installed one is held, unless the
   installed one is quarantined here or down (its services are not running: a dead release
   never blocks the way out), or a person asked for the downgrade;
7. otherwise: install it (a `downgrade` when it is older: never called an upgrade).
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from greenlight.channels import (
    ChannelFile,
    ReleaseId,
    RolloutState,
    admitted,
    effective_rollout,
    parse_version,
    rollout_bucket,
)

__all__ = ["Action", "Plan", "RolloutPosition", "decide", "follow_plan", "returns_to_chosen"]

Action = Literal["up-to-date", "install", "leave-yanked", "held"]


@dataclass(frozen=True)
class RolloutPosition:
    """Where this installation stands in the channel's staged rollout."""

    percent: int
    halted: bool
    bucket: int
    in_rollout: bool
    step: int | None = None
    steps: tuple[int, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class Plan:
    action: Action
    installed_id: ReleaseId | None
    target_id: ReleaseId
    release_file: ChannelFile
    """the channel file whose release is the target (the channel's own, or how it read
    before its rollout, for a fresh installation the rollout leaves out)"""
    yanked: str | None = None
    """why the installed release was revoked, when it was"""
    quarantined: str | None = None
    """why the channel's release is held back here, when it is"""
    rollout: RolloutPosition | None = None
    note: str | None = None
    """one line for a person, when the action is `held`"""

    @property
    def installed(self) -> str | None:
        return None if self.installed_id is None else self.installed_id.version

    @property
    def target(self) -> str:
        return self.target_id.version

    @property
    def changes_something(self) -> bool:
        return self.action in ("install", "leave-yanked")

    @property
    def downgrade(self) -> bool:
        """The target is an older version than the installed one."""
        return self.installed_id is not None and \
            parse_version(self.target_id.version) < parse_version(self.installed_id.version)


def _position(channel_file: ChannelFile, installation_id: str, state: RolloutState | None,
              at: datetime | None, cohort: str | None = None) -> RolloutPosition | None:
    plan = channel_file.rollout.plan if channel_file.rollout else None
    effective = effective_rollout(channel_file, state, at if at is not None else
                                  plan.started_at if plan is not None else
                                  channel_file.published_at, cohort)
    if effective is None:
        return None
    return RolloutPosition(
        percent=effective.percent, halted=effective.halted,
        bucket=rollout_bucket(installation_id, channel_file.channel, channel_file.release),
        in_rollout=admitted(channel_file, installation_id, effective),
        step=effective.step, steps=effective.steps, reason=effective.reason)


def decide(channel_file: ChannelFile, installed: ReleaseId | None,
           quarantined: Mapping[ReleaseId, str], installation_id: str,
           pin: str | None = None, rollout_state: RolloutState | None = None,
           at: datetime | None = None, installed_down: bool = False,
           allow_downgrade: bool = False, cohort: str | None = None) -> Plan:
    """The plan for an installation running `installed` that follows `channel_file`'s channel.

    `quarantined` maps each release that failed here to the reason it did; `pin` is the
    version a person pinned this installation to (`updater pin`), if any; `rollout_state` is
    the online role's verified word on a planned rollout, judged at time `at`;
    `installed_down` says the installed release's services are not running;
    `allow_downgrade` that a person asked to move to an older release; `cohort` is the kind
    of machine this is (a cohort the rollout state holds does not take the release).
    """
    target = channel_file.identity
    rollout = _position(channel_file, installation_id, rollout_state, at, cohort)
    held = quarantined.get(target)
    revoked = channel_file.is_revoked(installed.version) if installed is not None else None

    def plan(action: Action, note: str | None = None) -> Plan:
        return Plan(action, installed, target, channel_file,
                    yanked=revoked.reason if revoked else None, quarantined=held,
                    rollout=rollout, note=note)

    if revoked is not None:
        if rollout is not None and not rollout.in_rollout:  # never into a halted release
            before = channel_file.before_rollout()
            if before is None:
                return plan("held", f"the installed {revoked.version} was yanked, and the "
                                    f"channel's {target} is not rolled out here yet; waiting")
            earlier = decide(before, installed, quarantined, installation_id, pin, None, at,
                             installed_down, allow_downgrade)
            return replace(earlier, rollout=rollout)
        if held is not None:  # never back into what failed here: wait for a fix
            return plan("held", f"the installed {revoked.version} was yanked, and the "
                                f"channel's {target} is quarantined here ({held}); waiting "
                                "for a fixed release")
        return plan("leave-yanked")
    if installed == target:
        return plan("up-to-date")
    if pin is not None and target.version != pin:
        return plan("held", f"pinned to {pin} here; the channel carries {target.version} "
                            "(updater unpin ends it)")
    if held is not None:
        return plan("held", f"{target} is quarantined here: {held}")
    if rollout is not None and not rollout.in_rollout:
        before = channel_file.before_rollout() if installed is None else None
        if before is not None:
            earlier = decide(before, None, quarantined, installation_id, pin)
            if earlier.action == "install":
                why = (f"{target}'s staged rollout is HALTED ({rollout.reason or 'halted'})"
                       if rollout.halted else f"{target} is not rolled out here yet")
                return replace(earlier, rollout=rollout, note=(
                    f"{why}; installing {before.release}, the channel's release before the "
                    "rollout"))
        if rollout.halted:
            return plan("held", f"{target}'s staged rollout is HALTED "
                                f"({rollout.reason or 'halted'}); nothing new installs here")
        where = (f"at {rollout.percent}%" if rollout.step is None else
                 f"at {rollout.percent}%, step {rollout.step + 1} of {len(rollout.steps)}")
        return plan("held", f"{target} is in a staged rollout ({where}); this installation's "
                            f"bucket is {rollout.bucket}, not yet included")
    older = installed is not None and \
        parse_version(target.version) < parse_version(installed.version)
    if older and not (allow_downgrade or installed_down or installed in quarantined):
        assert installed is not None
        return plan("held", f"{channel_file.channel} carries {target.version}, older than the "
                            f"installed {installed.version}: no automatic downgrade "
                            "(updater upgrade --allow-downgrade moves down)")
    return plan("install")


def follow_plan(active: Plan | None, chosen: Plan | None) -> tuple[Plan, bool]:
    """Which plan a machine acts on: the active channel's, or, after a fallback (`chosen` is
    the plan of the channel a person chose), the chosen one's as soon as `returns_to_chosen`
    allows it, or when the fallback channel is gone (`active` None). Returns the plan and
    whether acting on it ends the fallback."""
    if chosen is None:
        assert active is not None
        return active, False
    if active is None or returns_to_chosen(chosen):
        return chosen, True
    return active, False


def returns_to_chosen(chosen: Plan) -> bool:
    """A machine that fell back from the channel a person chose goes back to it as soon as
    that channel carries a release allowed here: one to install (not quarantined, halted,
    pinned away, or older with nothing wrong with the installed one), or the installed one
    itself. Until then it stays on its last good release, on the fallback channel."""
    return chosen.action in ("install", "up-to-date", "leave-yanked")
