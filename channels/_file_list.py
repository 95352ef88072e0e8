"""A release's file list: each path a component unpacks to, with its type, size, mode and
sha256, signed as a target of its own beside the component's archive.

`release publish` unpacks each archive exactly as a machine does and lists the tree; the list
is a target named by the archive's hash (`files_target`), so a channel file needs no new
field and every release published before simply has none. `updater verify` compares an
installed tree with it (`compare`), the way `rpm -V` compares a package with its database.

Modes are the ones unpacking sets (0755 for an executable, 0644 for any other file); a folder
is listed by its type only, since its mode follows the machine's umask.
"""

import hashlib
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import Field

from greenlight.channels._records import Record

__all__ = ["FILES_SCHEMA", "Difference", "FileEntry", "FileList", "compare", "files_target",
           "list_tree"]

FILES_SCHEMA = "greenlight.files/1"
_BLOCK = 1 << 20


class FileEntry(Record):
    type: Literal["file", "link", "dir"]
    size: int | None = Field(default=None, ge=0, description="a file's bytes")
    mode: str | None = Field(default=None, pattern=r"^0[0-7]{3}$", description="a file's mode")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    target: str | None = Field(default=None, description="a link's target")


class FileList(Record):
    schema_: Literal["greenlight.files/1"] = Field("greenlight.files/1", alias="schema")
    artifact: str = Field(pattern=r"^[0-9a-f]{64}$", description="the archive listed")
    entries: dict[str, FileEntry]


class Difference(Record):
    kind: Literal["changed", "missing", "extra"]
    path: str
    what: str = Field("", description="for a change: content, size, mode, type or target")


def files_target(component: str, version: str, artifact_sha256: str) -> str:
    """The file list of a component's archive, among the artifacts (`_files` is no
    component's name; three levels below, as the artifacts role's paths say), named by the
    archive's hash."""
    return f"artifacts/_files/{version}/{component}-{artifact_sha256[:16]}.json"


def _walk(top: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry below `top`, links never followed, in a stable order."""
    stack = [("", top)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = f"{prefix}{entry.name}"
            yield name, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append((name + "/", Path(entry.path)))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb", buffering=0) as f:
        while block := f.read(_BLOCK):
            digest.update(block)  # lets go of the GIL: two files hash at once
    return digest.hexdigest()


def list_tree(top: Path, hash_files: bool = True) -> dict[str, FileEntry]:
    """The tree below `top` as file-list entries, the files hashed two at a time."""
    entries: dict[str, FileEntry] = {}
    files: list[tuple[str, str, os.stat_result]] = []
    for name, entry in _walk(top):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            entries[name] = FileEntry(type="link", target=os.readlink(entry.path))
        elif stat.S_ISDIR(st.st_mode):
            entries[name] = FileEntry(type="dir")
        elif stat.S_ISREG(st.st_mode):
            files.append((name, entry.path, st))
        else:  # a device or FIFO: never unpacked, so always a difference
            entries[name] = FileEntry(type="file", size=0, mode="0000")
    digests: list[str | None] = [None] * len(files)
    if hash_files:
        with ThreadPoolExecutor(2) as pool:
            digests = list(pool.map(lambda f: _sha256(f[1]), files))
    for (name, _, st), digest in zip(files, digests, strict=True):
        entries[name] = FileEntry(type="file", size=st.st_size,
                                  mode=f"0{stat.S_IMODE(st.st_mode):03o}", sha256=digest)
    return dict(sorted(entries.items()))


def compare(expected: dict[str, FileEntry], top: Path) -> list[Difference]:
    """How the tree below `top` differs from `expected`: each path changed (and in what),
    missing or extra. A file is hashed only when its type, size and mode match."""
    if not top.is_dir() or top.is_symlink():
        return [Difference(kind="missing", path=".")]
    found = list_tree(top, hash_files=False)
    differences: list[Difference] = []
    to_hash: list[str] = []
    for name, want in expected.items():
        have = found.get(name)
        if have is None:
            differences.append(Difference(kind="missing", path=name))
        elif have.type != want.type:
            differences.append(Difference(kind="changed", path=name, what="type"))
        elif want.type == "link" and have.target != want.target:
            differences.append(Difference(kind="changed", path=name, what="target"))
        elif want.type == "file" and have.size != want.size:
            differences.append(Difference(kind="changed", path=name, what="size"))
        elif want.type == "file" and have.mode != want.mode:
            differences.append(Difference(kind="changed", path=name, what="mode"))
        elif want.type == "file":
            to_hash.append(name)
    with ThreadPoolExecutor(2) as pool:
        for name, digest in zip(to_hash, pool.map(lambda n: _sha256(str(top / n)), to_hash),
                                strict=True):
            if digest != expected[name].sha256:
                differences.append(Difference(kind="changed", path=name, what="content"))
    differences += [Difference(kind="extra", path=name) for name in found
                    if name not in expected]
    return sorted(differences, key=lambda d: d.path)
