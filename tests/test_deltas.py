"""Deltas: built at publish time, taken by the client when they pay, verified against the
full artifact's signed sha256 and length, and any failure falls back to the full artifact."""

import gzip
import io
import os
import random
import tarfile

import pytest
import pyzstd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from greenlight.channels import DeltaError, apply_delta, build_delta
from greenlight.release import current_channel_file, init_repository, publish, serving
from greenlight.updater.operations import open_repository, upgrade
from greenlight.updater.product import init_root


def app_archive(path, seed: int, changed: int = 0, compress: str = "gz"):
    """An 'app' of ~3 MB: binary and text files; `changed` files differ from seed's."""
    rng = random.Random(seed)
    files = {f"lib/mod{i}.so": rng.randbytes(60_000) for i in range(30)}
    files |= {f"share/doc{i}.txt": " ".join(rng.choice(["core", "ui", "token", "channel"])
                                             for _ in range(4000)).encode() for i in range(40)}
    tweak = random.Random(seed * 1000 + changed)
    for i in range(changed):
        files[f"lib/mod{i}.so"] = tweak.randbytes(60_000)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    data = raw.getvalue()
    if compress == "gz":
        data = gzip.compress(data, 6, mtime=1_700_000_000)
    path.write_bytes(data)
    return path


@pytest.fixture
def delta_repo(tmp_path):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", {"app": app_archive(tmp_path / "a1.tar.gz", 1)})
    publish(repo, "stable", "1.1", {"app": app_archive(tmp_path / "a2.tar.gz", 1, changed=2)})
    return repo


def test_publish_builds_a_small_delta(delta_repo):
    stable = current_channel_file(delta_repo, "stable")
    app = stable.components["app"]  # type: ignore[union-attr]
    (delta,) = app.deltas
    assert delta.from_version == "1.0" and delta.target == "deltas/app/1.1/from-1.0.gldelta"
    assert delta.length < app.length / 10
    assert delta.target in delta_repo.targets(delta_repo.bin_for(delta.target)).targets


def test_client_takes_the_delta_and_reports_bytes(tmp_path):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", {"app": app_archive(tmp_path / "a1.tar.gz", 1)})
    with serving(repo.path) as server:
        root = init_root(tmp_path / "root", server.url,
                                  (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
        first = upgrade(root, open_repository(root))
        assert first.deltas[0].used is False and first.deltas[0].reason == "no delta offered"
        publish(repo, "stable", "1.1", {"app": app_archive(tmp_path / "a2.tar.gz", 1, 2)})
        server.reset_counts()
        report = upgrade(root, open_repository(root))
        assert report.installed == "1.1"
        (use,) = report.deltas
        assert use.used and use.from_version == "1.0"
        assert report.bytes_fetched == use.delta_bytes < report.bytes_total / 10
        # No archive fetched whole: only its signed file list, a few hundred bytes.
        assert not [p for p in server.paths if "/artifacts/" in p and "/_files/" not in p]
        assert (root.current / "app" / "lib" / "mod0.so").stat().st_size == 60_000


@pytest.mark.parametrize("failure", ["corrupt-base", "tampered-delta", "no-base"])
def test_any_delta_failure_falls_back_to_the_full_artifact(tmp_path, failure):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", {"app": app_archive(tmp_path / "a1.tar.gz", 1)})
    with serving(repo.path) as server:
        root = init_root(tmp_path / "root", server.url,
                                  (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
        assert upgrade(root, open_repository(root)).installed == "1.0"
        publish(repo, "stable", "1.1", {"app": app_archive(tmp_path / "a2.tar.gz", 1, 2)})
        app = current_channel_file(repo, "stable").components["app"]  # type: ignore[union-attr]
        base = root.downloads / app.deltas[0].base_sha256
        if failure == "corrupt-base":
            data = bytearray(base.read_bytes())
            data[len(data) // 2] ^= 1
            base.write_bytes(bytes(data))
        elif failure == "no-base":
            base.unlink()
        else:
            stored = next(repo.targets_dir.glob("deltas/app/1.1/*"))
            data = stored.read_bytes()
            stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        report = upgrade(root, open_repository(root))
        assert report.installed == "1.1"
        (use,) = report.deltas
        assert use.used is False and use.reason
        expected = {"corrupt-base": "not the one this delta was made from",
                    "tampered-delta": "refused", "no-base": "no base release"}[failure]
        assert expected in use.reason
        assert report.bytes_fetched >= app.length


def test_delta_round_trip_and_refusals():
    old = gzip.compress(os.urandom(200_000) + b"x" * 100_000, 9, mtime=5)
    new = gzip.compress(old[:50_000] + os.urandom(1000) + b"x" * 100_000, 9, mtime=6)
    built = build_delta(old, new)
    assert built is not None
    assert apply_delta(old, built.data) == new
    with pytest.raises(DeltaError, match="not the one"):
        apply_delta(new, built.data)
    with pytest.raises(DeltaError, match="bad header"):
        apply_delta(old, b"garbage\n" + built.data)
    broken = built.data[:-10] + b"\0" * 10
    with pytest.raises(DeltaError):
        apply_delta(old, broken)



_EDITS = st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace"]),
                            st.floats(0, 1), st.binary(min_size=0, max_size=2000)),
                  max_size=6)


def _edited(old: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    new = bytearray(old)
    for kind, where, data in edits:
        at = int(where * len(new))
        if kind == "insert":
            new[at:at] = data
        elif kind == "delete":
            del new[at:at + len(data)]
        else:
            new[at:at + len(data)] = data
    return bytes(new)


def _packed(content: bytes, how: tuple[str, int]) -> bytes:
    kind, level = how
    if kind == "gz":
        return gzip.compress(content, level, mtime=0)
    return pyzstd.compress(content, level)


_RELEASES = dict(
    seed=st.integers(0, 2**32 - 1), size=st.integers(1, 300_000), edits=_EDITS,
    how=st.sampled_from([("gz", 6), ("gz", 9), ("gz", 1), ("zst", 3), ("zst", 19)]),
    flip=st.floats(0, 1), rebuilt=st.sampled_from([0, 0, 3, 40]))
"""a release pair: content, edits, compression, a byte to flip, and rebuilt native code"""


def _round_trip(seed, size, edits, how, flip, rebuilt):
    """Whatever the content, the edits and the compression: a delta that is built rebuilds the
    new artifact byte for byte, and a delta with any byte changed is refused as a DeltaError
    (or rebuilds bytes the caller's sha256 then refuses); never another exception."""
    rng = random.Random(seed)
    # Content with repeats, as real files have, and random runs.
    words = [rng.randbytes(rng.randint(1, 24)) for _ in range(64)]
    old_content = b"".join(rng.choice(words) for _ in range(size // 12 + 1))[:size]
    new_content = _edited(old_content, edits)
    if rebuilt:  # rebuilt native code: every address after an insertion moves
        old_content = machine_code(size, seed)
        new_content = _edited(machine_code(size, seed, inserted=rebuilt), edits)
    old, new = _packed(old_content, how), _packed(new_content, how)
    built = build_delta(old, new, budget_seconds=5)
    event(f"delta: {'none' if built is None else built.method}")
    if built is None:
        return  # the compression could not be reproduced: the full artifact is fetched
    assert apply_delta(old, built.data) == new
    header_end = built.data.index(b"\n") + 1
    at = header_end + int(flip * (len(built.data) - header_end - 1))
    broken = bytearray(built.data)
    broken[at] ^= 0xFF
    try:
        result = apply_delta(old, bytes(broken))
    except DeltaError:
        return
    assert result != new or bytes(broken) == built.data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_RELEASES)
def test_a_built_delta_gives_back_the_new_bytes_exactly(seed, size, edits, how, flip, rebuilt):
    _round_trip(seed, size, edits, how, flip, rebuilt)


@pytest.mark.exhaustive
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_RELEASES)
def test_deltas_round_trip_over_many_releases(seed, size, edits, how, flip, rebuilt):
    _round_trip(seed, size, edits, how, flip, rebuilt)


def machine_code(size: int, seed: int, inserted: int = 0) -> bytes:
    """Code-like bytes: 16-byte 'instructions', each holding a position-relative 4-byte
    address to a fixed table, so inserting bytes near the start changes an address in
    every instruction after it (what rebuilt native code looks like to a diff)."""
    rng = random.Random(seed)
    ops = [rng.randbytes(12) for _ in range(64)]
    out = bytearray(rng.randbytes(inserted))
    for i in range(size // 16):
        position = len(out)
        out += ops[(i * 7) % 64] + ((10_000_000 - position) % 2**32).to_bytes(4, "little")
    return bytes(out)


def test_rebuilt_code_gets_the_chunked_difference_encoding():
    """zstd breaks a match at every changed address; HDiffPatch's difference encoding makes
    them runs of small numbers. Content over one chunk is split and rebuilt chunk by chunk."""
    old = machine_code(5_000_000, 3)
    new = machine_code(5_000_000, 3, inserted=1000)
    built = build_delta(old, new)
    assert built is not None and built.method == "hdiffpatch-chunks"
    assert len(built.data) < built.tried["zstd-prefix/1"] / 4
    assert apply_delta(old, built.data) == new
    header, _, patch = built.data.partition(b"\n")
    assert int.from_bytes(patch[:4], "little") == 3  # 5 MB in 2 MiB chunks
    for broken, why in [(patch[:4] + b"\xff" * 32 + patch[36:], "outside"),
                        ((99).to_bytes(4, "little") + patch[4:], "chunk table"),
                        (patch + b"x", "after the last chunk")]:
        with pytest.raises(DeltaError, match=why):
            apply_delta(old, header + b"\n" + broken)
