"""What survives a crash: the lock, the journal of the transaction in progress, the history,
and the quarantine.

- `state/lock` (filelock) with `state/lock.owner`: one transaction per root; a second caller
  is told the holder's pid and command.
- `state/journal.json`: the transaction's steps and the state of each, rewritten (atomically,
  fsync'd) before and after every step, so `updater recover` knows what was done.
- `state/history.jsonl`: one JSON object a line, appended and fsync'd: upgrades, rollbacks,
  incidents with their evidence.
- `state/quarantine.json`: releases that failed here and are never installed automatically.
"""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, Field, ValidationError

from updater._errors import BusyError, StoreError
from updater._fs import atomic_write
from updater._root import InstallRoot, now

StepState = Literal["pending", "doing", "done", "undoing", "undone"]


@contextmanager
def locked(root: InstallRoot) -> Iterator[None]:
    root.state.mkdir(parents=True, exist_ok=True)
    owner = root.state / "lock.owner"
    lock = FileLock(str(root.state / "lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = json.loads(owner.read_text())
            who = f"pid {holder['pid']} ({holder['command']}, since {holder['since']})"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise BusyError(
            f"{root.path}: another updater holds this root: {who}; wait for it to finish"
        ) from None
    try:
        command = " ".join(["updater", *sys.argv[1:2]])
        atomic_write(owner, json.dumps({"pid": os.getpid(), "command": command,
                                        "since": str(now())}).encode())
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


class StepRecord(BaseModel):
    name: str
    state: StepState = "pending"


class Journal(BaseModel):
    kind: Literal["upgrade", "rollback"]
    channel: str
    from_version: str | None
    to_version: str
    staged_new: bool = False
    forced: bool = False
    started_at: datetime
    steps: list[StepRecord]
    undo_reason: str | None = None

    @staticmethod
    def path(root: InstallRoot) -> Any:
        return root.state / "journal.json"

    @classmethod
    def load(cls, root: InstallRoot) -> "Journal | None":
        try:
            return cls.model_validate_json(cls.path(root).read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            raise StoreError(f"{cls.path(root)}: damaged journal; inspect it, then remove it") from None

    def save(self, root: InstallRoot) -> None:
        atomic_write(self.path(root), self.model_dump_json(indent=2).encode())

    def mark(self, root: InstallRoot, name: str, state: StepState) -> None:
        for step in self.steps:
            if step.name == name:
                step.state = state
        self.save(root)

    def state_of(self, name: str) -> StepState:
        return next((s.state for s in self.steps if s.name == name), "pending")

    def finish(self, root: InstallRoot) -> None:
        self.path(root).unlink(missing_ok=True)


class HistoryEntry(BaseModel):
    at: datetime = Field(default_factory=now)
    event: Literal["upgraded", "rolled-back", "rollback-failed", "recovered",
                   "precheck-forced", "precheck-blocked", "manual-rollback", "yanked"]
    channel: str
    from_version: str | None = None
    to_version: str | None = None
    fallback_channel: str | None = None
    summary: str
    failed_checks: list[dict[str, Any]] = Field(default_factory=list)
    stop_outcomes: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)


def record(root: InstallRoot, entry: HistoryEntry) -> None:
    path = root.state / "history.jsonl"
    line = (entry.model_dump_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def history(root: InstallRoot) -> list[HistoryEntry]:
    path = root.state / "history.jsonl"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(HistoryEntry.model_validate_json(line))
        except ValidationError:
            continue  # a torn last line after a crash: the rest is still the story
    return entries


class QuarantineEntry(BaseModel):
    version: str
    channel: str
    reason: str
    at: datetime


def quarantine(root: InstallRoot) -> dict[str, QuarantineEntry]:
    path = root.state / "quarantine.json"
    try:
        raw = json.loads(path.read_text())
        return {v: QuarantineEntry.model_validate(e) for v, e in raw.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, ValidationError):
        raise StoreError(f"{path}: damaged quarantine list") from None


def add_to_quarantine(root: InstallRoot, entry: QuarantineEntry) -> None:
    entries = quarantine(root)
    entries[entry.version] = entry
    data = {v: e.model_dump(mode="json") for v, e in entries.items()}
    atomic_write(root.state / "quarantine.json", json.dumps(data, indent=2).encode())
