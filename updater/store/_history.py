"""`state/history.jsonl`: what happened here, one JSON object a line, appended and fsync'd:
upgrades, rollbacks and incidents with their evidence. Beside it, `state/last-health.json`:
the results of the last `updater health`, with their (redacted) evidence, which a user's
feedback carries."""

import os
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, ValidationError

from greenlight.channels import Record, atomic_write, now
from greenlight.updater.store._root import InstallRoot

__all__ = ["EventKind", "HistoryEntry", "RecordedCheck", "history", "last_health", "record",
           "save_health"]

EventKind = Literal["upgraded", "downgraded", "rolled-back", "rollback-failed", "recovered",
                    "precheck-forced", "precheck-blocked", "manual-rollback", "yanked",
                    "quarantine-lifted", "interrupted", "crash-loop", "damaged", "repaired",
                    "greenlight-updated", "greenlight-quarantined"]


class RecordedCheck(Record):
    """A health check's result as the history keeps it (evidence with secrets redacted); the
    product layer's `CheckResult.recorded()` makes one."""

    name: str
    type: str = ""
    required: bool = True
    ok: bool = False
    summary: str
    attempts: int = 1
    latency_ms: float = 0.0
    evidence: dict[str, Any] = Field(default_factory=dict)
    at: datetime | None = None
    source: Literal["release", "machine"] | None = Field(
        default=None, description="where the check came from: the release's manifest, or "
                                  "this machine's greenlight.toml")


class HistoryEntry(Record):
    at: datetime = Field(default_factory=now)
    event: EventKind
    channel: str
    from_version: str | None = None
    to_version: str | None = None
    from_release: str | None = Field(default=None, description="release key (version@digest)")
    to_release: str | None = Field(default=None, description="release key (version@digest)")
    by: str | None = Field(default=None, description="the user, for an act by hand")
    fallback_channel: str | None = None
    summary: str
    failed_checks: list[RecordedCheck] = Field(default_factory=list)
    stop_outcomes: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    preflight: bool = Field(
        default=False, description="caught in preflight, beside the running release, which "
                                   "was never stopped")
    fault: Literal["new", "old"] = Field(
        default="new", description="a rollback's: whose failure it was, the release tried "
                                   "(new) or the one being left, which crashed when stopped "
                                   "(old); a report counts it against that release")


def record(root: InstallRoot, entry: HistoryEntry) -> None:
    """Append `entry` durably (a torn last line after a crash is skipped when read). Writing
    history never reports to the fleet: that is `queue_event`'s explicit call."""
    path = root.state / "history.jsonl"
    line = (entry.model_dump_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
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


class _HealthRun(Record):
    at: datetime
    results: list[RecordedCheck]


def save_health(root: InstallRoot, results: list[RecordedCheck]) -> None:
    """Keep the results of a health run (their evidence already redacted) as the last one.

    Raises:
        OSError: state/ could not be written.
    """
    atomic_write(root.state / "last-health.json",
                 _HealthRun(at=now(), results=results).model_dump_json().encode(), mode=0o600)


def last_health(root: InstallRoot) -> list[RecordedCheck]:
    """The results of the last `updater health` here; none when it never ran (or its file
    is damaged)."""
    try:
        return _HealthRun.model_validate_json(
            (root.state / "last-health.json").read_bytes()).results
    except (OSError, ValidationError):
        return []
