"""The collector's work beside its requests: holding the judge's lease, judging planned
rollouts, pruning.

Only the collector that holds the lease (`_lease`) judges, signs and prunes; with no lease
(an app made without one, in-process) the collector does all of it alone. The leader judges
a channel at once when a failure reaches it, looks every `RENEW` seconds for failures any
collector stored since its last look (the reports table is shared), and looks at every
planned rollout every `tick` seconds and the moment it takes the lease."""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from greenlight.release.fleet._lease import RENEW, Lease

__all__ = ["Background"]


class Background:
    """The lease, the judge's timers and the pruning of one collector process."""

    def __init__(self, guard: Any, lease: Lease | None, tick: float,
                 prunes: list[Callable[[], None]], log: Callable[[str], None],
                 moved: Callable[[str | None], None], leading_gauge: Any = None) -> None:
        self.guard, self.lease, self.tick, self.prunes = guard, lease, tick, prunes
        self.log, self.moved, self.gauge = log, moved, leading_gauge
        # At most one judgement per channel waits at a time in this process: a burst of
        # failure reports costs one look at the repository, not one per report.
        self._waiting: set[str] = set()
        self._waiting_lock = threading.Lock()
        self._last_report: int | None = None

    @property
    def leads(self) -> bool:
        return self.lease is None or self.lease.held

    def judge_soon(self, channel: str) -> bool:
        """Whether a failure on `channel` should be judged now by this collector (then run
        `judge` after the answer): it leads, and no judgement of the channel waits."""
        if self.guard is None or not self.leads:
            return False
        with self._waiting_lock:
            fresh = channel not in self._waiting
            self._waiting.add(channel)
        return fresh

    def judge(self, channel: str) -> None:
        with self._waiting_lock:
            self._waiting.discard(channel)
        try:
            self.moved(self.guard.judge(channel))
        except Exception as e:  # logged; the timer tries again
            self.guard.log(f"cannot judge {channel}: {type(e).__name__}: {e}")

    def _judge_all(self) -> None:
        for line in self.guard.tick():
            self.moved(line)

    def _look(self) -> None:
        """The leader's look at the failures stored since its last (by any collector)."""
        store = self.guard.store
        channels, self._last_report = store.failed_after(self._last_report)
        for channel in sorted(channels):
            self.judge(channel)

    def _prune(self) -> None:
        for prune in self.prunes:
            try:
                prune()
            except Exception as e:  # logged; the next tick tries again
                self.log(f"cannot prune: {type(e).__name__}: {e}")

    def _hold(self) -> tuple[bool, bool]:
        """Renew or take the lease: whether this collector leads, and whether it just began."""
        assert self.lease is not None
        before = self.lease.held
        try:
            now = self.lease.hold()
        except Exception as e:  # the database is away: this collector cannot count on it
            self.lease.epoch = None
            if before:
                self.log(f"no longer leads: cannot renew the judge's lease: "
                         f"{type(e).__name__}")
            return False, False
        if now and not before:
            self.log(f"leads: judges, signs and prunes for the collectors sharing its "
                     f"database (lease epoch {self.lease.epoch})")
        elif before and not now:
            self.log("no longer leads: another collector holds the judge's lease")
        if self.gauge is not None:
            self.gauge.set(1 if now else 0)
        return now, now and not before

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        async def leading() -> None:
            while True:
                held, began = await run_in_threadpool(self._hold)
                if held and self.guard is not None:
                    try:
                        if began:
                            self._last_report = None
                            await run_in_threadpool(self._judge_all)
                        await run_in_threadpool(self._look)
                    except Exception as e:  # logged; the next look tries again
                        self.log(f"cannot look at the reports: {type(e).__name__}: {e}")
                await asyncio.sleep(RENEW)

        async def timer() -> None:
            while True:
                await asyncio.sleep(self.tick)
                if not self.leads:
                    continue
                try:
                    if self.guard is not None:
                        await run_in_threadpool(self._judge_all)
                except Exception as e:  # logged; the next tick tries again
                    self.log(f"cannot judge: {type(e).__name__}: {e}")
                await run_in_threadpool(self._prune)

        tasks = [asyncio.create_task(timer())]
        if self.lease is not None:
            tasks.append(asyncio.create_task(leading()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if self.lease is not None:
                await run_in_threadpool(self.lease.give_up)
