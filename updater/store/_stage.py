"""Staging a release: its verified archives unpacked into `releases/<version>/`.

Each component goes to `releases/<version>/<component>/`, next to a `release.json` manifest.
Work happens in `releases/.staging-<version>` and one rename publishes it, so a release folder
with a manifest is always complete.
"""

import errno
from pathlib import Path

from greenlight.channels import ChannelFile, atomic_write, fsync_dir, now, remove_path
from greenlight.updater._errors import GreenlightError, StoreError
from greenlight.updater.store._extract import extract
from greenlight.updater.store._root import RELEASE_MANIFEST, InstallRoot, ReleaseManifest

__all__ = ["stage_release"]


def stage_release(root: InstallRoot, channel_file: ChannelFile, archives: dict[str, Path]) -> Path:
    version = channel_file.release
    final = root.release_dir(version)
    existing = root.manifest(version)
    if existing is not None and existing.components == channel_file.components:
        return final
    staging = root.releases / f".staging-{version}"
    remove_path(staging)
    try:
        for name, archive in sorted(archives.items()):
            extract(archive, staging / name)
        manifest = ReleaseManifest(
            version=version,
            channel=channel_file.channel,
            components=channel_file.components,
            installed_at=now(),
        )
        atomic_write(staging / RELEASE_MANIFEST, manifest.model_dump_json(indent=2).encode())
        if final.exists():
            # Same version, other bytes (re-published): keep the old aside until replaced.
            remove_path(final)
        staging.rename(final)
        fsync_dir(root.releases)
    except GreenlightError:
        remove_path(staging)
        raise
    except OSError as e:
        remove_path(staging)
        hint = " (disk full)" if e.errno == errno.ENOSPC else ""
        raise StoreError(f"{final}: cannot stage release {version}{hint}: {e.strerror}") from None
    return final
