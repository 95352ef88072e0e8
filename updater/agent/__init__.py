"""The agent: the upgrade cycle without a person (`updater agent`).

- `_cycle.py`: one cycle's I/O around the pure `policy.agent_step`, events and hooks;
- `loop.py`: the resident loop between cycles (the standard library only);
- `_sender.py`: sending the fleet-report outbox, and the user-feedback outbox, to the
  collector; `_feedback.py`: the cycle's part in feedback (the inbox in, the queue out).

It sits above `operations`; `status.json` itself is written by the store
(`store.refresh_status`).
"""

from greenlight.updater.agent._cycle import Agent, Event, EventKind, loop_argv, run_once
from greenlight.updater.agent._sender import NO_COLLECTOR, send_feedback, send_reports

__all__ = ["NO_COLLECTOR", "Agent", "Event", "EventKind", "loop_argv", "run_once",
           "send_feedback", "send_reports"]
