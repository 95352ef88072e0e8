"""Policy: what this machine should do now, decided by pure functions (no I/O, no clock but
the time they are given), the way python-tuf keeps every trust decision in a state machine
that does no I/O.

- `decide`: what to do with a channel's release (install, up to date, held, leave revoked),
  and `returns_to_chosen`: when a machine that fell back goes back to its chosen channel;
- `agent_step`: what the agent does with that plan, given hold, window, apply mode and the
  revoked-release rule.

- `plan_rollback` / `rollback_verdict`: what a failed transaction changes (the fallback
  switch, the quarantine, the re-check of the previous release) and where it ended (back on a
  healthy release, or a dead end); `settles_by_commit`: a transaction whose post-check
  passed is committed, never undone. `greenlight.updater.transaction` (`_rollback.py`)
  carries them out.
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
from greenlight.updater.policy._rollback import (
    RollbackFacts,
    RollbackPlan,
    RollbackVerdict,
    plan_rollback,
    rollback_verdict,
    settles_by_commit,
)

__all__ = ["CYCLE_LIMIT", "STOP_LIMIT", "Action", "AgentInput", "AgentStep", "Plan",
           "RollbackFacts", "RollbackPlan", "RollbackVerdict", "RolloutPosition", "agent_step",
           "decide", "follow_plan", "in_window", "plan_rollback", "returns_to_chosen",
           "rollback_verdict", "settles_by_commit"]
