"""A hostile world: the development server never hands out anything but metadata and targets,
and a pipeline command that lacks a key fails up front and changes nothing."""

import hashlib
import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenlight.release import FileRepository, ReleaseError, init_repository, publish, serving
from greenlight.release.repository._keys import KeyStore

BIN = Path(sys.executable).parent


def _get(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    address = url.removeprefix("http://")
    conn = http.client.HTTPConnection(address, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def legacy(tmp_path: Path, builds) -> FileRepository:
    """A repository whose keys and staged versions sit inside it, as older ones did."""
    repo = init_repository(tmp_path / "repo", tmp_path / "repo" / "keys")
    publish(repo, "stable", "1.0", builds("1.0"))
    (repo.path / "staged").mkdir()
    (repo.path / "staged" / "secret.json").write_text("staged secret")
    return repo


def test_init_keeps_keys_outside_the_repository_and_remembers_them(tmp_path: Path):
    repo = init_repository(tmp_path / "repo")
    assert repo.keys.folder == (tmp_path / "repo-keys").absolute()
    assert not (tmp_path / "repo" / "keys").exists()
    assert FileRepository(tmp_path / "repo").keys.folder == repo.keys.folder
    with pytest.raises(ReleaseError, match="inside the served tree"):
        init_repository(tmp_path / "other", tmp_path / "other" / "metadata" / "keys")


@pytest.mark.parametrize("path", [
    "/metadata/../keys/{key}",
    "/metadata/%2e%2e/keys/{key}",
    "/metadata/..%2fkeys/{key}",
    "/targets/%2E%2E/%2E%2E/repo/keys/{key}",
    "/metadata/..\\keys/{key}",
    "/keys/{key}",
    "//keys/{key}",
    "/metadata/../staged/secret.json",
    "/staged/secret.json",
    "/metadata/../repository.json",
    "/metadata/",
    "/metadata/.",
])
def test_server_serves_nothing_but_metadata_and_targets(legacy: FileRepository, path: str):
    key = next(legacy.keys.folder.glob("root.*.pem")).name
    with serving(legacy.path) as server:
        status, body = _get(server.url, path.format(key=key))
    assert status == 404
    assert b"PRIVATE KEY" not in body and b"secret" not in body


def test_server_refuses_symlinks_and_foreign_hosts(legacy: FileRepository, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients")
    os.symlink(secret, legacy.targets_dir / "link.txt")
    os.symlink(legacy.path / "staged", legacy.targets_dir / "dir-link")
    with serving(legacy.path) as server:
        assert _get(server.url, "/targets/link.txt")[0] == 404
        assert _get(server.url, "/targets/dir-link/secret.json")[0] == 404
        assert _get(server.url, "/metadata/root.json")[0] == 200
        port = server.url.rsplit(":", 1)[1]
        assert _get(server.url, "/metadata/root.json", host=f"localhost:{port}")[0] == 200
        status, _ = _get(server.url, "/metadata/root.json", host=f"evil.example:{port}")
        assert status == 421


def test_a_publish_without_its_key_fails_up_front_and_changes_nothing(tmp_path: Path, builds):
    repo = init_repository(tmp_path / "repo", tmp_path / "keys")
    publish(repo, "stable", "1.0", builds("1.0"))
    before, keys_before = _tree(repo.path), _tree(tmp_path / "keys")
    empty = tmp_path / "empty-keys"
    empty.mkdir()
    done = subprocess.run(
        [str(BIN / "release"), "publish", str(repo.path), "--channel", "stable", "--version",
         "1.1", f"--component=core={builds('1.1')['core']}", "--keys", str(empty)],
        capture_output=True, text=True)
    assert done.returncode == 4  # keys
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no private key for role" in lines[0] and str(empty) in lines[0]
    assert "Traceback" not in done.stderr
    assert _tree(repo.path) == before and _tree(tmp_path / "keys") == keys_before
    assert not (repo.path / "staged").exists() and not list(empty.iterdir())
    # The repository remembers its keys: the next publish needs no --keys and succeeds.
    again = subprocess.run(
        [str(BIN / "release"), "publish", str(repo.path), "--channel", "stable", "--version",
         "1.1", f"--component=core={builds('1.1')['core']}"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert FileRepository(repo.path, KeyStore(tmp_path / "keys")).pending() == []


def test_the_installer_takes_only_a_folder_of_its_own(tmp_path: Path):
    from greenlight.updater import ConfigError
    from greenlight.updater.installer import check_owner

    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    check_owner(mine)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="others may write"):
        check_owner(shared)
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(ConfigError, match="not a folder"):
        check_owner(link)
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(ConfigError, match="owned by uid 65534"):
            check_owner(theirs)
