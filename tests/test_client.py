"""The TUF client against real repositories on real servers (the dev server and nginx)."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Timestamp

from greenlight.release import FileRepository, init_repository, publish
from greenlight.updater import NetworkError, TrustError
from greenlight.updater.operations import check, open_repository, upgrade
from greenlight.updater.product import init_root
from greenlight.updater.store import InstallRoot, set_active_channel

from conftest import Served


def make_root(tmp: Path, served: Served, repo: FileRepository, channel: str = "stable",
              trust: bytes | None = None) -> InstallRoot:
    anchor = trust if trust is not None else (repo.metadata_dir / "1.root.json").read_bytes()
    return init_root(tmp / "root", served.url, anchor, channel)


def do_upgrade(root: InstallRoot):
    return upgrade(root, open_repository(root))


def test_check_then_upgrade_installs_the_channels_release(tmp_path, served, published):
    root = make_root(tmp_path, served, published)
    report = check(root, open_repository(root))
    assert (report.installed, report.available, report.update_available) == (None, "1.0", True)
    assert set(report.components) == {"core", "ui"}

    result = do_upgrade(root)
    assert (result.outcome, result.to_version) == ("upgraded", "1.0")
    assert root.installed_version() == "1.0"
    assert (root.current / "core" / "core.py").is_file()
    assert (root.current / "ui" / "build.json").read_text().count('"1.0"') == 1
    assert check(root, open_repository(root)).update_available is False


def test_second_upgrade_downloads_nothing_new(tmp_path, served, published):
    root = make_root(tmp_path, served, published)
    do_upgrade(root)
    served.reset()
    assert do_upgrade(root).outcome == "up-to-date"
    assert not [p for p in served.paths() if "/artifacts/" in p]

    set_active_channel(root, "beta", "test")
    assert do_upgrade(root).to_version == "1.1"
    set_active_channel(root, "stable", "test")
    served.reset()
    back = do_upgrade(root)
    assert (back.to_version, back.bytes_fetched) == ("1.0", 0)
    assert not [p for p in served.paths() if "/artifacts/" in p]


def test_warm_check_is_two_requests_on_one_connection(tmp_path, server, published):
    root = make_root(tmp_path, server, published)
    check(root, open_repository(root))
    server.reset()
    check(root, open_repository(root))
    assert [p.rsplit("/", 1)[-1] for p in server.paths()] == ["2.root.json", "timestamp.json"]
    assert server.connections() == 1


def on_beta_without_delta_bases(root: InstallRoot) -> None:
    """Installed 1.0, now following beta, with no kept artifact a delta could patch: the
    next upgrade fetches the full artifacts."""
    do_upgrade(root)
    set_active_channel(root, "beta", "test")
    for kept in root.downloads.glob("[0-9a-f]*"):
        kept.unlink()


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _stored(repo: FileRepository, prefix: str) -> Path:
    (found,) = [p for p in repo.targets_dir.rglob("*") if p.is_file() and prefix in str(p)]
    return found


def test_tampered_artifact_is_refused_and_current_untouched(tmp_path, served, published):
    root = make_root(tmp_path, served, published)
    on_beta_without_delta_bases(root)
    _flip_last_byte(_stored(published, "artifacts/core/1.1/"))
    refused = r"artifact artifacts/core/1.1/core-1.1.tar.gz refused: sha256"
    releases = sorted(p.name for p in root.releases.iterdir())
    kept = sorted(p.name for p in root.downloads.iterdir() if p.is_file())
    with pytest.raises(TrustError, match=refused):
        do_upgrade(root)
    assert root.installed_version() == "1.0"
    assert not list((root.downloads / ".partial").iterdir())
    # Nothing of 1.1 was staged or kept: release folders are "<version>@<digest>", and the
    # refused bytes never reach downloads/ under any name.
    assert sorted(p.name for p in root.releases.iterdir()) == releases
    assert not [p for p in root.releases.iterdir() if p.name.startswith("1.1")]
    # What is new there is what verified before the archive was fetched (the release's
    # signed file lists), never the refused archive's bytes.
    new = [p for p in root.downloads.iterdir() if p.is_file() and p.name not in kept]
    assert all(p.read_bytes().startswith(b"{") for p in new), [p.name for p in new]


def test_tampered_channel_file_is_refused(tmp_path, served, published):
    root = make_root(tmp_path, served, published)
    _flip_last_byte(_stored(published, ".stable.json"))
    with pytest.raises(TrustError, match="channel file channels/stable.json refused"):
        do_upgrade(root)
    assert root.installed_version() is None


@pytest.mark.parametrize("as_version", ["next", "same"])
def test_a_stolen_targets_key_alone_reaches_no_client(tmp_path, served, published, as_version):
    """The targets key signs a new delegation of channel-stable to the thief's own key, and
    the thief's channel-stable with it; without the snapshot and timestamp keys, a client
    never sees either: a new version is not in the signed snapshot, and rewriting the
    version the snapshot names breaks the hash it carries."""
    from securesystemslib.signer import CryptoSigner

    root = make_root(tmp_path, served, published)
    do_upgrade(root)
    targets_path = published.metadata_dir / "targets.json"
    md = Metadata.from_bytes(targets_path.read_bytes())
    real = md.signed.delegations.roles["channel-stable"].keyids  # type: ignore[union-attr]
    targets_signer = published.keys.signer(published.root().roles["targets"].keyids[0])
    assert targets_signer is not None
    thief = CryptoSigner.generate_ed25519()
    for keyid in list(real):
        md.signed.revoke_key(keyid, "channel-stable")
    md.signed.add_key(thief.public_key, "channel-stable")
    if as_version == "next":
        md.signed.version += 1
    md.signatures.clear()
    md.sign(targets_signer)
    published.root().verify_delegate("targets", md.signed_bytes, md.signatures)  # real key
    (published.metadata_dir / f"{md.signed.version}.targets.json").write_bytes(md.to_bytes())
    targets_path.write_bytes(md.to_bytes())
    channel = Metadata.from_bytes((published.metadata_dir / "channel-stable.json").read_bytes())
    channel.signed.version += 1
    channel.signatures.clear()
    channel.sign(thief)
    (published.metadata_dir / f"{channel.signed.version}.channel-stable.json").write_bytes(
        channel.to_bytes())

    report = check(root, open_repository(root))  # a machine that trusts the real one
    assert (report.installed, report.available, report.update_available) == (
        "1.0", "1.0", False)
    (tmp_path / "fresh").mkdir()
    fresh = make_root(tmp_path / "fresh", served, published)  # one that fetches it now
    if as_version == "next":
        assert check(fresh, open_repository(fresh)).available == "1.0"
    else:
        with pytest.raises(TrustError, match="length or hash mismatch"):
            check(fresh, open_repository(fresh))
    assert root.installed_version() == "1.0"


def test_tampered_metadata_is_refused(tmp_path, served, published):
    root = make_root(tmp_path, served, published)
    path = published.metadata_dir / "timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.version += 1  # changed without the timestamp key
    path.write_bytes(md.to_bytes())
    with pytest.raises(TrustError, match="signatures do not verify"):
        check(root, open_repository(root))


def test_replayed_older_timestamp_is_refused(tmp_path, served, published, builds):
    root = make_root(tmp_path, served, published)
    old_timestamp = (published.metadata_dir / "timestamp.json").read_bytes()
    publish(published, "stable", "1.2", builds("1.2"))
    do_upgrade(root)
    (published.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(TrustError, match="older metadata than already trusted"):
        check(root, open_repository(root))
    assert root.installed_version() == "1.2"


def test_replayed_older_snapshot_is_refused(tmp_path, served, published, builds):
    root = make_root(tmp_path, served, published)
    snapshot_v = published.snapshot().version
    old_snapshot = (published.metadata_dir / f"{snapshot_v}.snapshot.json").read_bytes()
    publish(published, "stable", "1.2", builds("1.2"))
    newest = published.snapshot().version
    (published.metadata_dir / f"{newest}.snapshot.json").write_bytes(old_snapshot)
    # The timestamp names the newest snapshot's hash: the replayed bytes do not match it.
    with pytest.raises(TrustError, match=r"^metadata refused: length or hash mismatch "
                                         r"\(tampered\?\): Observed hash [0-9a-f]{64} does not "
                                         r"match expected hash [0-9a-f]{64}$"):
        do_upgrade(root)
    assert root.installed_version() is None


def test_client_trusting_another_root_is_refused(tmp_path, served, published):
    stranger = init_repository(tmp_path / "stranger")
    root = make_root(tmp_path, served, published,
                     trust=(stranger.metadata_dir / "1.root.json").read_bytes())
    with pytest.raises(TrustError, match="signatures do not verify against the trusted root"):
        check(root, open_repository(root))
    assert root.installed_version() is None


def test_expired_timestamp_is_refused(tmp_path, served, published):
    root = make_root(tmp_path, served, published)
    with published.edit_timestamp() as ts:
        assert isinstance(ts, Timestamp)
    path = published.metadata_dir / "timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    published.sign_and_store("timestamp", md)
    with pytest.raises(TrustError, match="expired"):
        check(root, open_repository(root))


def test_missing_artifact_on_server_keeps_current(tmp_path, served, published):
    root = make_root(tmp_path, served, published)
    on_beta_without_delta_bases(root)
    shutil.rmtree(published.targets_dir / "artifacts" / "ui" / "1.1")
    with pytest.raises(NetworkError, match="HTTP 404"):
        do_upgrade(root)
    assert root.installed_version() == "1.0"


def test_an_upgrade_acts_on_the_decision_of_its_check_unless_the_machine_changed_since(
        tmp_path, served, published, builds):
    """The agent decides once a cycle (`checked`, then `upgrade(decided=...)`); a decision
    made before another command changed the machine (a pin here) is made again, never acted
    on stale."""
    from greenlight.updater.operations import checked
    from greenlight.updater.store import clear_pin, set_pin

    root = make_root(tmp_path, served, published)
    do_upgrade(root)
    publish(published, "stable", "1.1", builds("1.1"))
    repo = open_repository(root)
    report, decided = checked(root, repo)
    assert report.update_available and decided.plan.target == "1.1"
    set_pin(root, "1.0", "a person")  # between the check and the upgrade
    done = upgrade(root, repo, decided=decided)
    assert done.outcome == "held" and root.installed_version() == "1.0"
    clear_pin(root)
    report, decided = checked(root, repo)
    done = upgrade(root, repo, decided=decided)
    assert done.outcome == "upgraded" and root.installed_version() == "1.1"
