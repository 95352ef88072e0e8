"""Sideloading: the same TUF client, reading a bundle instead of the network.

The bundle is unpacked with the same safe extraction as releases into a staging folder inside
the installation root (`state/sideload/`, removed afterwards), then python-tuf's ngclient runs
over `DirectoryFetcher`, against the root this installation already trusts: the same signature,
version (rollback), expiry, length and hash checks as online. Nothing is fetched from a
network; nothing is written outside the staging folder but what the transaction writes.
"""

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

from updater._errors import ArchiveError
from updater._extract import Limits, extract
from updater._root import InstallRoot
from updater._trust import TrustedRepository

BUNDLE_FORMAT = "greenlight.bundle/1"
BASE_URL = "bundle://local/"
_CHUNK = 1024 * 1024


class DirectoryFetcher(FetcherInterface):
    """Serves `bundle://local/<path>` from a folder; a missing file is an HTTP-like 404."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.open_range(url, 0)[1]

    def open_range(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}/" != BASE_URL:
            raise exceptions.DownloadError(f"{url}: not inside the bundle")
        path = (self.folder / unquote(parts.path).lstrip("/")).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            raise exceptions.DownloadHTTPError(f"{url}: not in the bundle", 404)
        return offset, self._chunks(path, offset)

    @staticmethod
    def _chunks(path: Path, offset: int) -> Iterator[bytes]:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(_CHUNK):
                yield chunk


@dataclass
class Bundle:
    channel: str
    release: str
    expires: str
    repository: TrustedRepository


@contextmanager
def opened_bundle(root: InstallRoot, path: Path) -> Iterator[Bundle]:
    staging = root.state / "sideload"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if not path.is_file():
            raise ArchiveError(f"{path}: no such bundle file")
        extract(path, staging, Limits(max_ratio=50))
        try:
            manifest = json.loads((staging / "bundle.json").read_text())
            if manifest.get("format") != BUNDLE_FORMAT:
                raise ValueError(manifest.get("format"))
            channel, release = str(manifest["channel"]), str(manifest["release"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ArchiveError(f"{path.name}: not a Greenlight bundle (no valid bundle.json)") from None
        fetcher = DirectoryFetcher(staging)
        repository = TrustedRepository(root.metadata_dir, BASE_URL + "metadata/",
                                       BASE_URL + "targets/", fetcher=fetcher)
        yield Bundle(channel, release, str(manifest.get("expires")), repository)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
