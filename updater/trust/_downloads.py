"""Receiving a target: hashed as the bytes arrive, renamed into place only when verified.

`receive_verified` streams into a `.partial` file; only a file whose length and every signed
hash match is renamed to its final name, so a final name is a promise. `Downloads` is the
installation's store of such files, named by sha256.

Hashing runs on a helper thread, fed in batches of about 1 MiB: hashlib releases the GIL on
large buffers, so the digest overlaps receiving and writing instead of adding to them
(measured in bench/download_verify.py: about 1.5x the single-threaded loop on loopback).
"""

import errno
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from tuf.api import exceptions

from greenlight.channels import ParallelDigest, fsync_dir
from greenlight.updater._errors import StoreError, TrustError

__all__ = ["RETRIES", "Downloads", "Opener", "Progress", "receive_verified"]

Progress = Callable[[int], None]
_BATCH = 1024 * 1024


Opener = Callable[[int], tuple[int, Iterable[bytes]]]
RETRIES = 3


def receive_verified(
    open_stream: Opener,
    dest: Path,
    partial: Path,
    hashes: dict[str, str],
    length: int,
    what: str,
    progress: Progress | None = None,
) -> Path:
    """Stream a target into `partial`, resuming what an earlier attempt left there (a Range
    request from its end; a server that ignores Range restarts from 0), then verify the whole
    file and rename it to `dest`. A network failure keeps the partial file for next time; a
    verification failure removes it. When a resumed download fails verification, the bytes
    kept from before may be what was wrong (a poisoned partial file): it starts once more
    from byte 0 before anything is reported.

    Raises:
        TrustError: the bytes are not the signed ones; StoreError: they cannot be stored;
        python-tuf's DownloadError (SlowRetrievalError past the deadline): the network.
    """
    if partial.is_symlink():  # planted: never written through
        partial.unlink()
    try:
        resumed = partial.stat().st_size > 0
    except FileNotFoundError:
        resumed = False
    try:
        return _receive_once(open_stream, dest, partial, hashes, length, what, progress)
    except TrustError:
        if not resumed:
            raise
        partial.unlink(missing_ok=True)
        return _receive_once(open_stream, dest, partial, hashes, length, what, progress)


def _receive_once(
    open_stream: Opener,
    dest: Path,
    partial: Path,
    hashes: dict[str, str],
    length: int,
    what: str,
    progress: Progress | None,
) -> Path:
    if not hashes:
        raise TrustError(f"{what} refused: its signed targets entry has no hashes")
    for alg in hashes:
        try:
            hashlib.new(alg)
        except ValueError:
            raise TrustError(
                f"{what} refused: unsupported hash algorithm in {sorted(hashes)}") from None
    finished = False
    digest: ParallelDigest | None = None
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            digest = ParallelDigest(hashes, flush_fd=fd)
            received = os.fstat(fd).st_size
            if received > length:
                os.ftruncate(fd, 0)
                received = 0
            _rehash(fd, received, digest)
            for attempt in range(RETRIES + 1):
                try:
                    received = _receive(open_stream, fd, received, length, digest, what, progress)
                    break
                except (exceptions.DownloadHTTPError, exceptions.SlowRetrievalError):
                    raise  # an answer, or the deadline spent: retrying would not help
                except exceptions.DownloadError:
                    if attempt == RETRIES:
                        raise
                    received = os.fstat(fd).st_size  # every byte written was also hashed
            os.fsync(fd)
        finally:
            os.close(fd)
        assert digest is not None
        got = digest.finish()
        finished = True
        if received != length:
            raise TrustError(
                f"{what} refused: {received} bytes received, {length} signed (truncated?)"
            )
        for alg, hexdigest in got.items():
            if hexdigest != hashes[alg]:
                raise TrustError(
                    f"{what} refused: {alg} {hexdigest[:16]}… does not match the "
                    f"signed {hashes[alg][:16]}… (tampered?)"
                )
        os.replace(partial, dest)
        fsync_dir(dest.parent)
        return dest
    except exceptions.DownloadError:
        if not finished and digest is not None:
            digest.abort()
        raise  # the partial file stays: the next attempt resumes from it
    except OSError as e:
        if not finished and digest is not None:
            digest.abort()
        partial.unlink(missing_ok=True)
        hint = " (disk full)" if e.errno == errno.ENOSPC else ""
        raise StoreError(f"{dest.parent}: cannot store {what}{hint}: {e.strerror}") from None
    except BaseException:
        if not finished and digest is not None:
            digest.abort()
        partial.unlink(missing_ok=True)
        raise


def _rehash(fd: int, size: int, digest: "ParallelDigest") -> None:
    """Feed what a previous attempt already wrote to the digest."""
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left:
        block = os.read(fd, min(_BATCH, left))
        if not block:
            break
        digest.update(block)
        left -= len(block)


def _receive(open_stream: Opener, fd: int, received: int, length: int,
             digest: "ParallelDigest", what: str, progress: Progress | None) -> int:
    start, chunks = open_stream(received)
    if start != received:  # the server ignored Range: start over
        os.ftruncate(fd, 0)
        digest.reset()
        received = 0
    os.lseek(fd, received, os.SEEK_SET)
    for chunk in chunks:
        received += len(chunk)
        if received > length:
            raise TrustError(f"{what} refused: more than its signed length of {length} bytes")
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        if progress:
            progress(len(chunk))
    return received


class Downloads:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.partial = folder / ".partial"

    def path(self, sha256: str) -> Path:
        return self.folder / sha256

    def find(self, sha256: str, length: int) -> Path | None:
        path = self.path(sha256)
        try:
            return path if path.stat().st_size == length else None
        except FileNotFoundError:
            return None

    def receive(
        self,
        open_stream: Opener,
        hashes: dict[str, str],
        length: int,
        what: str,
        progress: Progress | None = None,
    ) -> Path:
        sha256 = hashes["sha256"]
        return receive_verified(
            open_stream, self.path(sha256), self.partial / sha256, hashes, length, what, progress
        )
