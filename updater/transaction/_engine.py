"""The generic engine: steps with *do* and *undo*, journaled before and after each.

It knows nothing of releases or services; the steps (`_steps.py`) and the rollback policy
(`_rollback.py`) do. A step's state in `state/journal.json` moves like this:

```
            run_steps                          undo_steps (failure, kill, recovery)
  pending ----------> doing ----------> done
                        |                 |
                        +--------+--------+
                                 v
                              undoing --------> undone
                                 |
                                 +------------> undo-failed  (its undo raised; the next
                                                              undo_steps tries it again)
```

- A step is marked `doing` (journal written and fsync'd) before its *do* runs, and `done` after.
- When a step fails, or the updater is killed, every step that is `doing`, `done` or
  `undoing` is undone in reverse order, so *undo* handlers are idempotent: undoing what was
  never done, or done twice, changes nothing. An undo that fails is recorded as
  `undo-failed`, never as `undone`, the others still run, and the error names the step.
- A step without *undo* (fetch, post-check, commit) simply becomes `undone`.
- Steps roll back, never forward, with one exception the policy decides: a journal whose
  post-check is `done` is committed by recovery.
"""

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from greenlight.updater.store import InstallRoot, Journal

__all__ = ["Step", "StepContext", "run_steps", "undo_steps"]


class StepContext(Protocol):
    """What the engine needs of a transaction: where to journal, and where to time."""

    root: InstallRoot
    journal: Journal
    timings: dict[str, float]


C = TypeVar("C", bound=StepContext)


@dataclass(frozen=True)
class Step(Generic[C]):
    name: str
    do: Callable[[C], None]
    undo: Callable[[C], None] | None = None


def _fault_injection(step: str, when: str) -> None:
    # Crash tests kill the updater at an exact point of the step list, for real (SIGKILL);
    # STEP:WHEN:TERM sends SIGTERM there instead, a stop the command takes as any other.
    point = os.environ.get("GREENLIGHT_KILL_AT", "")
    if point in (f"{step}:{when}", f"{step}:{when}:TERM"):
        os.kill(os.getpid(), signal.SIGTERM if point.endswith(":TERM") else signal.SIGKILL)


def run_steps(steps: Sequence[Step[C]], ctx: C) -> None:
    """Run the journal's steps in order. Whatever a step raises propagates after the journal
    says which steps were done; the caller decides between rollback and plain undo."""
    planned = {r.name for r in ctx.journal.steps}
    for step in (s for s in steps if s.name in planned):
        ctx.journal.mark(ctx.root, step.name, "doing")
        _fault_injection(step.name, "before")
        started = time.monotonic()
        step.do(ctx)
        ctx.timings[step.name] = round(time.monotonic() - started, 4)
        ctx.journal.mark(ctx.root, step.name, "done")
        _fault_injection(step.name, "after")


def undo_steps(steps: Sequence[Step[C]], ctx: C, reason: str) -> list[str]:
    """Undo, in reverse, every step that is doing, done or undoing; return the errors met."""
    ctx.journal.undo_reason = reason
    ctx.journal.save(ctx.root)
    errors = []
    for step in reversed(steps):
        if ctx.journal.state_of(step.name) not in ("doing", "done", "undoing", "undo-failed"):
            continue
        ctx.journal.mark(ctx.root, step.name, "undoing")
        if step.undo is not None:
            try:
                step.undo(ctx)
            except Exception as e:  # one failed undo must not stop the others
                errors.append(f"undo of step {step.name} failed: {e}")
                ctx.journal.mark(ctx.root, step.name, "undo-failed")
                continue
        ctx.journal.mark(ctx.root, step.name, "undone")
    return errors
