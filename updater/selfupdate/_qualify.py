"""`updater qualify`: a new Greenlight proves, before it takes over, that it can act on this
root as it stands. It runs as the updater, read-only (it writes nothing, takes no lock and
fetches nothing), and loads what every command of it would load:

- the machine's configuration (greenlight.toml);
- the trusted metadata (root.json verified by its own keys, as ngclient loads it, and every
  other file of the cache parsed);
- every state file: the active channel, hold, pin, quarantine, journal, history, status,
  the updater record;
- the installed release's record and its signed product manifest, layered over the
  machine's configuration;
- the current channel's verified entry, which it must be able to act on (its `requires`).

Each is one check, with what it found; the report is `greenlight.qualify/1`.
"""

from collections.abc import Callable
from pathlib import Path

from greenlight.channels import VERSION, ChannelFile, is_newer
from greenlight.updater.output import QualifyCheck, QualifyReport
from greenlight.updater.store import InstallRoot

__all__ = ["qualify"]


def _config(root: InstallRoot) -> str:
    from greenlight.updater.product import Config

    config = Config.load(root.require().config_path)
    return f"channel {config.channel}, backend {config.backend}"


def _metadata(root: InstallRoot) -> str:
    """The trusted root as ngclient loads it (signed by its own keys to its threshold), and
    every other file of the cache parsed; nothing written (ngclient's constructor rewrites
    root.json, so it is not used here)."""
    from tuf.api.metadata import Metadata, Root

    trusted = Metadata[Root].from_bytes((root.metadata_dir / "root.json").read_bytes())
    trusted.signed.verify_delegate(Root.type, trusted.signed_bytes, trusted.signatures)
    files = sorted(p for p in root.metadata_dir.glob("*.json"))
    for path in files:
        Metadata.from_bytes(path.read_bytes())
    return f"root v{trusted.signed.version}, {len(files)} metadata files"


def _state(root: InstallRoot) -> str:
    from greenlight.updater.store import (
        Journal,
        active_channel,
        history,
        hold_of,
        pin_of,
        quarantine,
        read_status,
        read_updaters,
    )

    active = active_channel(root)
    hold_of(root)
    pin_of(root)
    held = quarantine(root)
    journal = Journal.load(root)
    events = history(root)
    read_status(root)
    read_updaters(root)
    return (f"active channel {active.channel}, {len(held)} quarantined, {len(events)} history "
            f"entries, {'a journal' if journal else 'no journal'}")


def _release(root: InstallRoot) -> str:
    from greenlight.channels import version_of
    from greenlight.updater.product import Config, layered, load_manifest
    from greenlight.updater.store import PRODUCT_MANIFEST

    key = root.installed_release()
    if key is None:
        return "nothing installed"
    if root.manifest(key) is None:
        raise ValueError(f"releases/{key}: no release.json")
    path = root.release_dir(key) / PRODUCT_MANIFEST
    manifest = load_manifest(path.read_text(), str(path)) if path.exists() else None
    layered(Config.load(root.config_path), manifest, version_of(key))
    return f"{key}" + (" with its manifest" if manifest else "")


def _channel(root: InstallRoot) -> str:
    from greenlight.updater.store import active_channel

    channel = active_channel(root).channel
    path = root.channels_dir / f"{channel}.json"
    if not path.exists():
        return f"no entry of {channel} kept yet"
    entry = ChannelFile.from_json(path.read_bytes(), str(path))
    if entry.requires is not None and is_newer(entry.requires, VERSION):
        raise ValueError(f"{channel} {entry.release} needs Greenlight >= {entry.requires}")
    return f"{channel} {entry.release}"


CHECKS: list[tuple[str, Callable[[InstallRoot], str]]] = [
    ("configuration", _config), ("metadata", _metadata), ("state", _state),
    ("release", _release), ("channel", _channel)]


def qualify(root_path: Path) -> QualifyReport:
    """Every check, each caught: a failure is a result, never a crash."""
    root = InstallRoot(root_path)
    checks = []
    for name, check in CHECKS:
        try:
            checks.append(QualifyCheck(name=name, ok=True, detail=check(root)))
        except Exception as e:  # noqa: BLE001 - whatever stops it here fails qualification
            detail = " ".join(str(e).split())[:300] or type(e).__name__
            checks.append(QualifyCheck(name=name, ok=False,
                                       detail=f"{type(e).__name__}: {detail}"))
    return QualifyReport(root=str(root.path), version=VERSION,
                         ok=all(c.ok for c in checks), checks=checks)
