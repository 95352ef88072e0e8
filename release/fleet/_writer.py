"""Reports stored in batches (group commit), by one writer thread: while one batch is
written, the reports that arrive meanwhile are verified and gather into the next. A commit
costs more than a report, and every request still waits for its own answer, given once its
batch has committed. (bench/collector_load.py, 16 in flight: from 746 to 2,043 reports/s on
SQLite with llhttp; PostgreSQL 1,469/s, as its round trips no longer hold up the event
loop.)"""

import asyncio
import concurrent.futures
from collections.abc import Callable
from datetime import datetime
from typing import Any

from greenlight.channels import printable
from greenlight.release.fleet._http import RATE

__all__ = ["ReportWriter", "StoreDown"]

Item = tuple[Any, str, datetime, str]  # (report, body, received, public key)
Said = tuple[str, bool, bool]  # what happened, whether the key was new, is established


class StoreDown(Exception):
    """The batch a report was in could not be stored (logged once a batch)."""


class ReportWriter:
    """The group commit of one collector process: `admitted` stores a report with the
    others that arrive while the last batch is written (`Store.admit_many`)."""

    def __init__(self, store: Any, enrolment: str, enrol_rate: int,
                 log: Callable[[str], None]) -> None:
        self.store, self.enrolment, self.enrol_rate, self.log = (
            store, enrolment, enrol_rate, log)
        self._batch: list[tuple[Item, asyncio.Future[Said]]] = []
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reports")
        self._writing = False

    async def admitted(self, item: Item) -> Said:
        """What became of `item` once its batch committed.

        Raises:
            StoreDown: its batch could not be stored.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Said] = loop.create_future()
        self._batch.append((item, answer))
        if len(self._batch) == 1:
            loop.call_soon(self._write)
        return await answer

    def _write(self) -> None:
        if self._writing or not self._batch:
            return
        self._writing = True
        taken = self._batch[:]
        self._batch.clear()
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._thread, self.store.admit_many,
                                    [item for item, _ in taken], RATE, self.enrolment,
                                    self.enrol_rate)
        done.add_done_callback(lambda written: self._answer(taken, written))

    def _answer(self, taken: list[tuple[Item, asyncio.Future[Said]]],
                written: asyncio.Future[list[Said]]) -> None:
        self._writing = False
        error = written.exception()
        if error is not None:  # said once a batch, in one line, never with its parameters
            said = str(error).splitlines()[0] if str(error) else ""
            self.log(f"cannot store reports: {type(error).__name__}: {printable(said, 200)}")
        for i, (_, answer) in enumerate(taken):
            if answer.done():
                continue
            if error is not None:
                answer.set_exception(StoreDown())
            else:
                answer.set_result(written.result()[i])
        self._write()
