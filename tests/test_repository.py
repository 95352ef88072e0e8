"""The repository `release` writes: keys, roles, delegations, consistent snapshots."""

import stat

import pytest
from tuf.api.metadata import Metadata

from greenlight.release import FileRepository, ReleaseError, init_repository
from greenlight.updater import TrustError
from greenlight.updater.operations import check, open_repository
from greenlight.updater.product import init_root

from conftest import builtin_server


def test_init_writes_owner_only_keys_and_a_consistent_snapshot_root(repo: FileRepository):
    keys = sorted(repo.keys.folder.glob("*.pem"))
    assert [k.name.split(".")[0] for k in keys] == [
        "artifacts", "bins", "root", "snapshot", "targets", "timestamp"]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(repo.keys.folder.stat().st_mode) == 0o700
    assert repo.root().consistent_snapshot
    assert (repo.metadata_dir / "1.root.json").is_file()


def test_artifacts_live_in_hashed_bins(published: FileRepository):
    assert published.targets().targets == {}  # top-level targets only delegates
    bins = published.bins()
    assert bins is not None and bins.number_of_bins == 256
    for path in ("artifacts/core/1.0/core-1.0.tar.gz", "artifacts/ui/1.1/ui-1.1.tar.gz"):
        assert path in published.targets(published.bin_for(path)).targets
    assert len(published.snapshot().meta) == 1 + 1 + 256 + 2  # targets, artifacts, bins, channels


def test_init_refuses_an_existing_repository(repo: FileRepository):
    with pytest.raises(ReleaseError, match="already there"):
        init_repository(repo.path)


def test_each_channel_has_its_own_delegated_role_and_key(published: FileRepository):
    delegations = published.targets().delegations
    assert delegations is not None and delegations.roles is not None
    beta, stable = delegations.roles["channel-beta"], delegations.roles["channel-stable"]
    assert beta.paths == ["channels/beta.json"] and stable.paths == ["channels/stable.json"]
    assert beta.terminating and stable.terminating
    assert set(beta.keyids).isdisjoint(stable.keyids)


def test_a_beta_key_cannot_move_stable(tmp_path, published: FileRepository):
    """Sign channel-stable with the beta key: clients refuse it."""
    beta_keyid = published.authorizing_role("channel-beta").keyids[0]
    beta_signer = published.keys.signer(beta_keyid)
    assert beta_signer is not None
    md = Metadata.from_bytes((published.metadata_dir / "channel-stable.json").read_bytes())
    md.signed.version += 1
    md.signatures.clear()
    md.sign(beta_signer)
    data = md.to_bytes()
    (published.metadata_dir / f"{md.signed.version}.channel-stable.json").write_bytes(data)
    (published.metadata_dir / "channel-stable.json").write_bytes(data)
    published.commit()

    with builtin_server(published.path) as server:
        root = init_root(tmp_path / "root", server.url,
                                  (published.metadata_dir / "1.root.json").read_bytes(), "stable")
        with pytest.raises(TrustError, match="channel-stable"):
            check(root, open_repository(root))


def test_server_never_serves_keys(published: FileRepository):
    import httpx

    # A repository made before keys moved beside it keeps them in REPO/keys/, inside the
    # folder served; a key can also be reached through a link planted in the served tree.
    # A static server of the whole folder would hand out both.
    key = next(published.keys.folder.glob("*.pem"))
    inside = published.path / "keys"
    inside.mkdir(exist_ok=True)
    (inside / key.name).write_bytes(key.read_bytes())
    (published.path / "targets" / "key.pem").symlink_to(key)
    (published.path / "metadata" / "keys").symlink_to(inside)
    with builtin_server(published.path) as server:
        assert httpx.get(f"{server.url}/keys/{key.name}").status_code == 404
        assert httpx.get(f"{server.url}/targets/key.pem").status_code == 404
        assert httpx.get(f"{server.url}/metadata/keys/{key.name}").status_code == 404
        assert httpx.get(f"{server.url}/metadata/%2e%2e/keys/{key.name}").status_code == 404
        assert httpx.get(f"{server.url}/metadata/1.root.json").status_code == 200
        ranged = httpx.get(f"{server.url}/metadata/1.root.json", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and len(ranged.content) == 10
