"""The TUF client of an installation root: python-tuf's ngclient over the httpx fetcher.

`TrustedRepository` refreshes metadata (root chain, timestamp, snapshot, targets), reads a
channel file as a target of the channel's delegated role, and streams artifacts straight into
the content-addressed download store, hashing as the bytes arrive. ngclient's own
`download_target` spools to a temporary file, re-reads it to hash, then copies it; streaming
once is the same check (length and sha256 from signed targets metadata) at a third of the I/O.
Every python-tuf exception leaves this module as a `TrustError` or `NetworkError` with one line
that says what was refused and why.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from greenlight.channels import (
    VERSION,
    ChannelFile,
    ChannelFileError,
    ComponentArtifact,
    RolloutState,
    atomic_write,
    channel_target,
    fsync_dir,
    is_newer,
    rollout_target,
)
from greenlight.updater._errors import (
    ArchiveError,
    ConfigError,
    GreenlightError,
    NeedsNewer,
    NetworkError,
    NotFound,
    StoreError,
    TrustError,
)
from greenlight.updater.trust._downloads import Downloads, Opener, Progress, receive_verified
from greenlight.updater.trust._fetcher import (
    DEFAULT_MIN_RATE,
    HttpxFetcher,
    LocalRegions,
    RangedFetcher,
    user_agent,
)

__all__ = ["MissingFromBundle", "TrustedRepository", "explain", "verifying"]


class MissingFromBundle(tuf_errors.DownloadHTTPError):
    """A file the TUF client asked an offline bundle for is not in it (a broken bundle, not
    a network answer)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


def _url_of(detail: str) -> tuple[str | None, str]:
    """The fetcher's messages are 'URL: reason' (see `_fetcher`): split them."""
    url, sep, reason = detail.partition(": ")
    if sep and url.startswith(("http://", "https://")) and " " not in url:
        return url, reason
    return None, detail


def explain(error: Exception, what: str) -> GreenlightError:
    """Turn a python-tuf exception into one line a person can act on."""
    detail = str(error) or type(error).__name__
    match error:
        case MissingFromBundle():
            return ArchiveError(f"{what}: missing from the bundle ({detail})")
        case tuf_errors.DownloadHTTPError():
            url, _ = _url_of(detail)
            return NetworkError(f"{what}: the repository answered HTTP {error.status_code}"
                                + (f" for {url}" if url else ""))
        case tuf_errors.SlowRetrievalError():
            return NetworkError(f"{what}: repository too slow or unreachable: {detail}")
        case tuf_errors.DownloadLengthMismatchError():
            return TrustError(f"{what} refused: longer than its signed length: {detail}")
        case tuf_errors.DownloadError():
            url, reason = _url_of(detail)
            return NetworkError(f"{what}: cannot reach the repository"
                                + (f" at {url}" if url else "") + f": {reason}")
        case tuf_errors.ExpiredMetadataError():
            return TrustError(
                f"{what} refused: metadata expired: {detail}; nothing changed here. The "
                "publisher must re-sign it ('release refresh' renews timestamp and snapshot); "
                "then run this again")
        case tuf_errors.BadVersionNumberError():
            return TrustError(
                f"{what} refused: older metadata than already trusted (replay?): {detail}"
            )
        case tuf_errors.UnsignedMetadataError():
            return TrustError(
                f"{what} refused: signatures do not verify against the trusted root "
                f"(wrong root or tampered metadata): {detail}"
            )
        case tuf_errors.LengthOrHashMismatchError():
            return TrustError(f"{what} refused: length or hash mismatch (tampered?): {detail}")
        case tuf_errors.RepositoryError():
            return TrustError(f"{what} refused: {detail}")
        case OSError():
            return StoreError(f"{what}: cannot write local state: {detail}")
    return GreenlightError(f"{what}: {type(error).__name__}: {detail}")


@contextmanager
def verifying(what: str) -> Iterator[None]:
    """Map what python-tuf raises inside the block to one line about `what`.

    Raises:
        TrustError: metadata or a target refused (tampered, expired, replayed, wrong root).
        NetworkError: the repository unreachable, too slow, or answering an HTTP error.
        StoreError: the metadata cache could not be written.
    """
    try:
        yield
    except GreenlightError:
        raise
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError, OSError) as e:
        raise explain(e, what) from e


def _read_if_matching(path: Path | None, info: TargetFile) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
        info.verify_length_and_hashes(data)
    except (OSError, tuf_errors.LengthOrHashMismatchError):
        return None
    return data


class _DurableUpdater(Updater):
    """ngclient's Updater, whose metadata cache survives a power cut: each file is synced
    before its rename and its folder after (ngclient renames an unsynced temporary file, so a
    cut could leave a trusted root or a newer timestamp empty or torn; a torn root is a
    machine that can no longer update). Found by the recorded power-loss states of an upgrade
    (tests/test_power_loss.py)."""

    def _persist_file(self, filename: str, data: bytes) -> None:
        atomic_write(Path(filename), data, 0o600)

    def _update_root_symlink(self) -> None:
        super()._update_root_symlink()
        fsync_dir(Path(self._dir))


class TrustedRepository:
    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        targets_url: str,
        fetcher: FetcherInterface | None = None,
        bootstrap: bytes | None = None,
        timeout: float = 30.0,
        min_rate: int = DEFAULT_MIN_RATE,
    ) -> None:
        """A TUF client trusting `metadata_dir/root.json` (or `bootstrap`).

        Raises:
            ConfigError: there is no trusted root.
            TrustError: the trusted root is not valid.
        """
        self.metadata_dir = metadata_dir
        self.targets_url = targets_url.rstrip("/") + "/"
        self.fetcher = fetcher or HttpxFetcher(
            timeout, min_rate=min_rate, origins=[metadata_url, self.targets_url])
        config = UpdaterConfig(app_user_agent=user_agent())
        try:
            self._updater = _DurableUpdater(
                metadata_dir=str(metadata_dir),
                metadata_base_url=metadata_url,
                target_base_url=self.targets_url,
                fetcher=self.fetcher,
                config=config,
                bootstrap=bootstrap,
            )
        except FileNotFoundError:
            raise ConfigError(
                f"{metadata_dir / 'root.json'}: no trusted root; run 'updater init --trust ROOT'"
            ) from None
        except (tuf_errors.RepositoryError, ValueError) as e:
            raise TrustError(f"{metadata_dir / 'root.json'}: not a valid trusted root: {e}") from e
        self._refreshed = False

    def refresh(self) -> None:
        if not self._refreshed:
            with verifying("metadata"):
                self._updater.refresh()
            self._refreshed = True

    def target_info(self, path: str) -> TargetFile | None:
        self.refresh()
        with verifying(f"target {path}"):
            return self._updater.get_targetinfo(path)

    @cached_property
    def _consistent_snapshot(self) -> bool:
        # ngclient keeps the newest verified root as root.json once refresh() has run.
        self.refresh()
        root = Metadata[Root].from_file(str(self.metadata_dir / "root.json")).signed
        return bool(root.consistent_snapshot)

    def target_url(self, info: TargetFile) -> str:
        """Where a target is served; with consistent snapshots, prefixed by its first hash
        (the same rule as ngclient's download_target)."""
        directory, sep, name = info.path.rpartition("/")
        if self._consistent_snapshot:
            name = f"{next(iter(info.hashes.values()))}.{name}"
        return f"{self.targets_url}{directory}{sep}{name}"

    def channel_file(self, channel: str, cached: Path | None = None) -> tuple[ChannelFile, bytes]:
        """The channel's verified file; `cached` (a copy verified before) saves the download
        when its length and hashes still match the signed target.

        Raises:
            NotFound: the repository has no such channel.
            TrustError: the channel file or its signatures refused.
            NeedsNewer: the channel file needs a newer Greenlight than this one.
            NetworkError: the repository unreachable or too slow.
        """
        path = channel_target(channel)
        info = self.target_info(path)
        if info is None:
            raise NotFound(f"channel {channel!r} is not published in this repository")
        raw = _read_if_matching(cached, info)
        if raw is None:
            with verifying(f"channel file {path}"):
                raw = self.fetcher.download_bytes(self.target_url(info), info.length)
                info.verify_length_and_hashes(raw)
        try:
            channel_file = ChannelFile.from_json(raw, f"channel file {path}")
        except ChannelFileError as e:
            raise TrustError(str(e)) from None
        if channel_file.channel != channel:
            raise TrustError(
                f"channel file {path} refused: it names channel {channel_file.channel!r}"
            )
        if channel_file.requires is not None and is_newer(channel_file.requires, VERSION):
            need = NeedsNewer(f"{channel} {channel_file.release} needs Greenlight >= "
                              f"{channel_file.requires}; this machine runs {VERSION}: update "
                              "Greenlight first (docs/compatibility.md)")
            need.what = (f"{channel_file.release} needs Greenlight >= {channel_file.requires}; "
                         f"this machine runs {VERSION}")
            raise need
        return channel_file, raw

    def rollout_state(self, channel: str) -> RolloutState | None:
        """The online role's signed word on the channel's planned rollout, if it said any.

        Raises:
            TrustError: the rollout state is listed but refused.
            NetworkError: the repository unreachable or too slow.
        """
        path = rollout_target(channel)
        info = self.target_info(path)
        if info is None:
            return None
        with verifying(f"rollout state {path}"):
            raw = self.fetcher.download_bytes(self.target_url(info), info.length)
            info.verify_length_and_hashes(raw)
        try:
            return RolloutState.from_json(raw, f"rollout state {path}")
        except ChannelFileError as e:
            raise TrustError(str(e)) from None

    def artifact_info(self, name: str, artifact: ComponentArtifact) -> TargetFile:
        """The signed target of a component, cross-checked against the channel file.

        Raises:
            TrustError: the component is not a signed target, or the targets metadata and the
                channel file disagree on it.
        """
        info = self.target_info(artifact.target)
        if info is None:
            raise TrustError(f"artifact {artifact.target} refused: not a signed target")
        if info.length != artifact.length or info.hashes.get("sha256") != artifact.sha256:
            raise TrustError(
                f"artifact {artifact.target} refused: targets metadata and the channel file "
                f"disagree on component {name!r} (sha256 or length)"
            )
        return info

    def region(self, info: TargetFile) -> tuple[Path, int, int] | None:
        """Where a target's bytes already sit on this machine, to be read in place (a member
        of an offline bundle): (file, offset, length); None when it must be downloaded.

        Raises:
            TrustError: the bundle's member is not as long as the signed target.
        """
        if not isinstance(self.fetcher, LocalRegions):
            return None
        path, offset, length = self.fetcher.region(self.target_url(info))
        if length != info.length:
            raise TrustError(f"artifact {info.path} refused: {length} bytes in the bundle, "
                             f"{info.length} signed")
        return path, offset, length

    def download(self, info: TargetFile, store: Downloads,
                 progress: Progress | None = None) -> Path:
        """Stream a target into `store` unless it is already there; verified either way.

        Raises:
            TrustError: the target has no sha256, or its bytes do not match the signed length
                and hashes.
            NetworkError: the repository unreachable or too slow.
            StoreError: downloads/ could not be written (disk full, permissions).
        """
        if "sha256" not in info.hashes:
            raise TrustError(f"artifact {info.path} refused: its targets entry has no sha256")
        found = store.find(info.hashes["sha256"], info.length)
        if found is not None:
            return found
        with verifying(f"artifact {info.path}"):
            return store.receive(self._opener(info), info.hashes, info.length,
                                 f"artifact {info.path}", progress)

    def _opener(self, info: TargetFile) -> Opener:
        url = self.target_url(info)
        fetcher = self.fetcher
        if isinstance(fetcher, RangedFetcher):
            return lambda offset: fetcher.open_range(url, offset, info.length)
        return lambda offset: (0, fetcher.fetch(url))

    def download_to(self, info: TargetFile, dest: Path) -> Path:
        """Stream a target to `dest` (any hash algorithms), unless `dest` already matches."""
        try:
            with dest.open("rb") as f:
                info.verify_length_and_hashes(f)
            return dest
        except (OSError, tuf_errors.LengthOrHashMismatchError):
            pass
        with verifying(f"target {info.path}"):
            partial = dest.with_name(f".{dest.name}.partial")
            return receive_verified(self._opener(info), dest, partial, info.hashes, info.length,
                                    f"target {info.path}")
