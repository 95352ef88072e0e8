"""`release sync REPO --to s3://BUCKET/PREFIX`: publish a repository to S3-compatible object
storage, in an order that keeps every client's view whole at every moment.

Object stores are not atomic across files, and a CDN in front caches. With consistent
snapshots every file but `timestamp.json` (and the unversioned `<role>.json` copies) is
named by its version or its hash and never changes, so the sync uploads, in phases:

1. targets (artifacts, deltas, channel files, rollout states);
2. root versions (`N.root.json`), so a new key is trusted before anything signed by it;
3. delegated metadata (`N.<role>.json`: channels, rollouts, artifacts, the bins);
4. `N.targets.json`;
5. `N.snapshot.json`;
6. the unversioned copies (`root.json`, `targets.json`, ...) for clients without
   consistent snapshots;
7. `timestamp.json`, last.

A client that reads mid-sync sees either the old timestamp, whose snapshot and everything
under it is still there, or the new one, whose every file was uploaded before it. Nothing
already published is overwritten but the mutable files of phases 6 and 7: an immutable name
that exists remotely with another size is refused. Versioned files and targets are sent with
`Cache-Control: public, max-age=31536000, immutable`; the mutable ones with
`max-age=<timestamp_max_age>`. A sync that stops anywhere (a crash, a network error) is simply
run again: what is there already is skipped, so it converges.

Only regular files under `metadata/` and `targets/` are synced (never the keys, `staged/` or
`repository.json`); a symbolic link there stops the sync before anything is uploaded.

Through obstore (Rust's object_store): measured against boto3 on moto's server, 300 small puts
took 1.6-1.9 s against 2.9-3.4 s, and it imports in 5-10 ms against 180-270 ms.
"""

import hashlib
import os
import re
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenlight.release._errors import Conflict, NotFound, ReleaseError, RemoteError, UsageError

__all__ = ["IMMUTABLE", "SyncResult", "Upload", "plan_sync", "sync"]

IMMUTABLE = "public, max-age=31536000, immutable"
_VERSIONED = re.compile(r"\A(\d+)\.(.+)\.json\Z")
_TOP = ("root", "targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class Upload:
    key: str
    """the object's name below the prefix: metadata/... or targets/..."""
    path: Path
    size: int
    immutable: bool


@dataclass
class SyncResult:
    url: str
    uploaded: list[str]
    skipped: int
    bytes: int


def _files(root: Path) -> list[tuple[str, Path, int]]:
    """Every regular file under `root`, as (relative key, path, size); a link anywhere, `root`
    itself included, refuses all."""
    found: list[tuple[str, Path, int]] = []
    try:
        top = root.lstat()
    except FileNotFoundError:
        return found
    if not stat.S_ISDIR(top.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(top.st_mode) else "not a folder"
        raise ReleaseError(f"{root} is {what}; refusing to sync (only regular files in real "
                           "folders are published)")
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs) + sorted(names):
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise ReleaseError(f"{path} is a symbolic link; refusing to sync (only regular "
                                   "files are published)")
            if stat.S_ISREG(st.st_mode):
                found.append((path.relative_to(root.parent).as_posix(), path, st.st_size))
    return found


def plan_sync(repo: Path) -> list[list[Upload]]:
    """The phases of a sync of `repo`, in the order they must reach the store.

    Raises:
        NotFound: no repository at `repo`.
        ReleaseError: a symbolic link in its tree (only regular files are published).
    """
    if not (repo / "metadata" / "root.json").is_file():
        raise NotFound(f"{repo}: no repository here")
    phases: list[list[Upload]] = [[] for _ in range(7)]
    for key, path, size in _files(repo / "targets"):
        phases[0].append(Upload(key, path, size, True))
    for key, path, size in _files(repo / "metadata"):
        name = path.name
        versioned = _VERSIONED.match(name)
        if key.count("/") != 1:
            continue  # nothing below metadata/ is published but its own files
        if versioned:
            role = versioned.group(2)
            index = {"root": 1, "targets": 3, "snapshot": 4}.get(role, 2)
            phases[index].append(Upload(key, path, size, True))
        elif name == "timestamp.json":
            phases[6].append(Upload(key, path, size, False))
        elif name.endswith(".json"):
            phases[5].append(Upload(key, path, size, False))
    for phase in phases:
        phase.sort(key=lambda u: (_version_of(u.key), u.key))
    return phases


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _version_of(key: str) -> int:
    match = _VERSIONED.match(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 0


def _store(url: str, endpoint: str | None, region: str | None) -> Any:
    from obstore.store import S3Store

    if not url.startswith("s3://") or len(url) <= 5:
        raise UsageError(f"--to {url!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    options: dict[str, Any] = {}
    if endpoint:
        options["endpoint"] = endpoint
    if region:
        options["region"] = region
    plain = bool(endpoint and endpoint.startswith("http://"))
    try:
        return S3Store.from_url(url.rstrip("/"),
                                client_options={"allow_http": True} if plain else None,
                                **options)
    except Exception as e:  # a malformed URL or configuration: one line
        raise RemoteError(f"--to {url}: {_first_line(e)}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _remote(store: Any, url: str) -> dict[str, tuple[int, str | None]]:
    """What the store holds already: {key: (size, etag)}."""
    import obstore

    held: dict[str, tuple[int, str | None]] = {}
    try:
        for batch in obstore.list(store):
            for meta in batch:
                held[str(meta["path"])] = (int(meta["size"]), meta.get("e_tag"))
    except Exception as e:
        raise RemoteError(f"cannot list {url}: {_first_line(e)}") from None
    return held


def sync(repo: Path, url: str, endpoint: str | None = None, region: str | None = None,
         timestamp_max_age: int = 60, jobs: int = 8, store: Any = None,
         uploaded: Callable[[str], None] | None = None) -> SyncResult:
    """Upload `repo` to `url` (s3://BUCKET[/PREFIX]) phase by phase; see the module.

    Raises:
        UsageError: the s3 extra is not installed. ReleaseError: a link in the repository.
    """
    try:
        import obstore
    except ModuleNotFoundError as e:
        raise UsageError(f"release sync needs its extra ({e.name} is missing): pip install "
                         "'greenlight-updater[s3]'") from None

    phases = plan_sync(repo)
    store = store if store is not None else _store(url, endpoint, region)
    remote = _remote(store, url)
    mutable = f"public, max-age={timestamp_max_age}"
    result = SyncResult(url=url, uploaded=[], skipped=0, bytes=0)

    def needed(u: Upload) -> bool:
        there = remote.get(u.key)
        if there is None:
            return True
        size, etag = there
        tag = (etag or "").strip('"')
        # Targets are named by their sha256: the size tells the rest. Metadata is small:
        # its md5 is compared with the object's (a single-part upload's ETag).
        same = size == u.size and (u.key.startswith("targets/") or "-" in tag or not tag
                                   or _md5(u.path) == tag)
        if u.immutable:
            if not same:
                raise Conflict(
                    f"{url}/{u.key} holds other bytes than {u.path}; a published version is "
                    "never overwritten (is this another repository's prefix?)")
            return False
        return not same

    def put(u: Upload) -> None:
        content_type = "application/json" if u.key.startswith("metadata/") else (
            "application/octet-stream")
        try:
            obstore.put(store, u.key, u.path, attributes={
                "Cache-Control": IMMUTABLE if u.immutable else mutable,
                "Content-Type": content_type})
        except Exception as e:
            raise RemoteError(f"cannot upload {u.key} to {url}: {_first_line(e)}; run the "
                               "sync again: what is there is kept") from None
        if uploaded is not None:
            uploaded(u.key)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for phase in phases:
            todo = [u for u in phase if needed(u)]
            result.skipped += len(phase) - len(todo)
            # A phase is whole before the next begins: the order is the safety.
            for u, _ in zip(todo, pool.map(put, todo), strict=True):
                result.uploaded.append(u.key)
                result.bytes += u.size
    return result
