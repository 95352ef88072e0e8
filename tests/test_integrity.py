"""Integrity at rest: bytes verified once are verified again at the moment they are used."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from greenlight.release import current_channel_file, init_repository, publish
from greenlight.updater.operations import download, open_repository
from greenlight.updater.store import InstallRoot

from conftest import MARKER_PRODUCT, builtin_server

BIN = Path(sys.executable).parent


def test_a_tampered_kept_artifact_is_caught_and_fetched_again(tmp_path, builds):
    """An artifact kept in downloads/ with one byte changed, the same size: hashed as it is
    unpacked, discarded, fetched again (recorded in the report), and the genuine release
    runs."""
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    with builtin_server(repo.path) as server:
        path = tmp_path / "root"
        done = subprocess.run([str(BIN / "updater"), "init", "--root", str(path), "--repo",
                               server.url, "--trust", str(repo.metadata_dir / "1.root.json")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with (path / "greenlight.toml").open("a") as f:
            f.write(MARKER_PRODUCT)
        root = InstallRoot(path)
        download(root, open_repository(root))  # fetched and verified ahead of the install
        core = current_channel_file(repo, "stable").components["core"]
        kept = path / "downloads" / core.sha256
        data = bytearray(kept.read_bytes())
        data[len(data) // 2] ^= 0xFF
        kept.write_bytes(bytes(data))  # the same size, other bytes
        done = subprocess.run([str(BIN / "updater"), "upgrade", "--root", str(path), "--json"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["installed"] == "1.0" and report["bytes_fetched"] == core.length
        assert any(d["component"] == "core" and "no longer matched" in d["reason"]
                   for d in report["deltas"]), report["deltas"]
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == core.sha256
        genuine = builds("1.0")["core"]
        assert kept.read_bytes() == genuine.read_bytes()
        assert (path / "current" / "core" / "core.py").is_file()
