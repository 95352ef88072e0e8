"""Safe extraction refuses hostile archives with one line and writes nothing outside dest."""

import gzip
import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pyzstd

from greenlight.channels import ChannelFile, ComponentArtifact
from greenlight.updater import ArchiveError
from greenlight.updater.store import InstallRoot, Limits, extract, stage_release


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], compress: str = "gz"):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
            else:
                tar.addfile(m)
    data = raw.getvalue()
    if compress == "gz":
        data = gzip.compress(data)
    elif compress == "zst":
        data = pyzstd.compress(data)
    path.write_bytes(data)
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("compress", ["gz", "zst", "none"])
def test_good_archive_extracts_files_dirs_and_inner_links(tmp_path, compress):
    exe = tarfile.TarInfo("bin/run")
    exe.mode = 0o4755  # set-uid is dropped
    archive = make_tar(tmp_path / "good.tar", [
        exe, ("bin/tool", b"#!/bin/sh\n"), ("share/a.txt", b"a"),
        link("share/b.txt", "a.txt"), link("share/c.txt", "share/a.txt", tarfile.LNKTYPE),
    ], compress)
    dest = tmp_path / "out"
    assert extract(archive, dest) == len(b"#!/bin/sh\n") + 1
    assert (dest / "share" / "b.txt").read_text() == "a"
    assert (dest / "share" / "c.txt").read_text() == "a"
    assert (dest / "bin" / "run").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../evil", b"x")], "'..' leaves the tree"),
        ([("a/../../evil", b"x")], "'..' leaves the tree"),
        ([("/etc/evil", b"x")], "absolute"),
        ([link("l", "/etc/passwd")], "symlink to '/etc/passwd' leaves the tree"),
        ([link("d/l", "../../x")], "leaves the tree"),
        ([link("l", "."), ("l/x", b"x")], "passes through link 'l'"),
        ([link("h", "/etc/passwd", tarfile.LNKTYPE)], "absolute"),
        ([link("h", "nothing", tarfile.LNKTYPE)], "not a file earlier"),
        ([("a", b"1"), ("a", b"2")], "appears twice"),
    ],
)
def test_hostile_members_are_refused(tmp_path, members, message):
    archive = make_tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "stage" / "out"
    with pytest.raises(ArchiveError, match=message):
        extract(archive, dest)
    outside = [p for p in tmp_path.rglob("*") if "stage" not in p.parts and p.name != "bad.tar.gz"]
    assert outside == []


def _staged(tmp_path: Path, archive: Path) -> InstallRoot:
    """`archive` staged as release 1.0's one component, in a fresh root's layout."""
    root = InstallRoot(tmp_path / "root")
    root.releases.mkdir(parents=True)
    channel = ChannelFile(channel="stable", release="1.0", published_at=datetime.now(UTC),
                          components={"core": ComponentArtifact(
                              version="1.0", target="artifacts/core/1.0/c.tar.gz",
                              sha256="a" * 64, length=archive.stat().st_size)})
    with pytest.raises(ArchiveError) as refused:
        stage_release(root, channel, {"core": archive})
    assert str(refused.value).count("\n") == 0
    assert list(root.releases.iterdir()) == []  # no .staging-*, no half-made release folder
    return root


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(tmp_path, kind):
    info = tarfile.TarInfo("dev")
    info.type = kind
    archive = make_tar(tmp_path / "d.tar.gz", [("ok", b"1"), info])
    with pytest.raises(ArchiveError,
                       match=r"^d\.tar\.gz: member 'dev' refused: device, FIFO or other special"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "dev").exists() and not (tmp_path / "out" / "dev").is_symlink()
    _staged(tmp_path, archive)


def test_archive_bomb_is_refused_before_writing(tmp_path):
    big = b"\0" * (8 * 1024 * 1024)
    archive = make_tar(tmp_path / "bomb.tar.zst", [("big", big)], "zst")
    with pytest.raises(ArchiveError, match="archive bomb"):
        extract(archive, tmp_path / "out", Limits(max_ratio=2, max_total_bytes=1024 * 1024))
    assert not (tmp_path / "out" / "big").exists()


@pytest.mark.parametrize("content", [b"not an archive at all", b""])
def test_not_an_archive(tmp_path, content):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match="not a readable archive"):
        extract(path, tmp_path / "out")


@pytest.mark.parametrize("compress", ["gz", "zst", "none"])
def test_truncated_archive(tmp_path, compress):
    archive = make_tar(tmp_path / "t.tar.gz", [("f", b"y" * 100_000), ("g", b"z" * 100_000)],
                       compress)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"^t\.tar\.gz: not a readable archive: "):
        extract(archive, tmp_path / "out")
    # Staged as a release, the half-written member goes with the staging folder.
    _staged(tmp_path, archive)


def _directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


@pytest.mark.parametrize(("members", "refusal"), [
    # l0 -> ., l1 -> l0/.. : each link judged alone stays inside; chained they climb out.
    ([link("l0", "."), link("l1", "l0/.."), link("l2", "l1/l0/..")], "leaves the tree"),
    ([link("d/up", "..")], "leaves the tree"),
    ([("a", b"file"), ("a/b", b"below a file")], "below the file 'a'"),
    ([("d/x", b"x"), link("d", "elsewhere")], "collides with the folder 'd'"),
    ([_directory("d"), ("d", b"file over a folder")], "appears twice"),
    ([("bad\nname", b"x")], "control character"),
    ([("tab\tname", b"x")], "control character"),
])
def test_chains_collisions_and_control_characters_are_refused(tmp_path, members, refusal):
    archive = make_tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(ArchiveError, match=refusal):
        extract(archive, tmp_path / "out")
    assert not any(p.is_symlink() and not p.resolve().is_relative_to((tmp_path / "out").resolve())
                   for p in (tmp_path / "out").rglob("*"))


def test_oversized_pax_headers_are_refused_before_they_are_read(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ok.txt")
        info.pax_headers = {"comment": "x" * 200_000}
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "pax.tar").write_bytes(raw.getvalue())
    with pytest.raises(ArchiveError, match="PAX header of"):
        extract(tmp_path / "pax.tar", tmp_path / "out")


def test_plain_tar_only_when_asked(tmp_path):
    archive = make_tar(tmp_path / "x.tar.zst", [("a", b"1")], compress="zst")
    with pytest.raises(ArchiveError, match="plain tar"):
        extract(archive, tmp_path / "out", Limits(compressed=False))
    assert extract(archive, tmp_path / "out2") == 1


def test_a_region_is_unpacked_in_place_and_checked_against_its_sha256(tmp_path):
    """An artifact inside a bigger file (a bundle) is unpacked from its region while it is
    hashed: a region whose bytes are not the signed ones is refused after a whole, valid
    unpacking too, not only when the archive breaks."""
    import hashlib

    from greenlight.updater import TrustError
    from greenlight.updater.store import Region

    inner = tmp_path / "inner.tar"
    make_tar(inner, [("app/run.sh", b"echo hi\n" * 1000)], compress="")
    data = inner.read_bytes()
    outer = tmp_path / "outer.bin"
    outer.write_bytes(b"x" * 1234 + data + b"y" * 99)
    good = Region(outer, 1234, len(data), hashlib.sha256(data).hexdigest(), "t/inner.tar")
    assert extract(good, tmp_path / "ok") == 8000
    assert (tmp_path / "ok" / "app" / "run.sh").read_bytes() == b"echo hi\n" * 1000
    wrong = Region(outer, 1234, len(data), "0" * 64, "t/inner.tar")
    with pytest.raises(TrustError, match="artifact t/inner.tar refused: its bytes in the "
                                         "bundle do not match the signed sha256 and length"):
        extract(wrong, tmp_path / "bad")


def _variant(kind: str) -> bytes:
    """A genuine member, then a tar variant that is not a plain file (or a tail)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        good = tarfile.TarInfo("core/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        info = tarfile.TarInfo("core/odd")
        if kind == "sparse":
            info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                "GNU.sparse.realsize": str(10**12),
                                "GNU.sparse.name": "core/odd"}
        elif kind == "negative":
            info.pax_headers = {"size": "-5"}
        elif kind == "overflow":
            info.pax_headers = {"size": str(10**30)}
        elif kind == "old-sparse":
            info.type = tarfile.GNUTYPE_SPARSE
        if kind != "tail":
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    data = raw.getvalue()
    return data + b"hidden tail\n" if kind == "tail" else data


@pytest.mark.parametrize("compress", ["gz", "none"])
@pytest.mark.parametrize(("kind", "says"), [
    ("sparse", "GNU sparse|malformed header"), ("old-sparse", "GNU sparse"),
    ("negative", "a size of -5 bytes"), ("overflow", "a size of"),
    ("tail", "data after its end marker"),
])
def test_tar_variants_are_refused_in_one_line_not_crashed_on(tmp_path, kind, says, compress):
    """GNU sparse files, sizes below zero or past any disk, and bytes after the end marker:
    the documented refusal (ArchiveError, exit 8), one line, never a ValueError; a member
    after a genuine one is looked at, not silently skipped."""
    data = _variant(kind)
    path = tmp_path / f"odd.tar{'.gz' if compress == 'gz' else ''}"
    path.write_bytes(gzip.compress(data) if compress == "gz" else data)
    with pytest.raises(ArchiveError, match=says) as refused:
        extract(path, tmp_path / "out", Limits(compressed=compress == "gz"))
    assert "\n" not in str(refused.value)
