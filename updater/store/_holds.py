"""`state/hold.json` and `state/pin.json`: a person's say over automatic updates.

A **hold** (`updater hold [--until DATE] [--reason TEXT]`) stops the agent from installing,
as snapd's `refresh --hold`; it never stops leaving a revoked release. A **pin**
(`updater pin VERSION`) keeps the machine on one version even when the channel moves, for the
agent and for `updater upgrade` alike; the pinned release is still verified, and left when it
is revoked. Both are plain files a UI may read; `updater unhold` and `updater unpin` end them.
"""

from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from greenlight.channels import Record, atomic_write, now
from greenlight.updater._errors import StoreError
from greenlight.updater.store._root import InstallRoot

__all__ = ["Hold", "Pin", "clear_hold", "clear_pin", "hold_of", "pin_of", "set_hold", "set_pin"]


class Hold(Record):
    since: datetime
    until: datetime | None = None
    reason: str = ""
    by: str = ""

    def active(self, at: datetime | None = None) -> bool:
        return self.until is None or (at or now()) < self.until


class Pin(Record):
    version: str
    since: datetime
    by: str = ""


def _read(path: Path, model: type[Hold] | type[Pin]) -> Hold | Pin | None:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as e:
        raise StoreError(f"{path}: damaged ({type(e).__name__}); remove it to start over") from None


def hold_of(root: InstallRoot, at: datetime | None = None) -> Hold | None:
    """The hold in force, if any (one past its `until` is over)."""
    hold = _read(root.state / "hold.json", Hold)
    assert hold is None or isinstance(hold, Hold)
    return hold if hold is not None and hold.active(at) else None


def _write(path: Path, record: Hold | Pin) -> None:
    atomic_write(path, record.model_dump_json(indent=2).encode(), mode=0o640)


def _remove(path: Path) -> bool:
    """Remove `path`; whether there was something to remove."""
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def set_hold(root: InstallRoot, until: datetime | None, reason: str, by: str) -> Hold:
    hold = Hold(since=now(), until=until, reason=reason, by=by)
    _write(root.state / "hold.json", hold)
    return hold


def clear_hold(root: InstallRoot) -> bool:
    return _remove(root.state / "hold.json")


def pin_of(root: InstallRoot) -> Pin | None:
    pin = _read(root.state / "pin.json", Pin)
    assert pin is None or isinstance(pin, Pin)
    return pin


def set_pin(root: InstallRoot, version: str, by: str) -> Pin:
    pin = Pin(version=version, since=now(), by=by)
    _write(root.state / "pin.json", pin)
    return pin


def clear_pin(root: InstallRoot) -> bool:
    return _remove(root.state / "pin.json")
