"""The agent's policy: given what the check found and the machine's settings, what one
unattended cycle does. Pure: the time and every setting are arguments.

The order of the rules is the policy:
1. the installed release was revoked: leave it now (`leave_revoked_at_once`, the default),
   or, with that off, wait for a window outside any hold;
2. the channel's release is held here (quarantine, pin, rollout): nothing to do, say why;
3. nothing new: up to date;
4. `apply = "notify"`: say that a release is available;
5. `apply = "download"`, a hold in force, or outside every window: download and verify, so
   the install later is quick;
6. otherwise install it.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["CYCLE_LIMIT", "STOP_LIMIT", "AgentAction", "AgentInput", "AgentStep", "agent_step",
           "in_window"]

CYCLE_LIMIT = 2 * 3600.0  # every wait inside a cycle is bounded; this bounds the sum
STOP_LIMIT = 300.0  # a cycle told to stop has this long to undo or finish its transaction

AgentAction = Literal["leave-revoked", "wait-revoked", "held", "up-to-date", "notify",
                      "download", "install"]
ApplyMode = Literal["auto", "download", "notify"]


def in_window(windows: list[str] | tuple[str, ...], local: datetime) -> bool:
    """Whether the local time `local` falls in one of `windows` ("HH:MM-HH:MM"; a window
    whose end is before its start spans midnight). No windows: any time."""
    if not windows:
        return True
    minute = local.hour * 60 + local.minute
    for window in windows:
        start_text, end_text = window.split("-")
        start = int(start_text[:2]) * 60 + int(start_text[3:])
        end = int(end_text[:2]) * 60 + int(end_text[3:])
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        if inside:
            return True
    return False


@dataclass(frozen=True)
class AgentInput:
    """What one cycle knows: the check's answer and the machine's settings, at `local`."""

    revoked: bool
    """the installed release was yanked on its channel"""
    held: str | None
    """why the channel's release is held here (quarantine, pin, rollout), when it is"""
    update_available: bool
    apply: ApplyMode
    windows: tuple[str, ...]
    local: datetime
    """the machine's local time, for the windows"""
    hold: str | None
    """the reason of a hold in force (`updater hold`), or None without one"""
    leave_revoked_at_once: bool = True


@dataclass(frozen=True)
class AgentStep:
    action: AgentAction
    why: str | None = None
    """why the cycle does not install, for status.json; None when it does, or has nothing
    to explain"""


def agent_step(given: AgentInput) -> AgentStep:
    """The action of one agent cycle (see the module's rules, in order)."""
    inside = in_window(given.windows, given.local)
    if given.revoked:
        if given.leave_revoked_at_once or (given.hold is None and inside):
            return AgentStep("leave-revoked")
        return AgentStep("wait-revoked", _why_waiting(given, inside))
    if given.held is not None:
        return AgentStep("held", given.held)
    if not given.update_available:
        return AgentStep("up-to-date")
    if given.apply == "notify":
        return AgentStep("notify")
    if given.apply == "download" or given.hold is not None or not inside:
        return AgentStep("download", None if given.apply == "download" and given.hold is None
                         else _why_waiting(given, inside))
    return AgentStep("install")


def _why_waiting(given: AgentInput, inside: bool) -> str | None:
    if given.hold is not None:
        return f"on hold: {given.hold or 'no reason given'}"
    if not inside:
        return f"outside the install windows {', '.join(given.windows)}"
    return None
