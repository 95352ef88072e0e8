"""The download store: verified artifacts named by their sha256, kept for reuse.

Bytes are hashed as they arrive and written to `.partial/`; only a file whose length and
sha256 match the signed values is renamed into place, so a name in the store is a promise.
"""

import errno
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from updater._errors import StoreError, TrustError
from updater._fs import fsync_dir


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
        sha256: str,
        length: int,
        what: str,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        self.partial.mkdir(parents=True, exist_ok=True)
        partial = self.partial / sha256
        digest = hashlib.sha256()
        received = 0
        try:
            with partial.open("wb") as f:
                for chunk in chunks:
                    received += len(chunk)
                    if received > length:
                        raise TrustError(
                            f"artifact {what} refused: more than its signed length of {length} bytes"
                        )
                    digest.update(chunk)
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
                f.flush()
                os.fsync(f.fileno())
            if received != length:
                raise TrustError(
                    f"artifact {what} refused: {received} bytes received, {length} signed (truncated?)"
                )
            if digest.hexdigest() != sha256:
                raise TrustError(
                    f"artifact {what} refused: sha256 {digest.hexdigest()[:16]}… does not match the "
                    f"signed {sha256[:16]}… (tampered?)"
                )
            final = self.path(sha256)
            os.replace(partial, final)
            fsync_dir(self.folder)
            return final
        except OSError as e:
            partial.unlink(missing_ok=True)
            hint = " (disk full)" if e.errno == errno.ENOSPC else ""
            raise StoreError(f"{self.folder}: cannot store {what}{hint}: {e.strerror}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
