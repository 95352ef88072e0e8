"""The release pipeline for real teams: thresholds across machines, rotation, promotion,
yanking, staged rollout, expiry upkeep, verification; against repositories on 127.0.0.1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from greenlight.channels import rollout_bucket
from greenlight.release import (
    FileRepository,
    ReleaseError,
    change_keys,
    current_channel_file,
    expiring,
    export_staged,
    import_signatures,
    keygen,
    load_public_key,
    promote,
    publish,
    refresh,
    rollout,
    rotate,
    sign_file,
    verify,
    yank,
)
from greenlight.updater import TrustError
from greenlight.updater.operations import check, open_repository, upgrade
from greenlight.updater.product import init_root
from greenlight.updater.store import InstallRoot

from conftest import builtin_server

BIN = Path(sys.executable).parent


def client(tmp: Path, server, repo: FileRepository, channel: str = "stable",
           name: str = "root") -> InstallRoot:
    return init_root(tmp / name, server.url,
                              (repo.metadata_dir / "1.root.json").read_bytes(), channel)


def cosign(repo: FileRepository, role: str, key: Path, tmp: Path) -> dict:
    """Another machine signs the staged version of `role` with `key`, then it is imported."""
    exported = export_staged(repo, role, tmp / f"{role}.json")
    sign_file(exported, key)
    return import_signatures(repo, exported)


@pytest.fixture
def team(tmp_path, published: FileRepository):
    """root 2-of-3, stable 2-of-2, beta 1-of-1; the second keys live on other machines."""
    alice, _ = keygen(tmp_path / "alice", "root")
    bob, bob_pub = keygen(tmp_path / "bob", "root")
    _, alice_pub = alice, next((tmp_path / "alice").glob("*.pub.pem"))
    change_keys(published, "root", add=[load_public_key(alice_pub), load_public_key(bob_pub)],
                threshold=2)
    assert published.pending() == ["root"]
    assert cosign(published, "root", alice, tmp_path).published
    carol, carol_pub = keygen(tmp_path / "carol", "channel-stable")
    change_keys(published, "channel-stable", add=[load_public_key(carol_pub)], threshold=2)
    assert cosign(published, "channel-stable", carol, tmp_path).published
    return {"alice": alice, "bob": bob, "carol": carol}


def test_thresholds_publish_only_when_met(tmp_path, team, published, builds):
    root_role = published.root().roles["root"]
    assert (root_role.threshold, len(root_role.keyids)) == (2, 3)
    stable = published.authorizing_role("channel-stable")
    assert (stable.threshold, len(stable.keyids)) == (2, 2)
    assert published.authorizing_role("channel-beta").threshold == 1

    with builtin_server(published.path) as server:
        machine = client(tmp_path, server, published)
        assert check(machine, open_repository(machine)).available == "1.0"
        publish(published, "stable", "1.2", builds("1.2"))
        assert published.pending() == ["channel-stable"]
        assert check(machine, open_repository(machine)).available == "1.0"  # nothing visible
        with pytest.raises(ReleaseError, match="awaiting signatures"):
            publish(published, "stable", "1.3", builds("1.3"))
        result = cosign(published, "channel-stable", team["carol"], tmp_path)
        assert result.published and result.signatures == 2
        assert check(machine, open_repository(machine)).available == "1.2"
        publish(published, "beta", "1.4", builds("1.4"))  # 1-of-1: at once
        assert published.pending() == []


def test_a_signature_from_a_key_outside_the_role_does_not_count(tmp_path, team, published,
                                                                builds):
    publish(published, "stable", "1.2", builds("1.2"))
    stranger, _ = keygen(tmp_path / "mallory", "channel-stable")
    result = cosign(published, "channel-stable", stranger, tmp_path)
    assert not result.published and "threshold" in result.missing


def test_old_clients_follow_every_rotation(tmp_path, team, published, builds):
    with builtin_server(published.path) as server:
        machine = client(tmp_path, server, published)  # trusts root v1
        # root 2-of-3 with one key here: the new root needs alice (the old threshold) too.
        assert rotate(published, "root", threshold=2).awaiting_signatures == ["root"]
        assert cosign(published, "root", team["alice"], tmp_path).published
        for _ in range(2):  # now both root keys are here: rotations publish at once
            assert rotate(published, "root", threshold=2).awaiting_signatures == []
        for role in ("targets", "snapshot", "timestamp", "channel-beta", "artifacts"):
            assert rotate(published, role).awaiting_signatures == []
        rotate(published, "bin-00")  # every bin shares one key: all 256 re-signed
        assert published.root().version >= 5
        publish(published, "stable", "1.2", builds("1.2"))
        # stable is 2-of-2 with carol: stage and co-sign
        assert cosign(published, "channel-stable", team["carol"], tmp_path).published
        report = upgrade(machine, open_repository(machine))
        assert report.installed == "1.2"
        assert verify(published).channels == {"beta": "1.1", "stable": "1.2"}


def test_rotation_signed_below_threshold_is_refused(tmp_path, team, published):
    with builtin_server(published.path) as server:
        machine = client(tmp_path, server, published)
        check(machine, open_repository(machine))
        rotate(published, "root", threshold=2)
        staged = Metadata.from_bytes(published.staged_path("root").read_bytes())
        # An attacker (or a hurried engineer) publishes it with the old threshold unmet.
        (published.metadata_dir / f"{staged.signed.version}.root.json").write_bytes(
            staged.to_bytes())
        with pytest.raises(TrustError, match="root"):
            check(machine, open_repository(machine))


def test_promote_points_at_the_same_bytes(tmp_path, published):
    before = sorted(p for p in published.targets_dir.rglob("*") if "artifacts" in str(p))
    promoted = promote(published, "beta", "stable")
    beta = current_channel_file(published, "beta")
    assert beta is not None
    assert promoted.components == beta.components and promoted.promoted_from == "beta"
    assert sorted(p for p in published.targets_dir.rglob("*") if "artifacts" in str(p)) == before
    with pytest.raises(ReleaseError, match="not newer"):
        promote(published, "beta", "stable")


def test_yank_moves_the_channel_back_and_clients_leave(tmp_path, published, builds):
    publish(published, "stable", "1.2", builds("1.2"))
    with builtin_server(published.path) as server:
        machine = client(tmp_path, server, published)
        assert upgrade(machine, open_repository(machine)).installed == "1.2"
        yanked = yank(published, "stable", "1.2", "corrupts the session store")
        assert yanked.release == "1.0" and yanked.revoked[0].version == "1.2"
        checked = subprocess.run([str(BIN / "updater"), "check", "--root", str(machine.path),
                                  "--json"], capture_output=True, text=True)
        # check is read-only: it says so loudly, and changes nothing.
        assert checked.returncode == 14, checked.stdout + checked.stderr
        assert "corrupts the session store" in json.loads(checked.stdout)["yanked"]
        assert machine.installed_version() == "1.2"
        done = subprocess.run([str(BIN / "updater"), "upgrade", "--root", str(machine.path),
                               "--json"], capture_output=True, text=True)
        assert done.returncode == 20, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["outcome"] == "rolled-back" and report["installed"] == "1.0"
        assert "corrupts the session store" in report["incident"]["summary"]
        assert machine.installed_version() == "1.0"
        status = json.loads(subprocess.run(
            [str(BIN / "updater"), "status", "--root", str(machine.path), "--json"],
            capture_output=True, text=True).stdout)
        assert [k.split("@")[0] for k in status["quarantined"]] == ["1.2"]
        # A rollback by hand never reinstalls the yanked release it just left.
        back = subprocess.run([str(BIN / "updater"), "rollback", "--root", str(machine.path)],
                              capture_output=True, text=True)
        assert back.returncode == 9 and "no previous release" in back.stderr, back.stdout
        assert machine.installed_version() == "1.0"
        events = [e["event"] for e in json.loads(subprocess.run(
            [str(BIN / "updater"), "history", "--root", str(machine.path), "--json"],
            capture_output=True, text=True).stdout)["entries"]]
        # nothing -> 1.2, then 1.2 -> 1.0: a move down, for the yank
        assert events == ["upgraded", "downgraded", "yanked"]
    with pytest.raises(ReleaseError, match="already yanked"):
        yank(published, "stable", "1.2", "again")
    with pytest.raises(ReleaseError, match="only good release"):
        yank(published, "stable", "1.0", "everything is bad")


def test_staged_rollout_is_deterministic_per_installation(tmp_path, published, builds):
    publish(published, "stable", "1.2", builds("1.2"), rollout_percent=50)
    with builtin_server(published.path) as server:
        machines = [client(tmp_path, server, published, name=f"m{i}") for i in range(12)]
        # Installation ids chosen so that six fall inside the 50% and six outside: the test
        # sees both sides every time, not by chance.
        candidates = (f"{n:032x}" for n in range(10_000))
        inside = [c for c in candidates if rollout_bucket(c, "stable", "1.2") < 50][:6]
        outside = [c for c in (f"{n:032x}" for n in range(10_000))
                   if rollout_bucket(c, "stable", "1.2") >= 50][:6]
        for m, chosen in zip(machines, inside + outside, strict=True):
            (m.state / "installation-id").parent.mkdir(parents=True, exist_ok=True)
            (m.state / "installation-id").write_text(chosen + "\n")
        seen = {}
        for m in machines:
            report = check(m, open_repository(m))
            assert report.rollout is not None and report.rollout.percent == 50
            expected = rollout_bucket(m.installation_id, "stable", "1.2") < 50
            assert report.rollout.in_rollout is expected
            assert check(m, open_repository(m)).rollout.in_rollout is expected  # same answer
            outcome = upgrade(m, open_repository(m))
            # Outside, a fresh machine gets the release before the rollout, never 1.2.
            assert (outcome.outcome, outcome.installed) == (
                ("upgraded", "1.2") if expected else ("upgraded", "1.0")), outcome
            seen[expected] = True
        assert seen == {True: True, False: True}
        rollout(published, "stable", halt=True)
        late = client(tmp_path, server, published, name="late")
        assert check(late, open_repository(late)).rollout.in_rollout is False
        rollout(published, "stable", percent=100)
        assert check(late, open_repository(late)).rollout is None


def test_refresh_and_expiry_check(tmp_path, published):
    from datetime import timedelta

    assert set(expiring(published, timedelta(days=8))) == {"timestamp"}
    assert expiring(published, timedelta(hours=1)) == {}
    before = published.timestamp().version
    refresh(published)
    assert published.timestamp().version == before + 1
    soon = subprocess.run([str(BIN / "release"), "refresh", str(published.path), "--check",
                           "--within", "8d"], capture_output=True, text=True)
    assert soon.returncode == 1 and "timestamp expires" in soon.stdout
    fine = subprocess.run([str(BIN / "release"), "refresh", str(published.path), "--check",
                           "--within", "1h"], capture_output=True, text=True)
    assert fine.returncode == 0


def test_verify_finds_a_damaged_artifact(published):
    assert verify(published).artifacts_verified == 4
    stored = next(published.targets_dir.glob("artifacts/ui/1.1/*"))
    data = stored.read_bytes()
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    done = subprocess.run([str(BIN / "release"), "verify", str(published.path)],
                          capture_output=True, text=True)
    assert done.returncode == 6 and "artifacts/ui/1.1/ui-1.1.tar.gz refused" in done.stderr


def test_key_files_stay_private(tmp_path, published, builds):
    key = next(published.keys.folder.glob("channel-stable.*.pem"))
    secret = key.read_text()
    key.chmod(0o644)
    done = subprocess.run([str(BIN / "release"), "publish", str(published.path), "--channel",
                           "stable", "--version", "1.5",
                           f"--component=core={builds('1.5')['core']}"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    assert "release: warning:" in done.stderr and "chmod 600" in done.stderr
    key.chmod(0o600)
    key.write_text(secret[:40] + "garbage\n")
    broken = subprocess.run([str(BIN / "release"), "publish", str(published.path), "--channel",
                             "stable", "--version", "1.6",
                             f"--component=core={builds('1.6')['core']}"],
                            capture_output=True, text=True)
    assert broken.returncode == 4  # keys
    assert "not a readable unencrypted PKCS#8 private key" in broken.stderr
    assert secret[30:60] not in broken.stderr + broken.stdout
    private, public = keygen(tmp_path / "k", "x")
    assert oct(private.stat().st_mode & 0o777) == "0o600"


def test_status_shows_thresholds_rollout_and_pending(team, published, builds):
    publish(published, "stable", "1.2", builds("1.2"))
    done = subprocess.run([str(BIN / "release"), "status", str(published.path), "--json"],
                          capture_output=True, text=True)
    status = json.loads(done.stdout)
    roles = {r["role"]: r for r in status["roles"]}
    assert (roles["root"]["threshold"], roles["root"]["keys"]) == (2, 3)
    assert status["awaiting_signatures"] == ["channel-stable"]
    assert {c["channel"]: c["rollout"] for c in status["channels"]} == {"beta": "all",
                                                                       "stable": "all"}
