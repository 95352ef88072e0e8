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


def _updater(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "updater"), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_verify_names_what_changed_and_repair_restores_the_signed_tree(tmp_path, builds):
    """`updater verify` compares the installed tree with the file lists signed at publish:
    a changed byte (same size), a changed mode, a missing file and an extra one are each
    named (exit 16). `--repair` re-stages the release through the transaction, from the kept
    archive or, once that is gone, from the repository; a kill in the middle of a repair is
    undone by the next command; the genuine tree passes afterwards and the history says
    what happened."""
    import os

    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    with builtin_server(repo.path) as server:
        path = tmp_path / "root"
        done = _updater("init", "--root", str(path), "--repo", server.url, "--trust",
                        str(repo.metadata_dir / "1.root.json"))
        assert done.returncode == 0, done.stderr
        with (path / "greenlight.toml").open("a") as f:
            f.write(MARKER_PRODUCT)
        assert _updater("upgrade", "--root", str(path)).returncode == 0
        clean = _updater("verify", "--root", str(path))
        assert clean.returncode == 0 and " entries of core, ui as signed" in clean.stdout, \
            clean.stdout

        tree = path / "current" / "core"
        genuine = {p.relative_to(path / "current"): p.read_bytes()
                   for p in (path / "current").rglob("*") if p.is_file()}
        script = tree / "core.py"
        data = bytearray(script.read_bytes())
        data[len(data) // 2] ^= 0x01
        script.write_bytes(bytes(data))
        other = next(p for p in sorted(tree.rglob("*")) if p.is_file() and p != script)
        os.chmod(other, 0o777)
        gone = path / "current" / "ui" / "ui.py"
        gone.unlink()
        (tree / "planted.sh").write_text("#!/bin/sh\n")
        damaged = _updater("verify", "--root", str(path), "--json")
        assert damaged.returncode == 16, damaged.stdout + damaged.stderr
        said = {(d["kind"], d["path"], d["what"])
                for d in json.loads(damaged.stdout)["differences"]}
        assert said == {("changed", "core/core.py", "content"),
                        ("changed", f"core/{other.relative_to(tree)}", "mode"),
                        ("missing", "ui/ui.py", ""),
                        ("extra", "core/planted.sh", "")}, said

        # Killed after the swap, before the services start: the next command undoes it.
        env = {**os.environ, "GREENLIGHT_KILL_AT": "swap:after"}
        assert _updater("verify", "--root", str(path), "--repair", env=env).returncode == -9
        again = _updater("verify", "--root", str(path), "--json")
        assert again.returncode == 16 and not (path / "state" / "journal.json").exists()
        assert not list((path / "releases").glob(".*-1.0@*")), "left a repair folder behind"

        core = current_channel_file(repo, "stable").components["core"]
        (path / "downloads" / core.sha256).unlink()  # no kept copy: fetched through TUF
        fixed = _updater("verify", "--root", str(path), "--repair")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert fixed.stdout.startswith("repaired: 1.0 differs"), fixed.stdout
        assert _updater("verify", "--root", str(path)).returncode == 0
        assert {p.relative_to(path / "current"): p.read_bytes()
                for p in (path / "current").rglob("*") if p.is_file()} == genuine
        assert _updater("health", "--root", str(path)).returncode == 0
        events = [json.loads(line)["event"]
                  for line in (path / "state" / "history.jsonl").read_text().splitlines()]
        assert events[-2:] == ["damaged", "repaired"], events


def test_a_sideloaded_release_is_repaired_from_its_bundle(tmp_path, builds):
    """An air-gapped machine keeps no archive of a sideloaded release and reaches no
    repository: `verify --repair --bundle FILE` takes the verified bytes from the bundle it
    came on, through the same TUF client; a bundle of another release is refused in one
    line and changes nothing."""
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    first, later = tmp_path / "1.0.bundle", tmp_path / "1.1.bundle"
    made = subprocess.run([str(BIN / "release"), "bundle", str(repo.path), "--channel",
                           "stable", "-o", str(first)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    publish(repo, "stable", "1.1", builds("1.1"))
    made = subprocess.run([str(BIN / "release"), "bundle", str(repo.path), "--channel",
                           "stable", "-o", str(later)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    path = tmp_path / "root"
    done = _updater("init", "--root", str(path), "--repo", "http://127.0.0.1:9", "--trust",
                    str(repo.metadata_dir / "1.root.json"))
    assert done.returncode == 0, done.stderr
    with (path / "greenlight.toml").open("a") as f:
        f.write(MARKER_PRODUCT)
    try:
        loaded = _updater("sideload", str(first), "--root", str(path))
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        for kept in (path / "downloads").glob("*"):  # whatever was kept, none is now
            if kept.is_file():
                kept.unlink()
        genuine = (path / "current" / "core" / "core.py").read_bytes()
        (path / "current" / "core" / "core.py").write_bytes(genuine + b"# planted\n")

        nowhere = _updater("verify", "--root", str(path), "--repair")
        assert nowhere.returncode == 5 and "cannot reach the repository" in nowhere.stderr, \
            nowhere.stdout + nowhere.stderr
        alone = _updater("verify", "--root", str(path), "--bundle", str(first))
        assert alone.returncode == 2 and "pass --repair too" in alone.stderr
        other = _updater("verify", "--root", str(path), "--repair", "--bundle", str(later))
        assert other.returncode == 8 and other.stderr.count("\n") == 1, other.stderr
        assert "carries 1.1, not the installed 1.0" in other.stderr
        assert _updater("verify", "--root", str(path)).returncode == 16

        fixed = _updater("verify", "--root", str(path), "--repair", "--bundle", str(first))
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert fixed.stdout.startswith("repaired: 1.0 differs"), fixed.stdout
        assert (path / "current" / "core" / "core.py").read_bytes() == genuine
        assert _updater("verify", "--root", str(path)).returncode == 0
        assert _updater("health", "--root", str(path)).returncode == 0
    finally:
        _updater("stop", "--root", str(path))
