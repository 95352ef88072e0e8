"""`state/quarantine.json`: releases that failed here and are never installed automatically."""

import json
from datetime import datetime

from pydantic import ValidationError

from greenlight.channels import Record, atomic_write
from greenlight.updater._errors import StoreError
from greenlight.updater.store._root import InstallRoot

__all__ = ["QuarantineEntry", "add_to_quarantine", "quarantine"]


class QuarantineEntry(Record):
    version: str
    channel: str
    reason: str
    at: datetime


def quarantine(root: InstallRoot) -> dict[str, QuarantineEntry]:
    """The quarantined releases by version.

    Raises:
        StoreError: the file is damaged.
    """
    path = root.state / "quarantine.json"
    try:
        raw = json.loads(path.read_text())
        return {v: QuarantineEntry.model_validate(e) for v, e in raw.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, ValidationError, AttributeError):
        raise StoreError(f"{path}: damaged quarantine list") from None


def add_to_quarantine(root: InstallRoot, entry: QuarantineEntry) -> None:
    entries = quarantine(root)
    entries[entry.version] = entry
    data = {v: e.model_dump(mode="json") for v, e in entries.items()}
    atomic_write(root.state / "quarantine.json", json.dumps(data, indent=2).encode(), mode=0o600)
