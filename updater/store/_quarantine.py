"""`state/quarantine.json`: releases that failed here and are never installed automatically.

An entry names a release by identity (its version and digest), so a relabelled release cannot
hold back the real release of that version. A person can lift an entry (`updater quarantine
clear`); the history records who did and when.
"""

import json
from datetime import datetime
from pathlib import Path

from pydantic import Field, ValidationError

from greenlight.channels import Record, ReleaseId, atomic_write
from greenlight.updater._errors import StoreError
from greenlight.updater.store._root import InstallRoot

__all__ = ["QuarantineEntry", "add_to_quarantine", "lift_quarantine", "quarantine"]


class QuarantineEntry(Record):
    version: str
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    channel: str
    reason: str
    at: datetime

    @property
    def identity(self) -> ReleaseId:
        return ReleaseId(self.version, self.digest)

    @classmethod
    def of(cls, release: ReleaseId, channel: str, reason: str, at: datetime) -> "QuarantineEntry":
        return cls(version=release.version, digest=release.digest, channel=channel,
                   reason=reason, at=at)


def _path(root: InstallRoot) -> Path:
    return root.state / "quarantine.json"


def quarantine(root: InstallRoot) -> dict[ReleaseId, QuarantineEntry]:
    """The quarantined releases by identity.

    Raises:
        StoreError: the file is damaged.
    """
    path = _path(root)
    try:
        raw = json.loads(path.read_text())
        entries = [QuarantineEntry.model_validate(e) for e in raw.values()]
    except FileNotFoundError:
        return {}
    except (ValueError, ValidationError, AttributeError, TypeError):
        raise StoreError(f"{path}: damaged quarantine list") from None
    return {e.identity: e for e in entries}


def _save(root: InstallRoot, entries: dict[ReleaseId, QuarantineEntry]) -> None:
    data = {i.key: e.model_dump(mode="json") for i, e in entries.items()}
    atomic_write(_path(root), (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)


def add_to_quarantine(root: InstallRoot, entry: QuarantineEntry) -> None:
    entries = quarantine(root)
    entries[entry.identity] = entry
    _save(root, entries)


def lift_quarantine(root: InstallRoot, release: str) -> list[QuarantineEntry]:
    """Lift the entries `release` names: a version (every release of it) or a release key
    (`1.2@3f2a9c1d4e5f`, one of them). Returns what was lifted."""
    entries = quarantine(root)
    lifted = [e for i, e in entries.items() if release in (i.version, i.key)]
    if lifted:
        _save(root, {i: e for i, e in entries.items() if e not in lifted})
    return lifted
