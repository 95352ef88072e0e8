"""`release` as a release engineer types it: what docs/release.md promises of publish, promote,
keys and signing, each checked through the command line and the signed metadata it leaves."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from greenlight.release import FileRepository, current_channel_file, serving

BIN = Path(sys.executable).parent


def release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "release"), *args], capture_output=True, text=True,
                          timeout=120)


def archive(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def repo(tmp_path) -> FileRepository:
    path = tmp_path / "repo"
    done = release("init", str(path))
    assert done.returncode == 0, done.stderr
    return FileRepository(path)


def _machine(root: Path, url: str, repo: FileRepository) -> Path:
    """A root made by `updater init`, trusting `repo`'s first root."""
    init = subprocess.run([str(BIN / "updater"), "init", "--root", str(root), "--repo", url,
                           "--trust", str(repo.metadata_dir / "1.root.json")],
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    return root


def publish(repo: FileRepository, channel: str, version: str, core: Path,
            *extra: str) -> subprocess.CompletedProcess[str]:
    done = release("publish", str(repo.path), "--channel", channel, "--version", version,
                   "--component", f"core={core}", *extra)
    assert done.returncode == 0, done.stderr
    return done


def test_a_channel_other_than_stable_falls_back_to_stable_by_default(tmp_path, repo):
    core = archive(tmp_path / "core.tgz", {"core.py": b"print('1.0')\n"})
    publish(repo, "stable", "1.0", core)
    publish(repo, "beta", "1.1", core)
    publish(repo, "nightly", "1.2", core, "--fallback", "beta")
    assert current_channel_file(repo, "stable").fallback is None
    assert current_channel_file(repo, "beta").fallback == "stable"
    assert current_channel_file(repo, "nightly").fallback == "beta"



@pytest.mark.parametrize(("channel", "fallback", "code", "says"), [
    ("beta", "stabel", 3, "--fallback stabel: no channel 'stabel' is published here "
                          "(published: beta, stable)"),
    ("beta", "none", 3, "--fallback none: no channel 'none' is published here"),
    ("beta", "beta", 2, "--fallback beta: channel 'beta' cannot fall back to itself"),
    ("stable", "beta", 2, "--fallback beta: a cycle of fallbacks: stable -> beta -> stable"),
    ("beta", "Stable!", 2, "--fallback Stable!: "),
])
def test_a_fallback_names_a_published_channel_and_never_a_cycle(tmp_path, repo, channel,
                                                               fallback, code, says):
    """A machine that falls back follows the channel its release named: a typo, the channel
    itself or a cycle would leave it on nothing; refused in one line, nothing published."""
    core = archive(tmp_path / "core.tgz", {"core.py": b"print('1.0')\n"})
    publish(repo, "stable", "1.0", core)
    publish(repo, "beta", "1.1", core)
    before = current_channel_file(repo, channel)
    done = release("publish", str(repo.path), "--channel", channel, "--version", "1.2",
                   "--component", f"core={core}", "--fallback", fallback)
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "pydantic" not in done.stderr and "Traceback" not in done.stderr
    assert current_channel_file(repo, channel) == before


def test_a_fresh_machine_outside_a_halted_rollout_gets_the_release_before_it(tmp_path, repo):
    core = archive(tmp_path / "core.tgz", {"core.py": b"print('1.0')\n"})
    publish(repo, "stable", "1.0", core)
    publish(repo, "stable", "1.1", archive(tmp_path / "core-1.1.tgz", {"core.py": b"1.1\n"}),
            "--rollout", "10", "--without-rehearsal", "a test of the rollout's halt")
    assert release("rollout", str(repo.path), "--channel", "stable", "--halt").returncode == 0
    carried = current_channel_file(repo, "stable")
    assert carried.release == "1.1" and carried.rollout.halted
    assert carried.rollout.previous.release == "1.0"
    with serving(repo.path) as server:
        root = _machine(tmp_path / "machine", server.url, repo)
        check = subprocess.run([str(BIN / "updater"), "check", "--root", str(root)],
                               capture_output=True, text=True)
        assert check.returncode == 10, check.stdout + check.stderr
        assert "1.0 available (installed: nothing); 1.1 (" in check.stdout
        assert "staged rollout is HALTED" in check.stdout
        done = subprocess.run([str(BIN / "updater"), "upgrade", "--root", str(root), "--json"],
                              capture_output=True, text=True)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["outcome"] == "upgraded", done.stdout + done.stderr
    assert report["installed"] == "1.0"


def test_a_delta_is_kept_only_when_under_half_the_full_artifact(tmp_path, repo):
    """A small change gets a delta; a release whose bytes share nothing with the last gets
    none, since its delta would be no smaller than half of the artifact."""
    shared = os.urandom(400_000)
    publish(repo, "stable", "1.0", archive(tmp_path / "1.0.tgz", {"core.bin": shared}))
    done = publish(repo, "stable", "1.1", archive(
        tmp_path / "1.1.tgz", {"core.bin": shared[:1000] + b"x" + shared[1001:]}))
    small = current_channel_file(repo, "stable").components["core"]
    assert [d.from_version for d in small.deltas] == ["1.0"]
    assert small.deltas[0].length < small.length // 2
    assert (f"deltas: core from 1.0 {small.deltas[0].length:,} B (zstd-prefix, "
            in done.stdout), done.stdout
    done = publish(repo, "stable", "1.2", archive(tmp_path / "1.2.tgz",
                                                  {"core.bin": os.urandom(400_000)}))
    assert "deltas: none" in done.stdout
    unrelated = current_channel_file(repo, "stable").components["core"]
    assert unrelated.deltas == []
    assert not list((repo.targets_dir / "deltas").rglob("*1.2*"))


def test_no_deltas_publishes_none(tmp_path, repo):
    shared = os.urandom(200_000)
    publish(repo, "stable", "1.0", archive(tmp_path / "1.0.tgz", {"core.bin": shared}))
    publish(repo, "stable", "1.1", archive(tmp_path / "1.1.tgz", {"core.bin": shared + b"!"}),
            "--no-deltas")
    assert current_channel_file(repo, "stable").components["core"].deltas == []


def test_promote_a_chosen_version_points_at_the_same_bytes(tmp_path, repo):
    built = archive(tmp_path / "1.1.tgz", {"core.py": b"1.1"})
    publish(repo, "beta", "1.1", built)
    beta_11 = current_channel_file(repo, "beta").components["core"]
    publish(repo, "beta", "1.2", archive(tmp_path / "1.2.tgz", {"core.py": b"1.2"}))
    done = release("promote", str(repo.path), "--from", "beta", "--to", "stable",
                   "--version", "1.1", "--without-rehearsal", "a test of promote's bytes")
    assert done.returncode == 0, done.stderr
    stable = current_channel_file(repo, "stable")
    assert stable.release == "1.1" and current_channel_file(repo, "beta").release == "1.2"
    promoted = stable.components["core"]
    assert (promoted.target, promoted.sha256) == (beta_11.target, beta_11.sha256)
    assert promoted.sha256 == hashlib.sha256(built.read_bytes()).hexdigest()
    missing = release("promote", str(repo.path), "--from", "beta", "--to", "stable",
                      "--version", "0.9")
    assert missing.returncode == 3 and "0.9" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_keys_remove_retires_the_private_key_and_sign_status_shows_what_waits(tmp_path, repo):
    keys = Path(json.loads((repo.path / "repository.json").read_text())["keys"])
    core = archive(tmp_path / "core.tgz", {"core.py": b"x"})
    publish(repo, "stable", "1.0", core)
    assert release("sign", "status", str(repo.path)).stdout.strip() == (
        "nothing awaits signatures")

    # A second signer, whose private key stays on another machine: 2 of 2.
    other = tmp_path / "carol"
    made = release("keygen", "--out", str(other), "--name", "channel-stable")
    assert made.returncode == 0, made.stderr
    public = next(other.glob("*.pub.pem"))
    added = release("keys", str(repo.path), "--role", "channel-stable", "--public-key",
                    str(public), "--threshold", "2", "--json")
    assert added.returncode == 0, added.stderr
    change = json.loads(added.stdout)
    assert change["threshold"] == 2 and len(change["keyids"]) == 2

    # channel-stable, re-signed for 2 of 2, waits for carol.
    status = release("sign", "status", str(repo.path))
    assert status.returncode == 0 and status.stdout.strip() == (
        "channel-stable v2: targets's threshold for channel-stable is not met "
        "(channel-stable was signed by 1/2 keys)")
    assert change["awaiting_signatures"] == ["channel-stable"]

    # Remove the key held here: its private file goes to retired/, never to sign again.
    local = [k for k in change["keyids"] if k not in change["added"]]
    assert len(local) == 1 and list(keys.glob(f"channel-stable.{local[0][:16]}.pem"))
    removed = release("keys", str(repo.path), "--role", "channel-stable", "--remove",
                      local[0][:12], "--threshold", "1")
    assert removed.returncode == 0, removed.stderr
    assert "retired/" in removed.stdout
    assert not list(keys.glob(f"channel-stable.{local[0][:16]}.pem"))
    assert list((keys / "retired").glob(f"channel-stable.{local[0][:16]}.pem"))
    assert FileRepository(repo.path).authorizing_role("channel-stable").keyids == [
        change["added"][0]]
    wrong = release("keys", str(repo.path), "--role", "channel-stable", "--remove", "ffff")
    assert wrong.returncode == 4 and "has no key 'ffff'" in wrong.stderr


def test_expired_metadata_names_the_fix_on_both_sides(tmp_path, repo):
    """A timestamp left to expire: the machine refuses it and names `release refresh`,
    `release status` and `release refresh --check` say EXPIRED, and the refresh fixes it."""
    from datetime import UTC, datetime, timedelta

    from tuf.api.metadata import Metadata

    publish(repo, "stable", "1.0", archive(tmp_path / "core.tgz", {"core.py": b"1.0\n"}))
    path = repo.metadata_dir / "timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    repo.sign_and_store("timestamp", md)
    with serving(repo.path) as server:
        root = _machine(tmp_path / "machine", server.url, repo)

        def check() -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(BIN / "updater"), "check", "--root", str(root)],
                                  capture_output=True, text=True)

        refused = check()
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "metadata expired" in refused.stderr and "'release refresh'" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        status = release("status", str(repo.path))
        [line] = [s for s in status.stdout.splitlines() if s.startswith("timestamp")]
        assert "EXPIRED 2 days ago" in line and "renew: release refresh" in line, line
        due = release("refresh", str(repo.path), "--check", "--within", "1d")
        assert due.returncode == 1 and "timestamp EXPIRED at" in due.stdout, due.stdout
        assert release("refresh", str(repo.path)).returncode == 0
        status = release("status", str(repo.path))
        assert "EXPIRED" not in status.stdout
        assert check().returncode == 10


def test_the_collector_refuses_a_short_token_and_says_the_rule(tmp_path):
    short, good = tmp_path / "short", tmp_path / "good"
    short.write_text("abc123\n")
    good.write_text("a" * 32 + "\n")
    done = release("collector", "--db", f"sqlite:///{tmp_path / 'f.sqlite3'}", "--port", "9",
                   "--fleet-token-file", str(short), "--admin-token-file", str(good))
    assert done.returncode == 2, done.stderr
    assert "must hold one token of at least 16 characters, without spaces" in done.stderr
    assert "abc123" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
