"""Sideloading's source: the same TUF client, reading an unpacked bundle instead of the network.

The caller unpacks the bundle (with the store's safe extraction) into a folder; python-tuf's
ngclient then runs over `DirectoryFetcher`, against the root the installation already trusts:
the same signature, version (rollback), expiry, length and hash checks as online. Nothing is
fetched from a network.
"""

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

from greenlight.channels import BUNDLE_BASE_URL, BUNDLE_MANIFEST, BundleFormatError, BundleManifest
from greenlight.updater._errors import ArchiveError
from greenlight.updater.trust._repository import MissingFromBundle, TrustedRepository

__all__ = ["Bundle", "DirectoryFetcher", "open_bundle"]

_CHUNK = 1024 * 1024


class DirectoryFetcher(FetcherInterface):
    """Serves `bundle://local/<path>` from a folder; a missing file is an HTTP-like 404."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.open_range(url, 0)[1]

    def open_range(self, url: str, offset: int, length: int | None = None
                   ) -> tuple[int, Iterator[bytes]]:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}/" != BUNDLE_BASE_URL:
            raise exceptions.DownloadError(f"{url}: not inside the bundle")
        path = (self.folder / unquote(parts.path).lstrip("/")).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            raise MissingFromBundle(f"{url}: not in the bundle")
        return offset, self._chunks(path, offset)

    @staticmethod
    def _chunks(path: Path, offset: int) -> Iterator[bytes]:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(_CHUNK):
                yield chunk


@dataclass
class Bundle:
    manifest: BundleManifest
    repository: TrustedRepository

    @property
    def channel(self) -> str:
        return self.manifest.channel


def _read_small(path: Path, limit: int = 64 * 1024) -> bytes:
    """A small regular file, never through a symlink, never more than `limit` bytes (a link to
    /dev/zero or a FIFO is refused, not read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name}: not a regular file")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def open_bundle(folder: Path, metadata_dir: Path, label: str) -> Bundle:
    """The TUF client over an unpacked bundle in `folder`, trusting `metadata_dir`'s root.

    Raises:
        ArchiveError: `folder` holds no valid bundle.json.
    """
    try:
        manifest = BundleManifest.from_json(_read_small(folder / BUNDLE_MANIFEST))
    except (OSError, BundleFormatError):
        raise ArchiveError(f"{label}: not a Greenlight bundle (no valid bundle.json)") from None
    repository = TrustedRepository(metadata_dir, BUNDLE_BASE_URL + "metadata/",
                                   BUNDLE_BASE_URL + "targets/", fetcher=DirectoryFetcher(folder))
    return Bundle(manifest, repository)
