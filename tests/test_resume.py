"""Resumable downloads: a cut connection resumes with a Range request and the file is
verified as a whole; a server that ignores Range still works."""

import io
import os
import tarfile
from pathlib import Path

import pytest

from greenlight.release import FileRepository, init_repository, publish, serving
from greenlight.updater import TrustError
from greenlight.updater.operations import open_repository, upgrade
from greenlight.updater.product import init_root
from greenlight.updater.store import InstallRoot


@pytest.fixture
def blob_repo(tmp_path) -> tuple[FileRepository, int, str]:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        payload = os.urandom(1_500_000)
        info = tarfile.TarInfo("blob.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    archive = tmp_path / "blob-1.0.tar.gz"
    archive.write_bytes(data.getvalue())
    repo = init_repository(tmp_path / "repo")
    channel = publish(repo, "stable", "1.0", {"blob": archive})
    artifact = channel.components["blob"]
    return repo, artifact.length, artifact.sha256


def root_for(tmp: Path, url: str, repo: FileRepository) -> InstallRoot:
    return init_root(tmp / "root", url, (repo.metadata_dir / "1.root.json").read_bytes(),
                              "stable")


def test_cut_download_resumes_with_a_range_request(tmp_path, blob_repo):
    repo, length, _ = blob_repo
    with serving(repo.path) as server:
        root = root_for(tmp_path, server.url, repo)
        server.drop_once_after = 400_000
        server.reset_counts()
        report = upgrade(root, open_repository(root))
        assert report.installed == "1.0"
        assert [r.split()[-1] for r in server.ranges] == ["bytes=400000-"]
        assert server.bytes_sent < length + 200_000  # resumed, not fetched twice


def test_server_ignoring_range_still_works(tmp_path, blob_repo):
    repo, length, _ = blob_repo
    with serving(repo.path) as server:
        server.honour_ranges = False
        root = root_for(tmp_path, server.url, repo)
        server.drop_once_after = 400_000
        server.reset_counts()
        assert upgrade(root, open_repository(root)).installed == "1.0"
        assert len(server.ranges) == 1 and server.bytes_sent >= length + 400_000


def test_partial_left_by_an_earlier_run_is_resumed(tmp_path, blob_repo):
    repo, length, sha256 = blob_repo
    stored = repo.stored_target_path("artifacts/blob/1.0/blob-1.0.tar.gz", sha256)
    with serving(repo.path) as server:
        root = root_for(tmp_path, server.url, repo)
        partial = root.downloads / ".partial" / sha256
        partial.parent.mkdir(parents=True)
        partial.write_bytes(stored.read_bytes()[: length // 2])
        server.reset_counts()
        assert upgrade(root, open_repository(root)).installed == "1.0"
        assert [r.split()[-1] for r in server.ranges] == [f"bytes={length // 2}-"]
        assert not partial.exists()


def test_a_corrupt_partial_is_caught_as_a_whole_and_fetched_again(tmp_path, blob_repo):
    repo, length, sha256 = blob_repo
    with serving(repo.path) as server:
        root = root_for(tmp_path, server.url, repo)
        partial = root.downloads / ".partial" / sha256
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"\0" * (length // 2))
        server.reset_counts()
        assert upgrade(root, open_repository(root)).installed == "1.0"
        # Resumed from the kept bytes, refused as a whole, then fetched once from byte 0.
        assert [r.split()[-1] for r in server.ranges] == [f"bytes={length // 2}-"]
        asked = [p for p in server.paths if sha256 in p]
        assert len(asked) == 2, asked  # the resume, then one whole fetch: no third try
        sent = length - length // 2 + length  # the missing half, then the whole blob
        assert sent <= server.bytes_sent < sent + 100_000  # and metadata besides
        assert not partial.exists()


def test_a_lying_server_is_refused_and_leaves_no_partial(tmp_path, blob_repo):
    repo, length, sha256 = blob_repo
    (stored,) = repo.targets_dir.rglob(f"{sha256}.*")
    stored.write_bytes(b"\1" * length)
    with serving(repo.path) as server:
        root = root_for(tmp_path, server.url, repo)
        with pytest.raises(TrustError, match="does not match the signed"):
            upgrade(root, open_repository(root))
        assert not (root.downloads / ".partial" / sha256).exists()
        assert root.installed_version() is None
