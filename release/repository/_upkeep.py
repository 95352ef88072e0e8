"""Keeping a repository alive: refreshing what expires, and verifying it as a client would."""

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tuf.api.metadata import Snapshot, Timestamp

from greenlight.channels import BUNDLE_BASE_URL, GreenlightError, Record
from greenlight.release._errors import Conflict, MetadataError, NotFound
from greenlight.release.repository._channels import channels
from greenlight.release.repository._repository import FileRepository, all_or_nothing
from greenlight.updater.trust import DirectoryFetcher, Downloads, TrustedRepository

__all__ = ["VerifyResult", "expiring", "refresh", "renewal", "verify"]


@all_or_nothing
def refresh(repo: FileRepository) -> dict[str, str]:
    """New timestamp and snapshot versions with fresh expiry (for a timer or cron job).

    Raises:
        NotFound: no repository at `repo.path`.
        Conflict: roles await signatures (finish those first).
        KeysError: no private key for snapshot or timestamp.
    """
    if not repo.exists():
        raise NotFound(f"{repo.path}: no repository here")
    if repo.pending():
        raise Conflict(
            f"roles await signatures: {', '.join(repo.pending())}; finish those first")
    repo.do_snapshot(force=True)
    repo.do_timestamp(force=True)
    return {r: f"{repo.open(r).signed.expires:%Y-%m-%dT%H:%M:%SZ}"
            for r in (Snapshot.type, Timestamp.type)}


def renewal(role: str) -> str:
    """The command that re-signs `role` with a fresh expiry."""
    if role in (Snapshot.type, Timestamp.type):
        return "release refresh"
    if role == "root":
        return "release rotate --role root"
    return "its next signed change (publish, keys, rotate)"


def expiring(repo: FileRepository, within: timedelta) -> dict[str, datetime]:
    """Roles whose published version expires within `within` from now.

    Raises:
        NotFound: no repository at `repo.path`.
    """
    if not repo.exists():
        raise NotFound(f"{repo.path}: no repository here")
    horizon = datetime.now(UTC) + within
    roles = ["root", "timestamp", "snapshot", *repo.targets_roles()]
    found = {}
    for role in roles:
        expires = repo.open(role).signed.expires
        if expires <= horizon:
            found[role] = expires
    return found


class VerifyResult(Record):
    """What `release verify` checked, as a client would."""

    repository: str
    root_version: int
    channels: dict[str, str]
    artifacts_verified: int


def verify(repo: FileRepository) -> VerifyResult:
    """Verify the published tree offline as a client would: from the first root through the
    chain, every channel file, and every artifact the channels name (hashes of the bytes).

    Raises:
        NotFound: no repository at `repo.path`.
        MetadataError: verification failed: a client would refuse what is published.
    """
    if not repo.exists():
        raise NotFound(f"{repo.path}: no repository here")
    work = Path(tempfile.mkdtemp(prefix="greenlight-verify-"))
    try:
        (work / "meta").mkdir()
        shutil.copyfile(repo.metadata_dir / "1.root.json", work / "meta" / "root.json")
        client = TrustedRepository(work / "meta", BUNDLE_BASE_URL + "metadata/",
                                   BUNDLE_BASE_URL + "targets/",
                                   fetcher=DirectoryFetcher(repo.path))
        store = Downloads(work / "store")
        checked: dict[str, str] = {}
        artifacts = 0
        try:
            client.refresh()
            for name in channels(repo):
                channel_file, _ = client.channel_file(name)
                for component, artifact in channel_file.components.items():
                    client.download(client.artifact_info(component, artifact), store)
                    artifacts += 1
                checked[name] = channel_file.release
        except GreenlightError as e:
            raise MetadataError(f"verification failed: {e}") from None
        return VerifyResult(repository=str(repo.path), root_version=repo.root().version,
                            channels=checked, artifacts_verified=artifacts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
