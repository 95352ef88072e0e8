"""The agent: the upgrade cycle without a person (`updater agent`).

- `_cycle.py`: one cycle's I/O around the pure `policy.agent_step`, events and hooks;
- `loop.py`: the resident loop between cycles (the standard library only);
- `_sender.py`: sending the fleet-report outbox to the collector.

It sits above `operations`; `status.json` itself is written by the store
(`store.refresh_status`).
"""

from greenlight.updater.agent._cycle import Agent, Event, EventKind, loop_argv, run_once
from greenlight.updater.agent._sender import send_reports

__all__ = ["Agent", "Event", "EventKind", "loop_argv", "run_once", "send_reports"]
