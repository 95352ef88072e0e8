"""Receiving a target: hashed as the bytes arrive, renamed into place only when verified.

`receive_verified` streams into a `.partial` file beside nothing the user sees; only a file
whose length and every signed hash match is renamed to its final name, so a final name is a
promise. `Downloads` is the installation's store of such files, named by sha256.
"""

import errno
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from updater._errors import StoreError, TrustError
from updater._fs import fsync_dir

Progress = Callable[[int], None]


def receive_verified(
    chunks: Iterable[bytes],
    dest: Path,
    partial: Path,
    hashes: dict[str, str],
    length: int,
    what: str,
    progress: Progress | None = None,
) -> Path:
    try:
        digests = {alg: hashlib.new(alg) for alg in hashes}
    except ValueError:
        raise TrustError(f"{what} refused: unsupported hash algorithm in {sorted(hashes)}") from None
    if not digests:
        raise TrustError(f"{what} refused: its signed targets entry has no hashes")
    received = 0
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        with partial.open("wb") as f:
            for chunk in chunks:
                received += len(chunk)
                if received > length:
                    raise TrustError(f"{what} refused: more than its signed length of {length} bytes")
                for digest in digests.values():
                    digest.update(chunk)
                f.write(chunk)
                if progress:
                    progress(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        if received != length:
            raise TrustError(
                f"{what} refused: {received} bytes received, {length} signed (truncated?)"
            )
        for alg, digest in digests.items():
            if digest.hexdigest() != hashes[alg]:
                raise TrustError(
                    f"{what} refused: {alg} {digest.hexdigest()[:16]}… does not match the "
                    f"signed {hashes[alg][:16]}… (tampered?)"
                )
        os.replace(partial, dest)
        fsync_dir(dest.parent)
        return dest
    except OSError as e:
        partial.unlink(missing_ok=True)
        hint = " (disk full)" if e.errno == errno.ENOSPC else ""
        raise StoreError(f"{dest.parent}: cannot store {what}{hint}: {e.strerror}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


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
        chunks: Iterable[bytes],
        hashes: dict[str, str],
        length: int,
        what: str,
        progress: Progress | None = None,
    ) -> Path:
        sha256 = hashes["sha256"]
        return receive_verified(
            chunks, self.path(sha256), self.partial / sha256, hashes, length, what, progress
        )
