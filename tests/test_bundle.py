"""Offline bundles: built by `release bundle`, sideloaded with the same verification, and
hostile ones refused with nothing written outside a staging folder that is removed."""

import io
import json
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pyzstd
from tuf.api.metadata import Metadata

from greenlight.release import FileRepository, build_bundle, init_repository, publish
from greenlight.updater import ArchiveError, ChannelMismatch, TrustError
from greenlight.updater.operations import sideload
from greenlight.updater.product import init_root
from greenlight.updater.store import InstallRoot, active_channel, set_active_channel
from greenlight.updater.trust import (
    BundleFetcher,
    DirectoryFetcher,
    FetcherInterface,
    HttpxFetcher,
    LocalRegions,
    RangedFetcher,
)

from conftest import builtin_server


@pytest.fixture
def offline(tmp_path, published: FileRepository):
    """A root whose configured repository is a live server that must see no request."""
    with builtin_server(published.path) as server:
        root = init_root(tmp_path / "root", server.url,
                                  (published.metadata_dir / "1.root.json").read_bytes(), "stable")
        server.reset()
        yield root, server
        assert server.paths() == [], "sideload must not touch the network"


def contents(root: InstallRoot) -> dict[str, bytes | None]:
    """Every path under the root with its bytes (None for a folder), the lock aside."""
    return {str(p.relative_to(root.path)): None if p.is_dir() else p.read_bytes()
            for p in root.path.rglob("*") if p.name not in ("lock", "lock.owner")}


def listing(root: InstallRoot) -> set[str]:
    return {str(p.relative_to(root.path)) for p in root.path.rglob("*")
            if p.name not in ("lock", "lock.owner")}


def test_sideload_installs_without_network(tmp_path, offline, published):
    root, _ = offline
    bundle = tmp_path / "stable.bundle"
    made = build_bundle(published, "stable", bundle)
    assert made.release == "1.0"
    report = sideload(root, bundle)
    assert (report.outcome, report.installed, report.source) == (
        "upgraded", "1.0", "bundle stable.bundle")
    assert (root.current / "core" / "core.py").is_file()
    assert not (root.state / "sideload").exists()
    # Read in place: nothing unpacked beside the release, nothing copied into the store.
    assert [p for p in root.downloads.rglob("*") if p.is_file()] == []
    assert [p.name for p in root.releases.iterdir()] == [root.installed_release()]
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert names[0] == "bundle.json" and "metadata/1.root.json" in names
    assert not [n for n in names if n.startswith("keys")]


def test_bundle_expiry_is_chosen_by_the_pipeline(tmp_path, published):
    from greenlight.release import ReleaseError

    build_bundle(published, "stable", tmp_path / "b", timedelta(days=200))
    floor = datetime.now(UTC) + timedelta(days=199)
    for role in ("timestamp", "snapshot", "targets", "channel-stable"):
        assert published.open(role).signed.expires > floor, role
    with pytest.raises(ReleaseError, match="root expires .* before the bundle would"):
        build_bundle(published, "stable", tmp_path / "c", timedelta(days=400))


def test_channel_mismatch_needs_a_switch(tmp_path, offline, published):
    root, _ = offline
    bundle = tmp_path / "beta.bundle"
    build_bundle(published, "beta", bundle)
    with pytest.raises(ChannelMismatch, match="carries channel 'beta'.*--switch-channel"):
        sideload(root, bundle)
    assert sideload(root, bundle, switch_channel=True).installed == "1.1"
    assert active_channel(root).channel == "beta"


def test_older_bundle_replayed_after_a_newer_is_refused(tmp_path, offline, published, builds):
    root, _ = offline
    old = tmp_path / "old.bundle"
    build_bundle(published, "stable", old)
    publish(published, "stable", "1.2", builds("1.2"))
    new = tmp_path / "new.bundle"
    build_bundle(published, "stable", new)
    assert sideload(root, new).installed == "1.2"
    with pytest.raises(TrustError, match="older metadata than already trusted"):
        sideload(root, old)
    assert root.installed_version() == "1.2"


def test_bundle_signed_by_an_untrusted_root_is_refused(tmp_path, offline, builds):
    root, _ = offline
    stranger = init_repository(tmp_path / "stranger")
    publish(stranger, "stable", "6.6.6", builds("1.0"))
    bundle = tmp_path / "evil.bundle"
    build_bundle(stranger, "stable", bundle)
    with pytest.raises(TrustError, match="signatures do not verify against the trusted root"):
        sideload(root, bundle)
    assert root.installed_version() is None


def _rewrite(bundle: Path, out: Path, change) -> Path:
    """Copy a bundle member by member, letting `change(name, data)` alter or drop members."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            data = change(member.name, data)
            if data is None:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def test_tampered_artifact_in_a_bundle_is_refused(tmp_path, offline, published):
    root, _ = offline
    good = tmp_path / "good.bundle"
    build_bundle(published, "stable", good)
    bad = _rewrite(good, tmp_path / "bad.bundle", lambda n, d: (
        d[:-1] + bytes([d[-1] ^ 1]) if "/artifacts/core/" in f"/{n}" else d))
    with pytest.raises(TrustError, match="artifact artifacts/core/1.0/core-1.0.tar.gz refused"):
        sideload(root, bad)
    assert root.installed_version() is None and not (root.state / "sideload").exists()
    assert list(root.releases.iterdir()) == []  # the staging it was unpacked into is gone


def test_expired_bundle_is_refused(tmp_path, offline, published):
    root, _ = offline
    good = tmp_path / "good.bundle"
    build_bundle(published, "stable", good)

    def expire(name: str, data: bytes) -> bytes:
        if name != "metadata/timestamp.json":
            return data
        md = Metadata.from_bytes(data)
        md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        md.signatures.clear()
        md.sign(published.keys.signer(published.authorizing_role("timestamp").keyids[0]))
        return md.to_bytes()

    expired = _rewrite(good, tmp_path / "expired.bundle", expire)
    before = contents(root)
    with pytest.raises(TrustError, match="expired") as refused:
        sideload(root, expired)
    assert "\n" not in str(refused.value)
    # Nothing changed: no file removed or rewritten (the metadata cache included), nothing
    # installed, nothing in the history. The one thing added is the TUF client's copy of the
    # root it already trusted, in its root history.
    after = contents(root)
    trusted = before["state/metadata/root.json"]
    added = {k: v for k, v in after.items() if k not in before}
    assert added == {"state/metadata/root_history": None,
                     "state/metadata/root_history/1.root.json": trusted}
    assert {k: after[k] for k in before} == before
    assert root.installed_version() is None


def _with_member(bundle: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(bundle, "a") as tar:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return bundle


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


def _pax(name: str, **headers: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.pax_headers = headers
    return info


def _old_sparse(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tarfile.TarInfo("../../outside"), "'..' leaves the tree"),
        (tarfile.TarInfo("/tmp/outside"), "absolute"),
        # A bundle is read in place: it may hold only regular files, so any link is refused.
        (_link("targets/escape", "../../../../etc/passwd"),
         "member 'targets/escape' refused: a link; a bundle holds only regular files"),
        (_link("metadata/hard", "/etc/passwd", tarfile.LNKTYPE), "refused: a link"),
        (_device("targets/dev"), "device, FIFO"),
        # tar variants that are not plain files: a GNU sparse file (PAX 1.0, and the old
        # type), a size a PAX header sets below zero (tarfile would stop reading there)
        (_pax("targets/sparse", **{"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                   "GNU.sparse.realsize": str(10**12),
                                   "GNU.sparse.name": "targets/sparse"}),
         "GNU sparse|malformed header"),
        (_pax("targets/negative", size="-5"), "a size of -5 bytes"),
        (_pax("targets/huge", size=str(10**30)), "a size of"),
        (_old_sparse("targets/old-sparse"), "GNU sparse"),
    ],
)
def test_hostile_bundle_members_are_refused(tmp_path, offline, published, member, message):
    root, _ = offline
    bundle = tmp_path / "hostile.bundle"
    build_bundle(published, "stable", bundle)
    _with_member(bundle, member, b"x\n" if member.pax_headers or member.type ==
                 tarfile.GNUTYPE_SPARSE else b"")
    before = listing(root)
    with pytest.raises(ArchiveError, match=message):
        sideload(root, bundle)
    assert listing(root) == before
    assert not (tmp_path / "outside").exists()


def test_compressed_bundles_are_refused_before_anything_is_unpacked(tmp_path, offline):
    root, _ = offline
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("targets/huge")
        info.size = 300 * 1024 * 1024
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    bomb = tmp_path / "bomb.bundle.zst"
    bomb.write_bytes(pyzstd.compress(raw.getvalue(), 19))
    before = listing(root)
    with pytest.raises(ArchiveError, match="compressed; a bundle is a plain tar"):
        sideload(root, bomb)
    assert listing(root) == before


@pytest.mark.parametrize(("kind", "message"), [
    ("truncated", "b.bundle: not a readable archive: unexpected end of data"),
    ("tail", "b.bundle: not a readable archive: data after its end marker"),
    ("garbage", "b.bundle: not a readable archive: invalid header"),
    ("missing", "/b.bundle: no such bundle file"),
    ("no-manifest", "x.bundle: not a Greenlight bundle (no valid bundle.json)"),
])
def test_broken_bundles_are_refused(tmp_path, offline, published, kind, message):
    root, _ = offline
    bundle = tmp_path / "b.bundle"
    build_bundle(published, "stable", bundle)
    if kind == "truncated":
        bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 3])
    elif kind == "garbage":
        bundle.write_bytes(b"this is not an archive\n" * 50)
    elif kind == "tail":  # a genuine bundle, then bytes after its end marker
        bundle.write_bytes(bundle.read_bytes() + b"hidden tail\n" + b"\0" * 500)
    elif kind == "missing":
        bundle.unlink()
    else:
        bundle = _rewrite(bundle, tmp_path / "x.bundle",
                          lambda n, d: None if n == "bundle.json" else d)
    before = listing(root)
    with pytest.raises(ArchiveError) as refused:
        sideload(root, bundle)
    assert str(refused.value).endswith(message)
    assert listing(root) == before


def test_bundle_cli_and_sideload_cli(tmp_path, published):
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    out = tmp_path / "s.bundle"
    made = subprocess.run([str(bin_dir / "release"), "bundle", str(published.path), "--channel",
                           "stable", "-o", str(out), "--expires", "60d", "--json"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["release"] == "1.0"
    bad = subprocess.run([str(bin_dir / "release"), "bundle", str(published.path), "--channel",
                          "stable", "-o", str(out), "--expires", "soon"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "expected a duration" in bad.stderr
    root = tmp_path / "root"
    subprocess.run([str(bin_dir / "updater"), "init", "--root", str(root), "--repo",
                    "http://127.0.0.1:9", "--trust", str(published.metadata_dir / "1.root.json")],
                   check=True, capture_output=True)
    done = subprocess.run([str(bin_dir / "updater"), "sideload", str(out), "--root", str(root),
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "upgraded"
    broken = tmp_path / "broken.bundle"
    broken.write_bytes(b"nope")
    refused = subprocess.run([str(bin_dir / "updater"), "sideload", str(broken), "--root",
                              str(root)], capture_output=True, text=True)
    assert refused.returncode == 8 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("updater: error: broken.bundle: not a readable archive")


def test_a_bundle_manifest_behind_a_symlink_is_not_read(tmp_path, offline, published):
    root, _ = offline
    good = tmp_path / "good.bundle"
    build_bundle(published, "stable", good)
    hostile = tmp_path / "hostile.bundle"
    with tarfile.open(good) as src, tarfile.open(hostile, "w") as dst:
        for member in src.getmembers():
            if member.name == "bundle.json":
                member.name = "real.json"
                dst.addfile(member, src.extractfile(member))
                link = tarfile.TarInfo("bundle.json")
                link.type, link.linkname = tarfile.SYMTYPE, "real.json"
                dst.addfile(link)
            else:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    before = listing(root)
    with pytest.raises(ArchiveError, match="member 'bundle.json' refused: a link"):
        sideload(root, hostile)
    assert listing(root) == before


def _relabelled(source: Path, out: Path, channel: str, keep: str = "") -> Path:
    """A copy of a bundle whose unsigned bundle.json names `channel`, holding only the
    members whose names start with `keep` (all of them by default)."""
    with tarfile.open(source) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            if member.name == "bundle.json":
                data = json.loads(src.extractfile(member).read())
                data["channel"] = channel
                raw = json.dumps(data).encode()
                member.size = len(raw)
                dst.addfile(member, io.BytesIO(raw))
            elif member.name.startswith(keep):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out


@pytest.mark.parametrize(("label", "message"), [
    ("beta", "metadata: missing from the bundle (bundle://local/metadata/timestamp.json: "
             "not in the bundle)"),
    ("../../x", "label.bundle: bundle.json names channel '../../x', not a valid channel name"),
    ("Bad Name", "label.bundle: bundle.json names channel 'Bad Name', not a valid channel name"),
])
def test_an_unverified_channel_label_never_switches_the_channel(tmp_path, offline, published,
                                                               label, message):
    root, _ = offline
    good = tmp_path / "stable.bundle"
    build_bundle(published, "stable", good)
    # Only the label and the root chain: nothing in it verifies a channel file for `label`.
    hostile = _relabelled(good, tmp_path / "label.bundle", label, keep="metadata/1.root")
    before = active_channel(root)
    with pytest.raises(ArchiveError) as refused:
        sideload(root, hostile, switch_channel=True)
    assert str(refused.value) == message
    assert active_channel(root) == before
    assert sideload(root, good).installed == "1.0"  # the next command works as ever


def test_updater_channel_refuses_a_path_as_a_name(tmp_path, offline):
    root, _ = offline
    done = subprocess.run([sys.executable, "-m", "greenlight.updater.cli", "channel", "../x",
                           "--root", str(root.path)], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid channel name" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_symlink_planted_at_the_sideload_folder_is_not_written_through(tmp_path, offline,
                                                                        published):
    root, _ = offline
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root.state / "sideload").symlink_to(elsewhere)
    bundle = tmp_path / "stable.bundle"
    build_bundle(published, "stable", bundle)
    assert sideload(root, bundle).installed == "1.0"
    assert list(elsewhere.iterdir()) == []


def test_state_is_private_to_the_owner(tmp_path, offline, published):
    import stat as st

    root, _ = offline
    bundle = tmp_path / "stable.bundle"
    build_bundle(published, "stable", bundle)
    sideload(root, bundle)
    mode = {p: st.S_IMODE(p.stat().st_mode) for p in (
        root.path, root.config_path, root.state / "channels" / "active.json",
        root.state / "installation-id")}
    assert mode[root.path] == 0o750 and mode[root.config_path] == 0o640
    assert all(m & 0o007 == 0 for m in mode.values()), mode


def test_a_bundle_carries_the_rollout_state_and_a_sideload_obeys_it(tmp_path, offline,
                                                                    published, builds):
    """A planned rollout's signed state travels in the bundle: a halt holds a sideload too,
    and its lifting lets the same machine in, all without the network."""
    from greenlight.channels import RolloutPlan, now, rollout_bucket
    from greenlight.release.repository._rollouts import planned, write_state

    root, _ = offline
    cf = publish(published, "stable", "1.2", builds("1.2"),
                 rollout_plan=RolloutPlan(steps=[50, 100], soak=0, started_at=now()))
    inside = next(f"{i:032x}" for i in range(10_000)
                  if rollout_bucket(f"{i:032x}", "stable", "1.2") < 50)
    (root.state / "installation-id").write_text(inside + "\n")
    plan = planned(published, "stable")
    with published.all_or_nothing():
        write_state(published, plan.next_state("collector", halted=True, reason="2 rollbacks"))
    halted = tmp_path / "halted.bundle"
    build_bundle(published, "stable", halted)
    with tarfile.open(halted) as tar:
        assert [n for n in tar.getnames() if n.startswith("targets/rollouts/")]
    # The halted 1.2 is not installed; this fresh machine gets the release before it, which
    # the bundle carries for that.
    before = sideload(root, halted)
    assert (before.outcome, before.installed) == ("upgraded", "1.0")
    assert "HALTED (halted by collector: 2 rollbacks)" in before.note
    with published.all_or_nothing():
        write_state(published, planned(published, "stable").next_state("a person"))
    resumed = tmp_path / "resumed.bundle"
    build_bundle(published, "stable", resumed)
    report = sideload(root, resumed)
    assert (report.outcome, report.installed) == ("upgraded", cf.release)


def test_what_a_fetcher_can_do_decides_how_a_target_is_fetched(tmp_path, published):
    """Resuming and reading in place are declared capabilities (typed protocols), not
    attribute probes, and they decide what happens: over a repository folder, a download
    with a partial file kept from before resumes from its end; over a fetcher with only
    ngclient's interface, it starts from byte 0 (the kept bytes are not trusted to line up)
    and nothing is read in place; either way only the signed bytes are kept."""
    from greenlight.channels import BUNDLE_BASE_URL
    from greenlight.updater.trust import Downloads, TrustedRepository

    class Plain(FetcherInterface):  # ngclient's interface, nothing more
        def __init__(self) -> None:
            self.inner, self.asked = DirectoryFetcher(published.path), []

        def _fetch(self, url: str):
            self.asked.append((url, 0))
            return self.inner.fetch(url)

    class Ranged(DirectoryFetcher):  # a folder's fetcher that says what it was asked
        def __init__(self) -> None:
            super().__init__(published.path)
            self.asked: list[tuple[str, int]] = []

        def open_range(self, url: str, offset: int, length: int | None = None):
            self.asked.append((url, offset))
            return super().open_range(url, offset, length)

    http = HttpxFetcher()
    try:
        assert isinstance(http, RangedFetcher) and not isinstance(http, LocalRegions)
    finally:
        http.close()
    bundle = BundleFetcher(tmp_path / "b.tar", {})
    assert isinstance(bundle, RangedFetcher) and isinstance(bundle, LocalRegions)
    assert not isinstance(Plain(), RangedFetcher) and not isinstance(Plain(), LocalRegions)

    fetchers: list[tuple[str, Plain | Ranged]] = [("ranged", Ranged()), ("plain", Plain())]
    for name, fetcher in fetchers:
        meta = tmp_path / name / "meta"
        meta.mkdir(parents=True)
        (meta / "root.json").write_bytes((published.metadata_dir / "1.root.json").read_bytes())
        client = TrustedRepository(meta, BUNDLE_BASE_URL + "metadata/",
                                   BUNDLE_BASE_URL + "targets/", fetcher=fetcher)
        client.refresh()
        channel_file, _ = client.channel_file("stable")
        info = client.artifact_info("core", channel_file.components["core"])
        assert client.region(info) is None  # nothing of a folder is read in place
        store = Downloads(tmp_path / name / "store")
        partial = store.partial / info.hashes["sha256"]
        partial.parent.mkdir(parents=True)
        stored = published.stored_target_path(info.path, info.hashes["sha256"])
        half = stored.read_bytes()[: info.length // 2]
        partial.write_bytes(half if name == "ranged" else b"\0" * len(half))
        got = client.download(info, store)
        assert got.read_bytes() == stored.read_bytes() and not partial.exists()
        offsets = [offset for url, offset in fetcher.asked if info.hashes["sha256"] in url]
        # ranged: resumed from the kept half, once; plain: one whole fetch from byte 0 (the
        # zeros kept were never used, nor fetched around twice)
        assert offsets == ([len(half)] if name == "ranged" else [0]), (name, offsets)


def test_a_machine_that_fell_back_sideloads_its_fallback_channel(tmp_path, offline, published):
    """After a fallback from beta, a bundle of stable (which carries no beta) still installs:
    the chosen channel it cannot read is not a reason to refuse."""
    root, _ = offline
    set_active_channel(root, "stable", "automatic fallback", chosen="beta")
    bundle = tmp_path / "stable.bundle"
    build_bundle(published, "stable", bundle)
    report = sideload(root, bundle)
    assert (report.outcome, report.installed) == ("upgraded", "1.0")
    assert active_channel(root).chosen == "beta"
