"""Sideloading's source: the same TUF client, reading a bundle file instead of the network.

A bundle is a plain tar. The caller indexes it (the store's `index_tar`: where each member's
bytes sit, regular files only); python-tuf's ngclient then runs over `BundleFetcher`, which
reads members in place, against the root the installation already trusts: the same
signature, version (rollback), expiry, length and hash checks as online. Nothing is unpacked
and nothing is fetched from a network: artifacts are staged straight from the bundle, hashed as
they are unpacked (`TrustedRepository.region`).
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

from greenlight.channels import BUNDLE_BASE_URL, BUNDLE_MANIFEST, BundleFormatError, BundleManifest
from greenlight.updater._errors import ArchiveError
from greenlight.updater.trust._repository import MissingFromBundle, TrustedRepository

__all__ = ["Bundle", "BundleFetcher", "DirectoryFetcher", "open_bundle"]

_CHUNK = 1024 * 1024


class DirectoryFetcher(FetcherInterface):
    """Serves `bundle://local/<path>` from a folder; a missing file is an HTTP-like 404."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.open_range(url, 0)[1]

    def open_range(self, url: str, offset: int, length: int | None = None
                   ) -> tuple[int, Iterator[bytes]]:
        """Stream a file of the folder from byte `offset`.

        Raises:
            DownloadError: the URL is not inside the bundle (MissingFromBundle, a 404, when the
                file is not there).
        """
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


class BundleFetcher(FetcherInterface):
    """Serves `bundle://local/<path>` from the members of a plain-tar bundle, read in place:
    `index` (from the store's `index_tar`) says where each file's bytes sit. A missing file is
    an HTTP-like 404."""

    def __init__(self, bundle: Path, index: Mapping[str, tuple[int, int]]) -> None:
        self.bundle, self.index = bundle, index

    def region(self, url: str) -> tuple[Path, int, int]:
        """(bundle file, offset, length) of the member a URL names.

        Raises:
            DownloadError: the URL is not inside the bundle (MissingFromBundle, a 404, when no
                member has that name).
        """
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}/" != BUNDLE_BASE_URL:
            raise exceptions.DownloadError(f"{url}: not inside the bundle")
        found = self.index.get(unquote(parts.path).lstrip("/"))
        if found is None:
            raise MissingFromBundle(f"{url}: not in the bundle")
        return self.bundle, found[0], found[1]

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.open_range(url, 0)[1]

    def open_range(self, url: str, offset: int, length: int | None = None
                   ) -> tuple[int, Iterator[bytes]]:
        path, start, size = self.region(url)
        return offset, self.chunks(path, start + offset, size - offset)

    @staticmethod
    def chunks(path: Path, offset: int, left: int) -> Iterator[bytes]:
        with path.open("rb") as f:
            f.seek(offset)
            while left > 0 and (chunk := f.read(min(_CHUNK, left))):
                left -= len(chunk)
                yield chunk


@dataclass
class Bundle:
    manifest: BundleManifest
    repository: TrustedRepository

    @property
    def channel(self) -> str:
        return self.manifest.channel


def open_bundle(bundle: Path, index: Mapping[str, tuple[int, int]], metadata_dir: Path,
                label: str) -> Bundle:
    """The TUF client over the bundle file `bundle`, read in place through `index`, trusting
    `metadata_dir`'s root.

    Raises:
        ArchiveError: the bundle holds no valid bundle.json.
    """
    fetcher = BundleFetcher(bundle, index)
    try:
        path, offset, size = fetcher.region(BUNDLE_BASE_URL + BUNDLE_MANIFEST)
        if size > 64 * 1024:
            raise BundleFormatError(f"{BUNDLE_MANIFEST} of {size} bytes")
        manifest = BundleManifest.from_json(b"".join(fetcher.chunks(path, offset, size)))
    except (OSError, BundleFormatError, exceptions.DownloadError):
        raise ArchiveError(f"{label}: not a Greenlight bundle (no valid bundle.json)") from None
    repository = TrustedRepository(metadata_dir, BUNDLE_BASE_URL + "metadata/",
                                   BUNDLE_BASE_URL + "targets/", fetcher=fetcher)
    return Bundle(manifest, repository)
