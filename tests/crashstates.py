"""Power-loss crash states of a recorded run: ALICE's and CrashMonkey's method, bounded.

A kill -9 keeps everything the process wrote; a power cut keeps only what reached the disk.
This module records what an `updater` command does to its installation root, then builds each
state a power cut could leave under POSIX rules, for recovery to be run on.

Recording (`python crashstates.py record LOG ROOT -- ARGS...`) runs the updater's command line
in this process under an audit hook (`sys.addaudithook`) and with `os.fsync`/`os.fdatasync`
wrapped. Nothing of Greenlight is changed or told: every file the command creates, writes,
renames, links, removes or chmods under ROOT, every directory it makes or removes, and every
fsync (of a file or a directory) is an operation in the log, in program order. A file's bytes
and mode are read back whenever they changed, before the next operation (so the log holds
each content a file had between two operations). What the product's own processes write
(`logs/`) is not the updater's and is left out.

Building: for a crash after operation k, an operation is *persisted* when POSIX promises it:
a file's content and mode once the file was fsynced after it, a directory entry (create,
rename, link, unlink, mkdir, rmdir, symlink) once its parent directory was fsynced after it.
Anything else may be lost: an unsynced entry may or may not be there (`states` tries each one
lost alone, all lost, every in-order prefix, and every subset when there are few), an unsynced
file's content may be its last synced content (empty for a new file), the newest, empty
(the zero-length file a delayed allocation leaves), or torn (the new bytes' first half over
the old). The states are deduplicated by content;
their count is what a test reports.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Node", "Op", "State", "crash_states", "load", "materialize", "snapshot"]

_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_ENTRY_OPS = {"create", "mkdir", "rename", "link", "unlink", "rmdir", "symlink", "rmtree"}
SUBSETS_UP_TO = 3  # every subset of the unsynced entries when there are at most this many
SKIP = ("logs/",)  # the product's processes write there, not the updater


@dataclass(frozen=True)
class Op:
    kind: str  # write, fsync, fsync_dir, or one of _ENTRY_OPS
    path: str  # relative to the root
    other: str = ""  # rename/link: the destination; symlink: the target
    data: bytes = b""  # write: the whole content
    mode: int = 0o644  # write: the mode


# --- recording --------------------------------------------------------------------------------
class _Recorder:
    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.ops: list[Op] = []
        self.seen: dict[str, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, mode)
        self.dirty: set[str] = set()
        self.lock = threading.RLock()
        self.local = threading.local()
        self.last = -1  # the newest entry operation, until it is seen to have happened

    def rel(self, path: object) -> str | None:
        if isinstance(path, int):
            try:
                path = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str | os.PathLike):
            return None
        full = os.path.abspath(os.fspath(path))
        parent = os.path.realpath(os.path.dirname(full))
        full = os.path.join(parent, os.path.basename(full))
        if full == self.root:
            return ""
        if not full.startswith(self.root + os.sep):
            return None
        rel = full[len(self.root) + 1:]
        return None if rel.startswith(SKIP) else rel

    def full(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def flush(self) -> None:
        """Record the content of each file written since, as it is now."""
        for rel in sorted(self.dirty):
            try:
                st = os.lstat(self.full(rel))
            except OSError:
                self.dirty.discard(rel)
                continue
            if not stat.S_ISREG(st.st_mode):
                self.dirty.discard(rel)
                continue
            key = (st.st_size, st.st_mtime_ns, st.st_mode)
            if self.seen.get(rel) == key:
                continue
            self.seen[rel] = key
            try:
                with open(self.full(rel), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            self.ops.append(Op("write", rel, data=data, mode=stat.S_IMODE(st.st_mode)))

    def entry(self, kind: str, rel: str, other: str = "") -> None:
        self.flush()
        self.ops.append(Op(kind, rel, other))
        self.last = len(self.ops) - 1

    def confirm(self) -> None:
        """Drop the newest entry operation if it did not happen (an audit event comes before
        the call, which may fail: makedirs tries the child first, mkstemp may collide)."""
        if self.last < 0:
            return
        op, self.last = self.ops[self.last], -1
        there = os.path.lexists(self.full(op.path))
        happened = {
            "create": there, "mkdir": os.path.isdir(self.full(op.path)),
            "symlink": os.path.islink(self.full(op.path)),
            "rename": os.path.lexists(self.full(op.other)) and not (
                there and not os.path.samefile(self.full(op.path), self.full(op.other))),
            "link": os.path.lexists(self.full(op.other)),
            "unlink": not there, "rmdir": not there, "rmtree": not there,
        }.get(op.kind, True)
        if not happened:
            self.ops.remove(op)

    def audit(self, event: str, args: tuple) -> None:
        if event not in _EVENTS or getattr(self.local, "busy", False):
            return
        self.local.busy = True
        try:
            with self.lock:
                self.confirm()
                _EVENTS[event](self, args)
        finally:
            self.local.busy = False

    def on_open(self, args: tuple) -> None:
        path, _mode, flags = args
        if isinstance(path, int) or not flags & _WRITES:
            return
        rel = self.rel(path)
        if rel is None:
            return
        if not os.path.lexists(self.full(rel)):
            self.entry("create", rel)
            self.seen.pop(rel, None)
        else:
            self.flush()
        self.dirty.add(rel)

    def on_rename(self, args: tuple) -> None:
        src, dst, src_fd, dst_fd = args
        if src_fd not in (None, -1) or dst_fd not in (None, -1):
            return
        a, b = self.rel(src), self.rel(dst)
        if a is not None and b is not None:
            self.entry("rename", a, b)
            self._moved(a, b)
        elif a is not None:
            self.entry("unlink", a)
        elif b is not None:  # brought in from outside the root: a new file, then its bytes
            self.entry("create", b)
            self.dirty.add(b)
            self.seen.pop(b, None)

    def _moved(self, a: str, b: str) -> None:
        for rel in list(self.dirty):
            if rel == a or rel.startswith(a + "/"):
                self.dirty.discard(rel)
                self.dirty.add(b + rel[len(a):])
        for rel in list(self.seen):
            if rel == a or rel.startswith(a + "/"):
                self.seen[b + rel[len(a):]] = self.seen.pop(rel)

    def on_remove(self, args: tuple) -> None:
        path, dir_fd = args
        if dir_fd in (None, -1) and (rel := self.rel(path)) is not None:
            self.entry("unlink", rel)

    def on_rmdir(self, args: tuple) -> None:
        path, dir_fd = args
        if dir_fd in (None, -1) and (rel := self.rel(path)) is not None:
            self.entry("rmdir", rel)

    def on_rmtree(self, args: tuple) -> None:
        rel = self.rel(args[0])
        if rel is not None and os.path.lexists(self.full(rel)):
            self.entry("rmtree", rel)

    def on_mkdir(self, args: tuple) -> None:
        path, _mode, dir_fd = args
        rel = self.rel(path) if dir_fd in (None, -1) else None
        if rel is not None and not os.path.lexists(self.full(rel)):
            self.entry("mkdir", rel)

    def on_symlink(self, args: tuple) -> None:
        target, path, dir_fd = args
        if dir_fd in (None, -1) and (rel := self.rel(path)) is not None:
            self.entry("symlink", rel, os.fsdecode(target))

    def on_link(self, args: tuple) -> None:
        src, dst = args[0], args[1]
        a, b = self.rel(src), self.rel(dst)
        if b is not None:
            if a is not None:
                self.entry("link", a, b)
            else:
                self.entry("create", b)
                self.dirty.add(b)
                self.seen.pop(b, None)

    def on_chmod(self, args: tuple) -> None:
        rel = self.rel(args[0])
        if rel is not None:
            self.flush()
            self.dirty.add(rel)

    def on_fsync(self, fd: int) -> None:
        with self.lock:
            self.confirm()
            rel = self.rel(fd)
            if rel is None:
                return
            if os.path.isdir(self.full(rel)):
                self.entry("fsync_dir", rel)
                return
            self.dirty.add(rel)
            self.flush()
            self.dirty.discard(rel)
            self.ops.append(Op("fsync", rel))


_EVENTS = {
    "open": _Recorder.on_open, "os.rename": _Recorder.on_rename,
    "os.remove": _Recorder.on_remove, "os.rmdir": _Recorder.on_rmdir,
    "shutil.rmtree": _Recorder.on_rmtree, "os.mkdir": _Recorder.on_mkdir,
    "os.symlink": _Recorder.on_symlink, "os.link": _Recorder.on_link,
    "os.chmod": _Recorder.on_chmod, "os.truncate": _Recorder.on_chmod,
}


def _record(log: str, root: str, argv: list[str]) -> int:
    recorder = _Recorder(root)
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def synced(fd: int, real=real) -> None:  # type: ignore[no-untyped-def]
            real(fd)
            recorder.local.busy = True
            try:
                recorder.on_fsync(fd)
            finally:
                recorder.local.busy = False

        setattr(os, name, synced)
    sys.addaudithook(recorder.audit)
    sys.argv = ["updater", *argv]
    from greenlight.updater.cli import main

    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        with recorder.lock:
            recorder.local.busy = True
            recorder.confirm()
            recorder.flush()
            with open(log, "wb") as f:
                pickle.dump([(o.kind, o.path, o.other, o.data, o.mode) for o in recorder.ops], f)
    return code


def load(log: Path) -> list[Op]:
    with log.open("rb") as f:
        return [Op(*fields) for fields in pickle.load(f)]


# --- the tree, and states --------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    kind: str  # file, dir, link
    inode: int = 0  # files: which content they show
    target: str = ""


@dataclass
class State:
    """A tree a power cut could leave: path -> node, and each file inode's bytes and mode."""
    tree: dict[str, Node]
    content: dict[int, tuple[bytes, int]]
    crash_after: int = 0  # operations done before the cut
    lost: str = ""  # what this state lost, in words

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.tree):
            node = self.tree[path]
            h.update(f"{path}\0{node.kind}\0{node.target}\0".encode())
            if node.kind == "file":
                data, mode = self.content[node.inode]
                h.update(hashlib.sha256(data).digest() + mode.to_bytes(4, "big"))
        return h.hexdigest()


def snapshot(root: Path) -> State:
    """The root as it is, all of it taken as durable (the state before the recorded run)."""
    tree: dict[str, Node] = {}
    content: dict[int, tuple[bytes, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(folder, name)
            rel = str(full.relative_to(root))
            if rel.startswith(SKIP):
                continue
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                tree[rel] = Node("link", target=os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = Node("dir")
            elif stat.S_ISREG(st.st_mode):
                inode = len(content) + 1
                content[inode] = (full.read_bytes(), stat.S_IMODE(st.st_mode))
                tree[rel] = Node("file", inode)
        dirs[:] = [d for d in dirs if not Path(folder, d).is_symlink()]
    return State(tree, content)


def _parent(path: str) -> str:
    return os.path.dirname(path)


def _subtree(tree: dict[str, Node], path: str) -> list[str]:
    return [p for p in tree if p == path or p.startswith(path + "/")]


class _Replay:
    """The operations applied to a tree; `apply` returns False for one that cannot apply
    (its parent or source lost with an earlier operation)."""

    def __init__(self, base: State) -> None:
        self.tree = dict(base.tree)

    def has_dir(self, path: str) -> bool:
        return path == "" or (self.tree.get(path) or Node("")).kind == "dir"

    def apply(self, op: Op, inode: int = 0) -> bool:
        t = self.tree
        if op.kind == "create":
            if op.path in t or not self.has_dir(_parent(op.path)):
                return False
            t[op.path] = Node("file", inode)
        elif op.kind == "mkdir":
            if op.path in t or not self.has_dir(_parent(op.path)):
                return False
            t[op.path] = Node("dir")
        elif op.kind == "symlink":
            if op.path in t or not self.has_dir(_parent(op.path)):
                return False
            t[op.path] = Node("link", target=op.other)
        elif op.kind == "link":
            if t.get(op.path, Node("")).kind != "file" or op.other in t:
                return False
            if not self.has_dir(_parent(op.other)):
                return False
            t[op.other] = t[op.path]
        elif op.kind in ("unlink", "rmdir", "rmtree"):
            if op.path not in t:
                return False
            for p in _subtree(t, op.path):
                del t[p]
        elif op.kind == "rename":
            if op.path not in t or not self.has_dir(_parent(op.other)):
                return False
            if op.other.startswith(op.path + "/"):
                return False
            moved = {op.other + p[len(op.path):]: t[p] for p in _subtree(t, op.path)}
            for p in _subtree(t, op.path) + _subtree(t, op.other):
                t.pop(p, None)
            t.update(moved)
        else:
            return True
        return True


def _analyse(base: State, ops: list[Op]) -> list[dict]:
    """Replay every operation on the kill -9 view: for each, the file inode it touched (a new
    one for each create)."""
    replay = _Replay(base)
    next_inode = max(base.content, default=0) + 1
    info: list[dict] = []
    for op in ops:
        entry: dict = {}
        if op.kind == "create":
            entry["inode"], next_inode = next_inode, next_inode + 1
        elif op.kind == "rename":
            entry["moved"] = {op.other + p[len(op.path):]: replay.tree[p]
                              for p in _subtree(replay.tree, op.path)}
        elif op.kind in ("write", "fsync"):
            node = replay.tree.get(op.path)
            entry["inode"] = node.inode if node and node.kind == "file" else None
        replay.apply(op, entry.get("inode", 0))
        info.append(entry)
    return info


def crash_states(base: State, ops: list[Op], at: int | None = None) -> Iterator[State]:
    """Every state a power cut after each operation (or only after the first `at`) could
    leave, within the bound, each given once."""
    info = _analyse(base, ops)
    seen: set[str] = set()
    for k in range(len(ops) + 1) if at is None else [at]:
        for state in _states_at(base, ops, info, k):
            key = state.digest()
            if key not in seen:
                seen.add(key)
                yield state


def _states_at(base: State, ops: list[Op], info: list[dict], k: int) -> Iterator[State]:
    done = ops[:k]
    # which entry operations are persisted: a later fsync of each parent they touched
    synced_after: dict[str, int] = {}
    for i, op in enumerate(done):
        if op.kind == "fsync_dir":
            synced_after[op.path] = i
    unsynced: list[int] = []
    for i, op in enumerate(done):
        if op.kind not in _ENTRY_OPS:
            continue
        # a rename is one change of the file system, durable with its destination's folder
        parent = _parent(op.other if op.kind in ("rename", "link") else op.path)
        if synced_after.get(parent, -1) < i:
            unsynced.append(i)
    # each inode's content: the newest, and the newest that was fsynced
    newest: dict[int, tuple[bytes, int]] = dict(base.content)
    durable: dict[int, tuple[bytes, int]] = dict(base.content)
    for i, op in enumerate(done):
        inode = info[i].get("inode")
        if inode is None:
            continue
        if op.kind == "create":
            newest.setdefault(inode, (b"", 0o600))
        elif op.kind == "write":
            newest[inode] = (op.data, op.mode)
        elif op.kind == "fsync":
            durable[inode] = newest.get(inode, (b"", 0o600))
    volatile = [n for n in newest if newest[n] != durable.get(n, (b"", 0o600))]

    def build(lost_entries: set[int], data: dict[int, tuple[bytes, int]], why: str) -> State:
        replay = _Replay(base)
        for i, op in enumerate(done):
            applies = op.kind in _ENTRY_OPS and i not in lost_entries
            if applies and not replay.apply(op, info[i].get("inode", 0)) and \
                    i not in unsynced and replay.has_dir(_parent(op.other)):
                replay.tree.update(info[i].get("moved", {}))  # durable where it went
        for path in sorted(replay.tree, key=lambda p: p.count("/")):
            if path in replay.tree and not replay.has_dir(_parent(path)):
                for p in _subtree(replay.tree, path):  # its folder's entry was lost
                    del replay.tree[p]
        content = dict(newest)
        content.update(data)
        return State(replay.tree, content, k, why)

    yield build(set(), {}, "nothing (what a kill -9 leaves)")
    if unsynced:
        yield build(set(unsynced), {}, "every unsynced directory entry")
        for i in unsynced:
            yield build({i}, {}, f"entry {i} ({done[i].kind} {done[i].path})")
        for j in range(1, len(unsynced)):
            yield build(set(unsynced[j:]), {}, f"the entries after #{unsynced[j - 1]}")
        if len(unsynced) <= SUBSETS_UP_TO:
            for r in range(2, len(unsynced)):
                for lost in itertools.combinations(unsynced, r):
                    yield build(set(lost), {}, f"entries {list(lost)}")
    for inode in volatile:
        old, new = durable.get(inode, (b"", 0o600)), newest[inode]
        yield build(set(), {inode: old}, f"the unsynced content of inode {inode}")
        if old[0]:
            yield build(set(), {inode: (b"", new[1])}, f"inode {inode} left empty")
        if len(new[0]) > 1:
            cut = len(new[0]) // 2
            yield build(set(), {inode: (new[0][:cut] + old[0][cut:], new[1])},
                        f"inode {inode} torn at {cut}")
    if unsynced and volatile:
        lost_data = {n: durable.get(n, (b"", 0o600)) for n in volatile}
        yield build(set(unsynced), lost_data, "every unsynced entry and content")


def materialize(state: State, root: Path) -> None:
    """Write the state's tree at `root` (which must not exist)."""
    root.mkdir()
    for path in sorted(state.tree, key=lambda p: p.count("/")):
        node, full = state.tree[path], root / path
        if node.kind == "dir":
            full.mkdir(exist_ok=True)
    for path, node in state.tree.items():
        full = root / path
        if node.kind == "link":
            os.symlink(node.target, full)
        elif node.kind == "file":
            data, mode = state.content.get(node.inode, (b"", 0o600))
            full.write_bytes(data)
            os.chmod(full, mode)


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] != "record" or sys.argv[4] != "--":
        print("usage: crashstates.py record LOG ROOT -- UPDATER_ARGS...", file=sys.stderr)
        sys.exit(2)
    sys.exit(_record(sys.argv[2], sys.argv[3], sys.argv[5:]))
