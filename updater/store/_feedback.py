"""User feedback on disk: the outbox, `state/feedback/`, and the product's inbox folder,
`<root>/feedback/inbox/`.

The outbox holds `channels.FeedbackReport` documents waiting to be sent (or exported, on an
air-gapped machine), one file each, written atomically (0600) and named
`<time_ns>-<source>-<id>.json` so that the oldest sorts first. Nothing in it expires: it is
bounded by count (`FEEDBACK_QUEUE_MAX`, the oldest dropped past it), and the product's inbox
may hold at most `INBOX_QUEUE_MAX` of those places, so that a runaway UI can never push out
what a person wrote before it.

The inbox is where the product's UI drops `{"text": "...", "logs": false}` files without a
shell; `operations.collect_inbox` reads and removes them. It is made by `updater init` (or on
first use) for the root's owner, mode 0700: Greenlight runs the product's services as that
user (the process backend starts them as itself, the units it writes name no other `User=`),
so they can write there and nobody else can. An administrator who runs the UI as another
user gives that user's group the folder (`chgrp GROUP inbox; chmod 3770 inbox`): Greenlight
keeps a folder's group and mode, and takes files from that group's members.
"""

import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from greenlight.channels import atomic_write
from greenlight.updater._errors import BusyError, StoreError
from greenlight.updater.store._outbox import read_refusal, write_refusal
from greenlight.updater.store._root import InstallRoot

__all__ = ["FEEDBACK_QUEUE_MAX", "INBOX_DAY_MAX", "INBOX_FILE_MAX", "INBOX_QUEUE_MAX",
           "INBOX_RUN_MAX", "ensure_inbox", "feedback_as_sent", "feedback_folder",
           "feedback_lock", "feedback_refusal", "inbox_accepted", "inbox_path",
           "queue_feedback", "queued_feedback", "set_feedback_refusal", "set_inbox_accepted"]

FEEDBACK_QUEUE_MAX = 100
"""feedback kept while it cannot be sent; past it the oldest is dropped"""
INBOX_QUEUE_MAX = 50
"""of those, at most this many from the product's inbox"""
INBOX_DAY_MAX = 50
"""inbox files accepted in one (UTC) day; the rest are refused unread"""
INBOX_RUN_MAX = 20
"""inbox files read in one collection (an agent cycle, an `updater feedback`)"""
INBOX_FILE_MAX = 64 * 1024
"""bytes an inbox file may hold"""


def feedback_folder(root: InstallRoot) -> Path:
    return root.state / "feedback"


def inbox_path(root: InstallRoot) -> Path:
    return root.path / "feedback" / "inbox"


def queue_feedback(root: InstallRoot, feedback_id: str, source: str, body: bytes) -> int:
    """Queue one feedback document (its JSON, as built); the number of the oldest dropped to
    stay within `FEEDBACK_QUEUE_MAX`.

    Raises:
        OSError: state/feedback/ could not be written (a full disk).
    """
    name = f"{time.time_ns():020d}-{source}-{feedback_id}.json"
    atomic_write(feedback_folder(root) / name, body, mode=0o600)
    waiting = queued_feedback(root)
    doomed = waiting[:max(0, len(waiting) - FEEDBACK_QUEUE_MAX)]
    for old in doomed:
        old.unlink(missing_ok=True)
    return len(doomed)


def queued_feedback(root: InstallRoot, source: str | None = None) -> list[Path]:
    """The feedback waiting, oldest first (only that of `source`, when given)."""
    try:
        found = [p for p in feedback_folder(root).iterdir()
                 if p.suffix == ".json" and not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    if source is not None:
        found = [p for p in found if p.name.split("-")[1:2] == [source]]
    return sorted(found)


def feedback_as_sent(body: bytes, sent: datetime) -> bytes:
    """A queued document as it goes out: the very same fields with `sent` set. Plain JSON,
    never validated again (validating escapes the text a second time).

    Raises:
        ValueError: the queued bytes are not a JSON object.
    """
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    document["sent"] = sent.isoformat().replace("+00:00", "Z")
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _refusal_path(root: InstallRoot) -> Path:
    return feedback_folder(root) / ".refused"


def feedback_refusal(root: InstallRoot) -> str | None:
    """Why the queued feedback is not getting through (no collector, a refused token, a
    collector that takes none), until one is accepted; None when nothing is wrong."""
    return read_refusal(_refusal_path(root))


def set_feedback_refusal(root: InstallRoot, why: str | None) -> None:
    """Remember (or, with None, forget) why feedback is not getting through.

    Raises:
        OSError: state/feedback/ could not be written.
    """
    write_refusal(_refusal_path(root), why)


@contextmanager
def feedback_lock(root: InstallRoot, wait: float = 0.0) -> Iterator[None]:
    """Hold `state/feedback/.lock` (never the root's lock: feedback is taken while an upgrade
    runs), so that two collections never read the same inbox file twice.

    Raises:
        BusyError: another updater held it for `wait` seconds.
    """
    from filelock import FileLock, Timeout

    folder = feedback_folder(root)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = FileLock(str(folder / ".lock"), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        raise BusyError(f"{folder}: another updater is collecting or exporting feedback"
                        ) from None
    try:
        yield
    finally:
        lock.release()


def _day_path(root: InstallRoot) -> Path:
    return feedback_folder(root) / ".inbox-day"


def inbox_accepted(root: InstallRoot, day: str) -> int:
    """How many inbox files were accepted on `day` (YYYY-MM-DD, UTC)."""
    try:
        seen = json.loads(_day_path(root).read_text())
        return int(seen["accepted"]) if seen.get("day") == day else 0
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


def set_inbox_accepted(root: InstallRoot, day: str, count: int) -> None:
    """Remember how many inbox files were accepted on `day`.

    Raises:
        OSError: state/feedback/ could not be written.
    """
    atomic_write(_day_path(root), json.dumps({"day": day, "accepted": count}).encode(),
                 mode=0o600)


def _ours(folder: Path, owners: tuple[int, ...]) -> None:
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{folder}: not a folder (a link or a file is in its place); "
                         "remove it, and Greenlight makes the feedback inbox again")
    if st.st_uid not in owners:
        raise StoreError(f"{folder}: owned by uid {st.st_uid}, neither root nor the root's "
                         "owner; the feedback inbox is not read")


def ensure_inbox(root: InstallRoot) -> Path:
    """The product's inbox folder, made when it is missing (its parent 0755, the inbox 0700,
    both of the root's owner, who runs the product's services); a folder that is there is
    kept with its group and mode, once it is a real folder of root or of the root's owner.

    Raises:
        StoreError: the inbox or its parent is a link, a file, or someone else's folder.
    """
    inbox = inbox_path(root)
    try:
        owner = os.stat(root.path)
        owners = (0, owner.st_uid, os.getuid())
        for folder, mode in ((inbox.parent, 0o755), (inbox, 0o700)):
            try:
                folder.mkdir(mode=mode)
                os.chmod(folder, mode)  # whatever the umask took away
                if os.getuid() == 0 and owner.st_uid != 0:  # the product runs as its owner
                    os.chown(folder, owner.st_uid, owner.st_gid, follow_symlinks=False)
            except FileExistsError:
                pass
            _ours(folder, owners)
    except StoreError:
        raise
    except OSError as e:
        raise StoreError(f"{e.filename or inbox}: {e.strerror or e}") from None
    return inbox
