"""Policy: what this machine should do now, decided by pure functions (no I/O, no clock but
the time they are given), the way python-tuf keeps every trust decision in a state machine
that does no I/O.

- `decide`: what to do with a channel's release (install, up to date, held, leave revoked),
  and `returns_to_chosen`: when a machine that fell back goes back to its chosen channel;
- `agent_step`: what the agent does with that plan, given hold, window, apply mode and the
  revoked-release rule.

The rollback policy (undo, fallback, quarantine, incident, report) is a sequence of writes and
lives in one place of its own: `greenlight.updater.transaction` (`_rollback.py`).
"""

from greenlight.updater.policy._agent import (
    CYCLE_LIMIT,
    STOP_LIMIT,
    AgentInput,
    AgentStep,
    agent_step,
    in_window,
)
from greenlight.updater.policy._channel import (
    Action,
    Plan,
    RolloutPosition,
    decide,
    follow_plan,
    returns_to_chosen,
)

__all__ = ["CYCLE_LIMIT", "STOP_LIMIT", "Action", "AgentInput", "AgentStep", "Plan",
           "RolloutPosition", "agent_step", "decide", "follow_plan", "in_window",
           "returns_to_chosen"]
