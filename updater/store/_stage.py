"""Staging a release: its verified archives unpacked into `releases/<key>/`.

Each component goes to `releases/<key>/<component>/`, next to a `release.json` manifest; an
archive whose members all sit under one top folder has it stripped (the channel file records
which, `strip_prefix`). Work happens in `releases/.staging-<key>` and one rename publishes it,
so a release folder with a manifest is always complete. The key names the release's bytes, so
a folder is never replaced by other bytes.
"""

import errno
import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from greenlight.channels import (
    ChannelFile,
    Region,
    atomic_write,
    extract,
    fsync_dir,
    now,
    remove_path,
)
from greenlight.updater._errors import GreenlightError, StoreError
from greenlight.updater.store._root import (
    FILE_LISTS,
    PRODUCT_MANIFEST,
    RELEASE_MANIFEST,
    InstallRoot,
    ReleaseManifest,
)

__all__ = ["stage_release"]


def stage_release(root: InstallRoot, channel_file: ChannelFile,
                  archives: Mapping[str, Path | Region], product: bytes | None = None,
                  file_lists: Mapping[str, bytes] | None = None,
                  staging: Path | None = None, installed_at: datetime | None = None) -> Path:
    """Unpack a verified release's archives into releases/<key>/ (nothing, when a release of the
    same identity is there), with its verified product manifest `product` as product.toml and
    its components' verified `file_lists` in FILE_LISTS/; return its folder. With `staging`,
    the release is unpacked there and left for the caller (a repair swaps it in, and keeps
    the `installed_at` of the tree it replaces).

    Raises:
        ArchiveError: an archive refused; the staging folder is removed.
        StoreError: the folder holds other bytes under this key, or the disk is full or not
            writable; the staging folder is removed.
    """
    version, key = channel_file.release, channel_file.identity.key
    final = root.release_dir(key)
    existing = root.manifest(key)
    if existing is not None and staging is None:
        if existing.identity == channel_file.identity:
            return final
        raise StoreError(f"{final}: holds release {existing.identity.digest} under the key "
                         f"of {channel_file.identity.digest}; remove that folder by hand")
    leave = staging is not None
    staging = staging or root.releases / f".staging-{key}"
    remove_path(staging)
    lists = dict(file_lists or {})
    try:
        for name, archive in sorted(archives.items()):
            extract(archive, staging / name, strip=channel_file.components[name].strip_prefix)
        manifest = ReleaseManifest(
            version=version,
            channel=channel_file.channel,
            components=channel_file.components,
            manifest=channel_file.manifest,
            installed_at=installed_at or now(),
            file_lists={name: hashlib.sha256(data).hexdigest() for name, data in lists.items()},
            requires=channel_file.requires,
        )
        if product is not None:
            atomic_write(staging / PRODUCT_MANIFEST, product)
        for name, data in sorted(lists.items()):
            (staging / FILE_LISTS).mkdir(exist_ok=True)
            atomic_write(staging / FILE_LISTS / f"{name}.json", data)
        atomic_write(staging / RELEASE_MANIFEST, manifest.model_dump_json(indent=2).encode())
        fsync_dir(staging)
        if leave:
            return staging
        if final.exists():
            # A folder of this key without its manifest: left half-made, never the current one.
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
