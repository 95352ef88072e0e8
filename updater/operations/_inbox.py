"""Collecting the product's feedback inbox, `<root>/feedback/inbox/` (`store.ensure_inbox`):
what the UI wrote there becomes a queued feedback of source `inbox`.

A UI writes `{"text": "...", "logs": false}` to a name starting with "." and renames it
(files starting with "." are being written, and left alone for a day). Greenlight, at each
agent cycle and each `updater feedback`, reads at most `INBOX_RUN_MAX` files, through the
folder's descriptor and with O_NOFOLLOW, and refuses, one line each, and removes:

- a symbolic link (never followed: the link is removed, not what it names), anything that
  is not a regular file, a file with other hard links;
- a file owned by anyone but root, the root's owner or (when the folder's group may write
  there) a member of the folder's group;
- more than `INBOX_FILE_MAX` bytes, bytes that are not UTF-8, JSON that is not an object
  with a non-empty `text` string and a boolean `logs`.

The text is foreign text: the wire format escapes its control characters, and every line
said about a file names it escaped. A flood is bounded: at most `INBOX_DAY_MAX` files are
accepted a day (past it, files are removed unread, said in one line: a UI writing in a loop),
and the queue holds at most `INBOX_QUEUE_MAX` of the inbox's (past it, files wait in the
inbox for a collection once the queue has room: a collector down for weeks loses nothing).
Feedback already queued is never dropped by it. A file's feedback takes an id made from the
file, so a collection killed between queuing it and removing it queues the same feedback
again, which the collector counts once. A file that fails in any other way is refused in one
line like the others: one file never stops the collection, nor the person's own feedback.
The product's log tails are attached only when the file says `"logs": true` (the UI asked).
"""

import contextlib
import errno
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from greenlight.channels import FeedbackReport, printable
from greenlight.updater._errors import BusyError
from greenlight.updater.operations._feedback import submit_feedback
from greenlight.updater.store import (
    INBOX_DAY_MAX,
    INBOX_FILE_MAX,
    INBOX_QUEUE_MAX,
    INBOX_RUN_MAX,
    InstallRoot,
    ensure_inbox,
    feedback_lock,
    inbox_accepted,
    queued_feedback,
    set_inbox_accepted,
)

__all__ = ["InboxCollection", "collect_inbox"]

_LOOKED_AT = 2000  # names looked at in one collection: a flood is removed over a few runs
_STALE = 86400.0  # seconds a file being written ("." first) may take


@dataclass
class InboxCollection:
    accepted: list[FeedbackReport] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """one line each, escaped"""
    waiting: int = 0
    """files left for the next collection"""
    dropped: int = 0
    """queued feedback dropped past the queue's bound"""


class _Refused(Exception):
    pass


def _writers(inbox_fd: int, root: InstallRoot) -> tuple[set[int], int | None]:
    """Who may write feedback: root, the root's owner, the updater's user; and the folder's
    group, when an administrator gave it the folder (group-writable)."""
    users = {0, os.stat(root.path).st_uid, os.getuid()}
    st = os.fstat(inbox_fd)
    return users, st.st_gid if st.st_mode & stat.S_IWGRP else None


def _may_write(uid: int, users: set[int], group: int | None) -> bool:
    if uid in users:
        return True
    if group is None:
        return False
    try:
        user = pwd.getpwuid(uid)
        return user.pw_gid == group or user.pw_name in grp.getgrgid(group).gr_mem
    except KeyError:
        return False


def _read(fd: int, name: str, users: set[int], group: int | None
          ) -> tuple[str, bool, float, str]:
    """The text, the consent to logs, the time of one inbox file, and the id its feedback
    takes (from the file itself: collected again after a kill, it is the same feedback).

    Raises:
        _Refused: why it is refused, in a few words.
    """
    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise _Refused("a symbolic link (never followed)")
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("not a regular file")
    if st.st_nlink != 1:
        raise _Refused(f"a file with {st.st_nlink} hard links")
    if not _may_write(st.st_uid, users, group):
        raise _Refused(f"owned by uid {st.st_uid}, who may not write feedback here")
    if st.st_size > INBOX_FILE_MAX:
        raise _Refused(f"{st.st_size} bytes, over the {INBOX_FILE_MAX} an inbox file may hold")
    try:
        file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                       dir_fd=fd)
    except OSError as e:
        raise _Refused("a symbolic link (never followed)" if e.errno == errno.ELOOP
                       else f"cannot be read: {e.strerror}") from None
    try:
        opened = os.fstat(file)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            raise _Refused("replaced while it was read")
        data = b""
        while len(data) <= INBOX_FILE_MAX and (chunk := os.read(file, 65536)):
            data += chunk
    finally:
        os.close(file)
    if len(data) > INBOX_FILE_MAX:
        raise _Refused(f"over the {INBOX_FILE_MAX} bytes an inbox file may hold")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Refused("not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise _Refused("not JSON") from None
    text = document.get("text") if isinstance(document, dict) else None
    logs = document.get("logs", False) if isinstance(document, dict) else None
    if not isinstance(text, str) or not isinstance(logs, bool):
        raise _Refused('not {"text": "...", "logs": false}')
    if not text.strip():
        raise _Refused("its text is empty")
    now = time.time()
    ident = hashlib.sha256(f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{name}".encode()
                           + data).hexdigest()[:32]
    return text, logs, st.st_mtime if now - 366 * 86400 < st.st_mtime <= now else now, ident


def _said(name: str) -> str:
    return f"inbox file {printable(name, 80)}"


def _remove(fd: int, name: str) -> None:
    """Take `name` out of the inbox (a folder someone made there with what is in it, never
    following a link); what cannot be removed is refused again at the next collection."""
    try:
        os.unlink(name, dir_fd=fd)
    except IsADirectoryError:
        _remove_folder(fd, name)
    except PermissionError:  # Linux answers EPERM, not EISDIR, to unlink() on a folder
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                _remove_folder(fd, name)
    except OSError:
        pass


def _remove_folder(fd: int, name: str) -> None:
    """A folder someone made in the inbox, removed as far as can be (one nested deeper than
    the interpreter's recursion allows stays, refused again next time, never a crash)."""
    with contextlib.suppress(OSError, RecursionError):
        shutil.rmtree(name, dir_fd=fd, ignore_errors=True)


def collect_inbox(root: InstallRoot) -> InboxCollection:
    """Take what the product's UI left in its inbox (see the module's rules): each good file
    queued as a feedback of source `inbox`, each bad one refused in one line; all removed.

    Raises:
        ConfigError: not an installation root.
        StoreError: the inbox is not a folder of the root's owner, or the outbox could not be
            written.
        OSError: the inbox or state/feedback/ could not be read or written.
    """
    root.require()
    inbox = ensure_inbox(root)
    found = InboxCollection()
    try:
        with feedback_lock(root):
            fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                _collect(root, fd, found)
            finally:
                os.close(fd)
    except BusyError:
        pass  # another updater is collecting: it takes them
    return found


def _collect(root: InstallRoot, fd: int, found: InboxCollection) -> None:
    users, group = _writers(fd, root)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    accepted = inbox_accepted(root, day)
    today = INBOX_DAY_MAX - accepted  # past it, a flood: removed unread
    queue = INBOX_QUEUE_MAX - len(queued_feedback(root, "inbox"))  # past it, files wait
    with os.scandir(fd) as listing:
        names = []
        for entry in listing:
            names.append(entry.name)
            if len(names) >= _LOOKED_AT:
                break
    read = flooded = 0
    for name in sorted(names):
        if name.startswith("."):
            with contextlib.suppress(OSError):
                age = time.time() - os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime
                if age > _STALE or age < -60:  # a day old, or dated ahead: never finished
                    found.refused.append(f"{_said(name)}: left unfinished for a day; removed")
                    _remove(fd, name)
            continue
        if today <= 0:
            _remove(fd, name)
            flooded += 1
            continue
        if queue <= 0 or read >= INBOX_RUN_MAX:
            found.waiting += 1  # kept for a collection once the queue has room
            continue
        read += 1
        try:
            text, logs, at, ident = _read(fd, name, users, group)
            report, dropped = submit_feedback(root, text, logs, "inbox",
                                              datetime.fromtimestamp(at, UTC), ident)
        except _Refused as why:
            found.refused.append(f"{_said(name)} refused: {why}; removed")
            _remove(fd, name)
            continue
        except FileNotFoundError:
            continue  # taken away meanwhile
        except OSError as e:
            found.refused.append(f"{_said(name)} refused: {e.strerror or e}; removed")
            _remove(fd, name)
            continue
        except Exception as e:  # one file never stops the others, nor the person's own
            found.refused.append(f"{_said(name)} refused: {type(e).__name__}: "
                                 f"{printable(str(e).splitlines()[0] if str(e) else '', 160)}"
                                 "; removed")
            _remove(fd, name)
            continue
        found.accepted.append(report)
        found.dropped += dropped
        today -= 1
        queue -= 1
        accepted += 1
        set_inbox_accepted(root, day, accepted)  # before the file goes: never taken twice
        _remove(fd, name)
    if flooded:
        found.refused.append(
            f"{flooded} inbox file{'s' if flooded > 1 else ''} refused unread and removed: at "
            f"most {INBOX_DAY_MAX} are taken a day (is the product's UI writing in a loop?)")
