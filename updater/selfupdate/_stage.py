"""Greenlight's versions on disk: a new one unpacked beside the others (`stage`), this very
executable copied in (`copy_in`, for the offline installer), and those left behind removed
(`prune`). Every folder is the root's own (a link planted in its place is refused), every
file is created anew (never written through a link), and all is on disk before it is named."""

import os
import shutil
from pathlib import Path

from greenlight.channels import fsync_dir, remove_path
from greenlight.updater._errors import ArchiveError
from greenlight.updater.selfupdate._find import Candidate
from greenlight.updater.store import (
    InstallRoot,
    Limits,
    UpdaterState,
    UpdaterVersion,
    entry_point,
    exe_path,
    extract,
    fsync_tree,
    real_folder,
    sha256_of,
)
from greenlight.updater.trust import Downloads, TrustedRepository

__all__ = ["copy_in", "prune", "stage"]


def _versions(root: InstallRoot) -> Path:
    real_folder(entry_point(root).parent)
    return real_folder(root.path / "updater")


def stage(root: InstallRoot, repo: TrustedRepository, found: Candidate) -> UpdaterVersion:
    """The new version's executable in updater/<version>/, whole and synced.

    Raises:
        TrustError, NetworkError: the artifact refused or unreachable.
        ArchiveError: the archive has no executable at its top.
        StoreError: a link or a file planted where a folder of the root is.
    """
    info = repo.artifact_info(found.component, found.artifact)
    archive = repo.download(info, Downloads(root.downloads))
    folder = _versions(root)
    staging = folder / f".staging-{found.version}-{os.getpid()}"
    remove_path(staging)  # a link planted there goes, never what it points at
    staging.mkdir(mode=0o755)  # made here, now: nothing is written through anything else
    try:
        extract(archive, staging, Limits(max_total_bytes=2 * 1024**3, max_members=64),
                found.artifact.strip_prefix)
        exe = staging / exe_path(root, found.version).name
        if exe.is_symlink() or not exe.is_file():
            raise ArchiveError(f"{found.artifact.target}: no file '{exe.name}' at its top: "
                               "not a Greenlight updater release")
        os.chmod(exe, 0o755)
        fsync_tree(staging)
        dest = folder / found.version
        remove_path(dest)
        os.replace(staging, dest)
        fsync_dir(folder)
    finally:
        remove_path(staging)
    return UpdaterVersion(version=found.version, sha256=sha256_of(exe_path(root, found.version)),
                          key=found.key)


def copy_in(root: InstallRoot, source: Path, version: str) -> UpdaterVersion:
    """`source` (the executable running now) as version `version`'s, synced."""
    home = exe_path(root, version)
    real_folder(_versions(root) / version)
    part = home.with_name(".updater.part")
    remove_path(part)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, home)
    fsync_dir(home.parent)
    fsync_dir(home.parent.parent)
    return UpdaterVersion(version=version, sha256=sha256_of(home))


def prune(root: InstallRoot, state: UpdaterState) -> None:
    """Versions left behind remove themselves: only the active one, its fallback and one
    under way stay."""
    keep = {v.version for v in (state.active, state.previous, state.pending) if v}
    folder = root.path / "updater"
    if folder.is_symlink() or not folder.is_dir():
        return
    for part in folder.iterdir():
        if part.name not in keep and not part.name.startswith("."):
            remove_path(part)
