"""Safe extraction of release archives (.tar, .tar.gz/.tgz, .tar.zst), streamed.

Refused, with one line naming the member: absolute paths, `..`, duplicate names, members
passing through a symlink, symlinks or hardlinks that leave the tree, devices and FIFOs, and
more bytes than the limits allow (archive bombs). Files are written by this module (never by
tarfile's own extract), without set-uid bits, and only regular files, directories and safe
links are created. Extraction goes into a folder the caller removes on failure.

The same code reads an archive on both sides: the client unpacks a release with it, and the
pipeline lists and unpacks what it publishes (`top_folder`, `extract`) as the client will.
"""

import errno
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from greenlight.channels._digest import ParallelDigest
from greenlight.channels._errors import ArchiveError, TrustError
from greenlight.channels._files import fsync_dir
from greenlight.channels._layout import LayoutError, clean_member_name, top_folder_of

__all__ = ["Limits", "Region", "TarIndex", "extract", "index_tar", "top_folder"]

_COPY = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_total_bytes: int = 8 * 1024**3
    max_ratio: int = 200  # uncompressed bytes per archive byte, beyond a small allowance
    max_members: int = 200_000
    compressed: bool = True  # False: a plain tar only (offline bundles)


_MAX_HEADER = 64 * 1024  # bytes of a GNU long name or a PAX header, read into memory


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads GNU long-name and PAX extended headers whole into memory, whatever size
    they claim; these are refused above 64 KiB before a byte of them is read. Members that
    are not plain files in plain headers are refused as they are read: GNU sparse files (old
    and PAX forms), and sizes a PAX header sets below zero (which would make tarfile step
    back and stop reading, silently) or beyond what any disk holds. Whatever else tarfile
    raises while reading a header (a ValueError from a malformed sparse map, say) is a
    refusal too, never a crash."""

    def _proc_gnulong(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > _MAX_HEADER:
            raise ArchiveError(f"a long-name header of {self.size} bytes (limit {_MAX_HEADER})")
        return _checked(_original("_proc_gnulong", self, archive))

    def _proc_pax(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > _MAX_HEADER:
            raise ArchiveError(f"a PAX header of {self.size} bytes (limit {_MAX_HEADER})")
        return _checked(_original("_proc_pax", self, archive))

    def _proc_sparse(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        raise ArchiveError(f"member {self.name!r} refused: a GNU sparse file; only regular "
                           "files and folders are unpacked")

    def _proc_builtin(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        return _checked(_original("_proc_builtin", self, archive))

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> "_BoundedTarInfo":
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.InvalidHeaderError as e:  # type: ignore[attr-defined]
            # tarfile takes a header that does not read, past the first, for the end of the
            # archive, and stops there without a word: here it is a broken archive.
            raise tarfile.ReadError(str(e) or "invalid header") from None


_TAIL_MAX = 1 << 20  # bytes of padding after an archive's end marker, at most


def _clean_tail(read: Callable[[int], bytes], label: str) -> None:
    """What follows an archive's end marker is zeros (padding): anything else is a tail
    tarfile never looked at.

    Raises:
        ArchiveError: other bytes, or more padding than any tool writes.
    """
    seen = 0
    while block := read(64 * 1024):
        seen += len(block)
        if block.strip(b"\0") or seen > _TAIL_MAX:
            raise ArchiveError(f"{label}: not a readable archive: data after its end marker")


_MAX_MEMBER = 1 << 50  # bytes: a petabyte, beyond any disk this runs on


def _original(method: str, info: tarfile.TarInfo, archive: tarfile.TarFile) -> tarfile.TarInfo:
    try:
        return cast(tarfile.TarInfo, vars(tarfile.TarInfo)[method](info, archive))
    except (ArchiveError, tarfile.TarError, EOFError):
        raise
    except OSError as e:
        if e.errno is not None:
            raise  # a real I/O error
        raise ArchiveError(f"not a readable archive: {e}") from None
    except Exception as e:  # tarfile's own parsing gave up on a malformed header
        raise ArchiveError(f"a malformed header ({type(e).__name__}: {e})") from None


def _checked(member: tarfile.TarInfo) -> tarfile.TarInfo:
    if member.sparse is not None or any(k.startswith("GNU.sparse.")
                                        for k in member.pax_headers):
        raise ArchiveError(f"member {member.name!r} refused: a GNU sparse file; only regular "
                           "files and folders are unpacked")
    if not 0 <= member.size <= _MAX_MEMBER:
        raise ArchiveError(f"member {member.name!r} refused: a size of {member.size} bytes")
    return member


@dataclass(frozen=True)
class Region:
    """An archive that is a stretch of a bigger file (an artifact inside an offline bundle),
    read in place: its sha256 and length are checked as it is unpacked."""

    path: Path
    offset: int
    length: int
    sha256: str
    label: str
    where: str = "in the bundle"

    @property
    def name(self) -> str:
        return self.label.rsplit("/", 1)[-1]


class _HashedWindow(io.RawIOBase):
    """Reads `length` bytes of `raw` from its current position and hashes them on a helper
    thread, so hashing overlaps the unpacking's writes."""

    def __init__(self, raw: IO[bytes], length: int) -> None:
        self.raw, self.left = raw, length
        self.short = False
        self.sha256: str | None = None
        self._digest: ParallelDigest | None = ParallelDigest(["sha256"])

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.left)
        if want <= 0:
            return 0
        chunk = self.raw.read(want)
        if not chunk:
            self.short = True
            return 0
        got = len(chunk)
        memoryview(buffer)[:got] = chunk
        assert self._digest is not None
        self._digest.update(chunk)
        self.left -= got
        return got

    def drain(self) -> None:
        """Read what the unpacking left (the tar's end padding), and finish the hash."""
        while self.left > 0 and self.read(min(_COPY, self.left)):
            pass
        if self._digest is not None:
            self.sha256 = self._digest.finish()["sha256"]
            self._digest = None

    def stop(self) -> None:
        if self._digest is not None:
            self._digest.abort()
            self._digest = None


def _check_region(region: Region, window: _HashedWindow) -> None:
    window.drain()
    if window.short or window.left or window.sha256 != region.sha256:
        raise TrustError(f"artifact {region.label} refused: its bytes {region.where} do not "
                         "match the signed sha256 and length")


@contextmanager
def _open_stream(path: Path | Region, compressed: bool) -> Iterator[tarfile.TarFile]:
    import pyzstd

    region = path if isinstance(path, Region) else None
    name = path.name
    fd = os.open(region.path if region else cast(Path, path),
                 os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArchiveError(f"{path.name}: not a regular file")
    raw: IO[bytes] = os.fdopen(fd, "rb", buffering=0)
    window = None
    try:
        if region is not None:
            raw.seek(region.offset)
            window = _HashedWindow(raw, region.length)
            raw = cast(IO[bytes], io.BufferedReader(window, _COPY))
            head = raw.peek(4)[:4]  # type: ignore[attr-defined]
        else:
            raw = cast(IO[bytes], io.BufferedReader(cast(io.RawIOBase, raw), _COPY))
            head = raw.read(4)
            raw.seek(0)
        stream: IO[bytes] = raw
        zstd = name.endswith(".zst") or head == b"\x28\xb5\x2f\xfd"
        gzipped = head[:2] == b"\x1f\x8b"
        if (zstd or gzipped) and not compressed:
            raise ArchiveError(f"{path.name}: compressed; a bundle is a plain tar")
        if zstd:
            stream = cast(IO[bytes], pyzstd.ZstdFile(cast(BinaryIO, raw)))
        with (tarfile.open(fileobj=stream, mode="r|gz", tarinfo=_BoundedTarInfo) if gzipped
              else tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo)) as tar:
            yield tar
            if getattr(tar, "_loaded", False):  # read to its end marker: the rest is padding
                _clean_tail(tar.fileobj.read, name)
        if region is not None and window is not None:
            _check_region(region, window)
    except (tarfile.TarError, pyzstd.ZstdError, EOFError, OSError, ArchiveError) as e:
        if region is not None and window is not None:
            _check_region(region, window)  # other bytes than signed: that is the cause
        if isinstance(e, ArchiveError):
            raise
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a real I/O error (disk full...), not a broken archive
        raise ArchiveError(
            f"{path.name}: not a readable archive: {e or type(e).__name__}") from None
    finally:
        if window is not None:
            window.stop()
        raw.close()


def _clean_name(archive: str, name: str) -> str:
    try:
        return clean_member_name(name)
    except LayoutError as e:
        raise ArchiveError(f"{archive}: {e}") from None


def _strip(label: str, name: str, prefix: str | None) -> str:
    """`name` without the archive's top folder `prefix` (recorded by the publisher)."""
    if prefix is None:
        return name
    if name == prefix:
        return ""
    if not name.startswith(prefix + "/"):
        raise ArchiveError(
            f"{label}: member {name!r} refused: outside the top folder {prefix!r} that the "
            "channel file says every member sits under")
    return name[len(prefix) + 1:]


def top_folder(archive: Path, limits: Limits = Limits()) -> str | None:
    """The archive's top folder by the shared layout rule (`top_folder_of`), read within
    `limits` (the client's bounds by default).

    Raises:
        ArchiveError: a refused member, too many members, or not a readable archive.
    """
    with _open_stream(archive, limits.compressed) as tar:
        def members() -> Iterator[tuple[str, bool]]:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise ArchiveError(f"{archive.name}: more than {limits.max_members} members")
                yield _clean_name(archive.name, member.name), member.isdir()

        return top_folder_of(members())


def extract(archive: Path | Region, dest: Path, limits: Limits = Limits(),
            strip: str | None = None, durable: bool = True) -> int:
    """Extract `archive` (a file, or a region of one checked against its sha256 as it is
    read) into the empty folder `dest`; return the bytes written. With `strip`, every member
    must sit under that top folder, which is left out. `durable`: every file and folder
    synced to disk before it returns (a scratch copy, listed and thrown away, needs not).

    Raises:
        ArchiveError: not a readable archive, or a member refused (leaves the tree, a device, a
            bomb, a name twice...); what was written stays in `dest` for the caller to remove.
    """
    label = archive.name
    dest.mkdir(parents=True, exist_ok=True)
    size = archive.length if isinstance(archive, Region) else archive.stat().st_size
    budget = min(limits.max_total_bytes, size * limits.max_ratio + 64 * 1024**2)
    written = 0
    seen: set[str] = set()
    links: set[str] = set()
    files: set[str] = set()
    with _open_stream(archive, limits.compressed) as tar:
        for count, member in enumerate(tar, start=1):
            if count > limits.max_members:
                raise ArchiveError(f"{label}: more than {limits.max_members} members")
            name = _strip(label, _clean_name(label, member.name), strip)
            if not name:
                continue
            if name in seen:
                raise ArchiveError(f"{label}: member {name!r} refused: appears twice")
            prefix = name
            while "/" in prefix:
                prefix = prefix.rsplit("/", 1)[0]
                if prefix in links:
                    raise ArchiveError(
                        f"{label}: member {name!r} refused: passes through link {prefix!r}"
                    )
                if prefix in files:
                    raise ArchiveError(
                        f"{label}: member {name!r} refused: below the file {prefix!r}")
            if any(s.startswith(name + "/") for s in seen) and not member.isdir():
                raise ArchiveError(
                    f"{label}: member {name!r} refused: collides with the folder {name!r}")
            seen.add(name)
            target = dest / name
            try:
                written += _create(tar, member, name, target, dest, label, budget - written,
                                   links, files, strip, durable)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
                    raise ArchiveError(
                        f"{label}: member {name!r} refused: collides with an earlier member"
                    ) from None
                raise
    # Every folder's entries, synced: the names of the files just synced survive a power
    # cut as well as their bytes.
    folders = {dest} if durable else set()
    for name in seen if durable else ():
        parent = (dest / name).parent
        while parent not in folders:
            folders.add(parent)
            parent = parent.parent
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not folder.is_symlink():
            fsync_dir(folder)
    return written


def _create(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, target: Path,
            dest: Path, label: str, budget: int, links: set[str], files: set[str],
            strip: str | None, durable: bool) -> int:
    """Create one member; return the bytes written."""
    written = 0
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True, mode=0o755)
    elif member.isreg():
        if member.size > budget:
            raise ArchiveError(
                f"{label}: member {name!r} refused: {member.size} bytes would exceed "
                f"the limit of {budget} bytes for this archive (archive bomb?)"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            left = member.size
            while left:
                block = source.read(min(_COPY, left))
                if not block:
                    raise ArchiveError(f"{label}: member {name!r} is truncated")
                out.write(block)
                left -= len(block)
            out.flush()
            # The mode, then the bytes, on disk before the staging folder is renamed into
            # place: a power cut after the rename must never leave a release of empty or
            # torn files, nor a program that lost its execute bit (a mode set after the
            # fsync is not promised to survive; the power-loss states found it).
            os.fchmod(out.fileno(), 0o755 if member.mode & 0o111 else 0o644)
            if durable:
                os.fsync(out.fileno())
        written += member.size
        files.add(name)
    elif member.issym():
        # Links may only point down: a `..` anywhere could be chained through other
        # links (l0 -> ., l1 -> l0/.., ...) to climb out of the tree one level a time.
        link = member.linkname
        if link.startswith("/") or ".." in link.split("/") or not link or \
                any(ord(c) < 0x20 for c in link):
            raise ArchiveError(
                f"{label}: member {name!r} refused: symlink to {link!r} leaves the "
                "tree (only links down the tree are allowed)"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link, target)
        links.add(name)
    elif member.islnk():
        source_name = _strip(label, _clean_name(label, member.linkname), strip)
        if source_name not in files:
            raise ArchiveError(
                f"{label}: member {name!r} refused: hardlink to {member.linkname!r} "
                "which is not a file earlier in the archive"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(dest / source_name, target)
        files.add(name)
    else:
        raise ArchiveError(
            f"{label}: member {name!r} refused: device, FIFO or other special file"
        )
    return written


TarIndex = dict[str, tuple[int, int]]
"""A plain tar's regular files: {clean name: (offset of the data, size)}."""


def index_tar(path: Path, limits: Limits = Limits(compressed=False),
              max_members: int = 100_000) -> TarIndex:
    """Where each file of the plain tar `path` sits, read from its headers alone, so that its
    members can be read in place (an offline bundle). Only regular files and folders may be
    in it: a link, device or FIFO is refused, and so are unsafe or duplicate names, a
    compressed file, and a member that runs past the end of the file (truncated).

    Raises:
        ArchiveError: not a plain tar, or a member refused.
    """
    label = path.name
    index: TarIndex = {}
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"{label}: not a regular file")
        with os.fdopen(os.dup(fd), "rb") as raw:
            head = raw.read(4)
            if head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd":
                raise ArchiveError(f"{label}: compressed; a bundle is a plain tar")
            raw.seek(0)
            try:
                with tarfile.open(fileobj=raw, mode="r:", tarinfo=_BoundedTarInfo) as tar:
                    for count, member in enumerate(tar, start=1):
                        if count > max_members:
                            raise ArchiveError(f"{label}: more than {max_members} members")
                        name = _clean_name(label, member.name)
                        if member.isdir():
                            continue
                        if not member.isreg():
                            kind = ("link" if member.issym() or member.islnk() else
                                    "device, FIFO or other special file")
                            raise ArchiveError(f"{label}: member {name!r} refused: a {kind}; "
                                               "a bundle holds only regular files")
                        if name in index:
                            raise ArchiveError(f"{label}: member {name!r} refused: appears "
                                               "twice")
                        if member.offset_data + member.size > st.st_size:
                            raise ArchiveError(f"{label}: not a readable archive: unexpected "
                                               "end of data")
                        index[name] = (member.offset_data, member.size)
                    raw.seek(tar.offset)
                    _clean_tail(raw.read, label)
            except (tarfile.TarError, EOFError) as e:
                raise ArchiveError(
                    f"{label}: not a readable archive: {e or type(e).__name__}") from None
    finally:
        os.close(fd)
    return index
