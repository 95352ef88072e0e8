"""Greenlight's own versions on a machine, side by side (`<root>/updater/`), and which one
`bin/updater` enters (`state/updater.json`).

```
<root>/bin/updater               the one entry point: a link to updater/<version>/updater
<root>/updater/<version>/updater  each version's one-file executable
<root>/state/updater.json         greenlight.updater-state/1: active, previous, pending,
                                  probation, quarantined versions
```

A root whose `bin/updater` is such a link is *managed*: Greenlight moves it (`kind` "exe").
Any other `bin/updater` (a script that runs a Python environment's updater, or a copy of an
offline installer made before 0.3.0) is moved by what put it there (`kind` "python": its
package manager; "copy": a newer offline installer, which makes the root managed).

`state/updater.json` is the record; `bin/updater` follows it. An activation writes the
version it moves to as `pending` (fsync'd) before it turns the link, and clears it after;
`settle` finishes or undoes one a crash interrupted, by where the link points.
"""

import hashlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from greenlight.channels import (
    Record,
    atomic_symlink,
    atomic_write,
    fsync_dir,
    now,
    remove_path,
)
from greenlight.updater._errors import StoreError
from greenlight.updater.store._root import InstallRoot

__all__ = ["PROBATION_CYCLES", "UPDATER_SCHEMA", "GreenlightInfo", "Kind", "QuarantinedUpdater",
           "UpdaterState", "UpdaterVersion", "entry_point", "exe_path", "fsync_tree",
           "greenlight_info", "greenlight_kind", "managed_version", "quarantine_record",
           "read_updaters", "real_folder", "settle", "sha256_of", "turn_link", "unsettled",
           "write_updaters"]

UPDATER_SCHEMA = "greenlight.updater-state/1"
PROBATION_CYCLES = 2
"""Agent cycles a newly activated version must end without a crash or an internal error
before it is trusted (and the one before it may be removed)."""

EXE = "updater.exe" if sys.platform == "win32" else "updater"
Kind = Literal["exe", "python", "copy", "none"]


class UpdaterVersion(Record):
    version: str = Field(pattern=r"^[0-9A-Za-z.+-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """the executable's own bytes (checked before it is entered again)"""
    key: str | None = Field(default=None, pattern=r"^[0-9A-Za-z.+-]{1,64}@[0-9a-f]{12}$")
    """the updater release it came from (version@digest), as fleet reports name it"""

    @property
    def release_key(self) -> str:
        return self.key or f"{self.version}@{self.sha256[:12]}"


class QuarantinedUpdater(UpdaterVersion):
    reason: str
    at: datetime


class UpdaterState(Record):
    schema_: Literal["greenlight.updater-state/1"] = Field("greenlight.updater-state/1",
                                                           alias="schema")
    active: UpdaterVersion | None = None
    previous: UpdaterVersion | None = None
    pending: UpdaterVersion | None = None
    """an activation under way: the version bin/updater is being moved to"""
    probation: int = 0
    """cycles the active version still has to end cleanly before it is trusted"""
    strikes: int = 0
    """cycles in a row the active version on probation ended in an error"""
    since: datetime | None = None
    quarantined: list[QuarantinedUpdater] = []

    model_config = {**Record.model_config, "populate_by_name": True}

    def is_quarantined(self, version: str, key: str | None = None) -> str | None:
        """Why `version` is quarantined here, if it is: the release of that `key` (its
        version@digest, when both are known; a republished build of the version is another
        release), else any of that version."""
        for q in self.quarantined:
            if q.version == version and (key is None or q.key is None or q.key == key):
                return q.reason
        return None

    def lifted(self, version: str) -> "UpdaterState":
        return self.model_copy(update={"quarantined": [
            q for q in self.quarantined if q.version != version]})


class GreenlightInfo(Record):
    """Greenlight itself on this machine: the version running, how it is installed (which
    says what moves it), and its versions side by side."""

    version: str = Field(description="the version that wrote this report")
    kind: Literal["exe", "python", "copy", "none"] = Field(
        description="exe: a one-file executable Greenlight moves itself (bin/updater enters "
                    "updater/<version>/); python: a Python environment, moved by its package "
                    "manager; copy: an offline installer's copy from before 0.3.0, moved by a "
                    "newer installer; none: no bin/updater")
    active: str | None = Field(default=None, description="the version bin/updater enters")
    previous: str | None = Field(default=None, description="the fallback version kept")
    probation: int = Field(default=0, description="clean agent cycles the active version "
                                                  "still owes before it is trusted")
    quarantined: dict[str, str] = Field(
        default_factory=dict, description="Greenlight version -> why it was put aside here")


def greenlight_info(root: InstallRoot) -> GreenlightInfo:
    """What status says of Greenlight itself; never raises (a damaged record reads empty)."""
    from greenlight.channels import VERSION

    try:
        state = read_updaters(root)
    except StoreError:
        state = UpdaterState()
    return GreenlightInfo(
        version=VERSION, kind=greenlight_kind(root),
        active=managed_version(root), previous=state.previous.version if state.previous else None,
        probation=state.probation,
        quarantined={q.version: q.reason for q in state.quarantined})


def _path(root: InstallRoot) -> Path:
    return root.state / "updater.json"


def entry_point(root: InstallRoot) -> Path:
    return root.path / "bin" / EXE


def exe_path(root: InstallRoot, version: str) -> Path:
    return root.path / "updater" / version / EXE


def read_updaters(root: InstallRoot) -> UpdaterState:
    """The record; an empty one for a root that never had a managed updater.

    Raises:
        StoreError: the file is damaged.
    """
    path = _path(root)
    try:
        return UpdaterState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return UpdaterState()
    except (OSError, ValidationError, ValueError) as e:
        raise StoreError(f"{path}: damaged ({type(e).__name__}); remove it and run "
                         "'updater self-update' to start over") from None


def write_updaters(root: InstallRoot, state: UpdaterState) -> None:
    atomic_write(_path(root), state.model_dump_json(by_alias=True, indent=2).encode())


def managed_version(root: InstallRoot) -> str | None:
    """The version bin/updater enters, when it is a link into updater/; None otherwise."""
    try:
        target = os.readlink(entry_point(root))
    except OSError:
        return None
    parts = Path(target).parts
    if len(parts) == 4 and parts[0] == ".." and parts[1] == "updater" and parts[3] == EXE:
        return parts[2]
    return None


def greenlight_kind(root: InstallRoot) -> Kind:
    """How this root's Greenlight is installed, and so what moves it: "exe" (a managed one-file
    executable: Greenlight itself), "copy" (an installer's copy of itself, made managed at its
    first self-update), "python" (a Python environment: its package manager), "none"."""
    if managed_version(root) is not None:
        return "exe"
    point = entry_point(root)
    try:
        head = point.open("rb").read(2)
    except OSError:
        return "none"
    return "python" if head == b"#!" else "copy"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def real_folder(path: Path) -> Path:
    """A folder of the root Greenlight writes in (`bin/`, `updater/`, a version's), made if
    missing; never one reached through a link planted in its place.

    Raises:
        StoreError: a link or a file sits where the folder is.
    """
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise StoreError(f"{path}: not a folder (a link or a file is in its place); remove it")
    path.mkdir(mode=0o755, exist_ok=True)
    return path


def turn_link(root: InstallRoot, version: str) -> None:
    """Point bin/updater at `version`'s executable, in one rename.

    Raises:
        StoreError: bin/ is not a folder of the root's own.
    """
    point = entry_point(root)
    real_folder(point.parent)
    atomic_symlink(point, f"../updater/{version}/{EXE}")


def _intact(root: InstallRoot, v: UpdaterVersion | None) -> bool:
    if v is None:
        return False
    try:
        return sha256_of(exe_path(root, v.version)) == v.sha256
    except OSError:
        return False


def unsettled(root: InstallRoot) -> bool:
    """Whether `settle` has anything to do (cheap: the record and one readlink)."""
    if entry_point(root).with_name(f".{EXE}.new").is_symlink():
        return True
    try:
        state = read_updaters(root)
    except StoreError:
        return False
    return state.pending is not None or (
        state.active is not None and managed_version(root) != state.active.version
        and exe_path(root, state.active.version).is_file())


def settle(root: InstallRoot) -> str | None:
    """Finish or undo an activation a crash interrupted, and put bin/updater back where the
    record says; a line saying what was done, or None when nothing was needed.

    An activation is finished when bin/updater already enters the pending version (its
    executable intact): the link was turned, only the record was not written. Otherwise it
    is undone: the record's active version stays, and bin/updater is pointed back at it.
    """
    try:
        state = read_updaters(root)
    except StoreError:
        return None  # said by the commands that read it
    bin_folder, folder = entry_point(root).parent, root.path / "updater"
    if bin_folder.is_symlink() or folder.is_symlink():
        return None  # a planted link: every command that writes there refuses it
    leftover = entry_point(root).with_name(f".{EXE}.new")
    if leftover.is_symlink() or leftover.exists():
        leftover.unlink()
    if folder.is_dir():
        for part in folder.iterdir():
            if part.name.startswith((".staging-", ".updater.part")):
                remove_path(part)
    if state.pending is None and state.active is None:
        return None
    linked = managed_version(root)
    said = None
    pending, active = state.pending, state.active
    falling_back = (pending is not None and active is not None and _intact(root, pending)
                    and state.is_quarantined(active.version, active.key) is not None)
    if falling_back and pending is not None and linked != pending.version:
        turn_link(root, pending.version)  # a fall-back is finished, never undone
        linked = pending.version
    if pending is not None:
        if linked == pending.version and _intact(root, pending):
            said = f"Greenlight's activation of {pending.version} was finished"
            back = active is not None and state.is_quarantined(active.version,
                                                                active.key) is not None
            state = state.model_copy(update={  # a fall-back keeps no fallback to the bad one
                "previous": None if back else active, "active": pending, "pending": None,
                "probation": 0 if back else PROBATION_CYCLES, "since": now()})
        else:
            kept = active.version if active is not None else "the one before"
            said = f"Greenlight's activation of {pending.version} was undone; {kept} stays"
            state = state.model_copy(update={"pending": None})
        write_updaters(root, state)
    if state.previous is not None and state.is_quarantined(state.previous.version,
                                                           state.previous.key):
        state = state.model_copy(update={"previous": None, "probation": 0})
        write_updaters(root, state)
    if (state.active is not None and managed_version(root) != state.active.version
            and _intact(root, state.active)):
        turn_link(root, state.active.version)
        said = said or f"bin/updater pointed back at Greenlight {state.active.version}"
    return said


def fsync_tree(path: Path) -> None:
    """Every file and folder under `path` on disk (before it is renamed into place)."""
    for folder, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def quarantine_record(state: UpdaterState, v: UpdaterVersion, reason: str,
                      at: datetime) -> list[QuarantinedUpdater]:
    """`state`'s quarantine with `v` in it (once)."""
    kept = [q for q in state.quarantined if (q.version, q.key) != (v.version, v.key)]
    return [*kept, QuarantinedUpdater(version=v.version, sha256=v.sha256, key=v.key,
                                      reason=reason, at=at)]
