"""One transaction per installation root: `state/lock` (filelock) and `state/lock.owner`.

A second caller is told the holder's pid and command, and waits for nothing.
"""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from greenlight.channels import atomic_write, now
from greenlight.updater._errors import BusyError
from greenlight.updater.store._root import InstallRoot

__all__ = ["locked"]


@contextmanager
def locked(root: InstallRoot) -> Iterator[None]:
    """Hold the root's lock for the block.

    Raises:
        ConfigError: not an installation root; BusyError: another process holds it.
    """
    from filelock import FileLock, Timeout

    root.require()  # only an installation root has a lock to take
    root.state.mkdir(parents=True, exist_ok=True)
    owner = root.state / "lock.owner"
    lock = FileLock(str(root.state / "lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = json.loads(owner.read_text())
            who = f"pid {holder['pid']} ({holder['command']}, since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        raise BusyError(
            f"{root.path}: another updater holds this root: {who}; wait for it to finish"
        ) from None
    try:
        command = " ".join(["updater", *sys.argv[1:2]])
        atomic_write(owner, json.dumps({"pid": os.getpid(), "command": command,
                                        "since": str(now())}).encode(), mode=0o600)
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
