"""A full disk: upgrade, sideload, publish and bundle on a small tmpfs (mounted here when the
tests run as root, else skipped with the reason). Exit 7 for the updater, one line and exit 1
for the pipeline; nothing half-written; the next run after space is freed succeeds."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight.release import build_bundle, init_repository, publish, serving

BIN = Path(sys.executable).parent


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Take all the space on `disk` but `leave` bytes."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with filler.open("wb") as f:
        f.truncate(0)
        chunk = b"\0" * 65536
        left = max(0, free - leave)
        while left > 0:
            try:
                left -= f.write(chunk[:min(left, len(chunk))])
            except OSError:
                break
    return filler


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name not in ("lock", "filler")}


def updater(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "updater"), *args], capture_output=True, text=True,
                          timeout=300)


def test_upgrade_and_sideload_on_a_full_disk(tmp_path, small_disk, builds):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    with serving(repo.path) as server:
        root = small_disk / "root"
        assert updater("init", "--root", str(root), "--repo", server.url, "--trust",
                       str(repo.metadata_dir / "1.root.json")).returncode == 0
        assert updater("upgrade", "--root", str(root)).returncode == 0
        publish(repo, "stable", "1.1", builds("1.1"), deltas=False)
        bundle = tmp_path / "stable.bundle"
        build_bundle(repo, "stable", bundle)
        before = tree(root)
        filler = fill(small_disk, leave=8 * 1024)
        for args in (["upgrade"], ["sideload", str(bundle)]):
            done = updater(*args, "--root", str(root))
            assert done.returncode == 7, (args, done.stdout, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
            assert os.readlink(root / "current").startswith("releases/1.0@")
            assert not (root / "state" / "journal.json").exists()
            assert not list((root / "releases").glob(".staging-*"))
            # Verified metadata may move forward; the installation itself is untouched.
            def kept(files: dict[str, bytes]) -> dict[str, bytes]:
                return {k: v for k, v in files.items()
                        if not k.startswith(("downloads/", "state/metadata/", "state/channels/"))}

            assert kept(tree(root)) == kept(before)
        # The agent's cycle says it as the commands do, not as a bug of its own.
        updater("agent", "--once", "--root", str(root))
        log = (root / "logs" / "agent.log").read_text()
        assert "No space left on device" in log and "internal error" not in log, log
        filler.unlink()
        done = updater("upgrade", "--root", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
        assert os.readlink(root / "current").startswith("releases/1.1@")


def test_publish_and_bundle_on_a_full_disk(tmp_path, small_disk, builds):
    repo = init_repository(small_disk / "repo", tmp_path / "keys")
    publish(repo, "stable", "1.0", builds("1.0"))
    before = tree(repo.path)
    filler = fill(small_disk, leave=4 * 1024)
    done = subprocess.run([str(BIN / "release"), "publish", str(repo.path), "--channel",
                           "stable", "--version", "1.1",
                           f"--component=core={builds('1.1')['core']}"],
                          capture_output=True, text=True)
    assert done.returncode == 7 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert tree(repo.path) == before
    out = small_disk / "stable.bundle"
    done = subprocess.run([str(BIN / "release"), "bundle", str(repo.path), "--channel",
                           "stable", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 7 and "Traceback" not in done.stderr, done.stderr
    assert tree(repo.path) == before and not out.exists()
    filler.unlink()
    publish(repo, "stable", "1.1", builds("1.1"))
    assert build_bundle(repo, "stable", out).release == "1.1"
