"""The report outbox, `state/reports/`: fleet reports (`channels.FleetReport`) waiting to be
sent (opt-in, `[report] url`).

One report per transaction, made from its history entry, queued by an explicit call
(`queue_event`), never as a side effect of writing the history. Queuing is a small atomic
write; sending happens later (`greenlight.updater.agent.send_reports`), so a
collector that is down never blocks, slows or fails an upgrade. The queue is bounded: past
`queue_max` the oldest report is dropped.

Each report names the Greenlight that made it (`greenlight`, this version) and how it is
installed (`greenlight_kind`): the collector's census of the Greenlight versions its machines
run, which `release publish --collector` checks a release's `requires` against.
"""

import contextlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from greenlight.channels import (
    FLEET_OUTCOMES,
    VERSION,
    FleetReport,
    GreenlightKind,
    Outcome,
    ReportedCheck,
    atomic_write,
    version_of,
)
from greenlight.updater.store._history import HistoryEntry
from greenlight.updater.store._root import InstallRoot
from greenlight.updater.store._updaters import greenlight_kind

__all__ = ["enqueue", "queue_event", "queue_held", "queued", "read_refusal", "refusal",
           "report_of", "set_refusal", "write_refusal"]

def _folder(root: InstallRoot) -> Path:
    return root.state / "reports"


def _kind(root: InstallRoot) -> GreenlightKind | None:
    """How this root's Greenlight is installed, for the census of a fleet's Greenlight
    versions; None when that cannot be told (a report is never lost over it)."""
    try:
        return greenlight_kind(root)
    except Exception:
        return None


def report_of(root: InstallRoot, entry: HistoryEntry, outcome: Outcome) -> FleetReport:
    """The report of a history entry. A rollback's entry runs from the failed release back
    to the previous one; a report names the release whose failure it was: the release that
    was tried, or, when the release being left crashed on stop (`fault` "old"), that one
    (`crashed-on-stop`, naming the release tried as `upgrading_to`), so that the release
    tried is not counted as failed."""
    upgrading_to = None
    if outcome == "rolled-back" and entry.fault == "old" and entry.to_release is not None:
        tried: str | None = entry.to_release
        outcome, before, after = "crashed-on-stop", tried, tried
        upgrading_to = entry.from_release
    elif outcome in ("rolled-back", "dead-end"):
        tried, before = entry.from_release, entry.to_release
        after = entry.to_release if outcome == "rolled-back" else None
    elif outcome in ("precheck-blocked", "crash-loop"):
        tried = entry.to_release if outcome == "precheck-blocked" else entry.from_release
        before = after = entry.from_release
    else:
        tried, before, after = entry.to_release, entry.from_release, entry.to_release
    version = version_of(tried) if tried else (
        entry.from_version if outcome in ("rolled-back", "dead-end", "crash-loop")
        else entry.to_version)
    return FleetReport(
        installation=root.machine_id, at=entry.at, channel=entry.channel, outcome=outcome,
        release=version, release_key=tried, before=before, after=after,
        upgrading_to=upgrading_to,
        failed_checks=[ReportedCheck(name=c.name, summary=" ".join(c.summary.split())[:300],
                                     source=c.source) for c in entry.failed_checks],
        durations={k: round(v, 3) for k, v in entry.timings.items()},
        greenlight=VERSION, greenlight_kind=_kind(root))


def enqueue(root: InstallRoot, report: FleetReport, queue_max: int) -> None:
    folder = _folder(root)
    name = f"{time.time_ns():020d}-{os.urandom(4).hex()}.json"
    atomic_write(folder / name, report.model_dump_json(by_alias=True).encode(), mode=0o600)
    waiting = queued(root)
    for old in waiting[:max(0, len(waiting) - queue_max)]:
        old.unlink(missing_ok=True)


def _refusal_path(root: InstallRoot) -> Path:
    return _folder(root) / ".refused"


def read_refusal(path: Path) -> str | None:
    """What a queue's `.refused` file says, None when nothing (or nothing readable)."""
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def write_refusal(path: Path, why: str | None) -> None:
    """Remember (or, with None, forget) why a queue is not getting through; written only
    when it says something new.

    Raises:
        OSError: the queue's folder could not be written.
    """
    if why is None:
        path.unlink(missing_ok=True)
    elif read_refusal(path) != why:
        atomic_write(path, why.encode(), mode=0o600)


def refusal(root: InstallRoot) -> str | None:
    """Why the collector last refused this machine's reports (or why none could be sent),
    until one is accepted; None when nothing is wrong."""
    return read_refusal(_refusal_path(root))


def set_refusal(root: InstallRoot, why: str | None) -> None:
    """Remember (or, with None, forget) why reports are not getting through.

    Raises:
        OSError: state/reports/ could not be written.
    """
    write_refusal(_refusal_path(root), why)


def queued(root: InstallRoot) -> list[Path]:
    """The reports waiting, oldest first."""
    folder = _folder(root)
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".json"
                      and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def _unqueued(root: InstallRoot, what: str, error: BaseException) -> str:
    """Say once why a report could not be queued: in the queue's refusal note, which `updater
    status` shows until a report gets through (when even that cannot be written, the
    caller's log is the only place left). The sentence said."""
    said = str(error).splitlines()[0] if str(error) else ""
    why = f"a report of {what} could not be queued: {type(error).__name__}: {said}"[:300]
    with contextlib.suppress(OSError):
        set_refusal(root, why)
    return why


def queue_event(root: InstallRoot, entry: HistoryEntry, queue_max: int | None) -> str | None:
    """Queue a report of `entry` when reporting is on (`queue_max`: `[report] queue_max`, None
    when off) and the event is one a fleet counts. Never raises (reporting must not fail
    what it reports): when the report cannot be queued (a full disk), why, said once (see
    `_unqueued`); else None."""
    outcome = FLEET_OUTCOMES.get(entry.event)
    if outcome is None or queue_max is None:
        return None
    try:
        enqueue(root, report_of(root, entry, outcome), queue_max)
    except Exception as e:  # a full disk: the upgrade goes on, its report said lost
        return _unqueued(root, f"{entry.event} {entry.to_version or entry.from_version}", e)
    return None


def queue_held(root: InstallRoot, channel: str, release_key: str, installed: str | None,
               note: str, queue_max: int | None) -> str | None:
    """Queue one `held` report when an upgrade is held back (quarantine, rollout, pin), once
    per release and reason: a machine that checks every hour while held says so once, not
    every hour. Never raises: when the report cannot be queued, why, said once (see
    `_unqueued`); else None."""
    if queue_max is None:
        return None
    seen = _folder(root) / ".held"
    mark = f"{release_key}\n{note}\n".encode()
    try:
        if seen.read_bytes() == mark:
            return None
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:
        return _unqueued(root, f"held {version_of(release_key)}", e)
    try:
        enqueue(root, FleetReport(
            installation=root.machine_id, at=datetime.now(UTC), channel=channel,
            outcome="held", release=version_of(release_key), release_key=release_key,
            before=installed, after=installed, note=" ".join(note.split())[:300],
            greenlight=VERSION, greenlight_kind=_kind(root)), queue_max)
        atomic_write(seen, mark, mode=0o600)
    except Exception as e:  # reporting must not fail what it reports
        return _unqueued(root, f"held {version_of(release_key)}", e)
    return None
