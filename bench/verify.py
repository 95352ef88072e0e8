"""`updater verify` of a 1 GiB release against `openssl dgst -sha256` of the same files.

    python -m bench.verify [--size-mib 1024] [--files 64] [--runs 3]

A release of FILES files of random bytes, SIZE MiB in all, is published (its file list signed
beside the archive: publish unpacks the archive as a machine does and lists the tree, timed
too), bundled, and sideloaded into an installation root with no services. Then, page cache
warm (the tree was just written) for both: `verify` of the installed tree (every file's type,
size and mode compared, every byte hashed, two files at a time), against the anchor, `openssl
dgst -sha256` of the same files in one process (coreutils' sha256sum, without the CPU's SHA
instructions, hashed at 185 MB/s here: no anchor). Printed: medians of RUNS, and the ratio. Last,
one file is changed (same size) and verify names it. Target: at most 1.0x the anchor.
"""

import argparse
import io
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from greenlight.release import build_bundle, init_repository, publish
from greenlight.updater.operations import sideload, verify
from greenlight.updater.product import init_root

MiB = 1024 * 1024


def _tree_tar(path: Path, size_mib: int, files: int) -> None:
    each = size_mib * MiB // files
    with tarfile.open(path, "w") as tar:
        for i in range(files):
            info = tarfile.TarInfo(f"data/part-{i:04d}.bin")
            info.size, info.mode = each, 0o644
            data = os.urandom(each)
            tar.addfile(info, io.BytesIO(data))


def measure(size_mib: int = 1024, files: int = 64, runs: int = 3) -> dict[str, float]:
    """Medians, in seconds: verify, openssl; and publish's time with its file lists."""
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-verify-"))
    try:
        archive = work / "blob.tar"
        _tree_tar(archive, size_mib, files)
        repo = init_repository(work / "repo")
        started = time.perf_counter()
        publish(repo, "stable", "1.0", {"blob": archive}, deltas=False)
        published = time.perf_counter() - started
        archive.unlink()
        bundle = work / "stable.bundle"
        build_bundle(repo, "stable", bundle)
        root = init_root(work / "root", "http://127.0.0.1:9/",
                         (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
        assert sideload(root, bundle).outcome == "upgraded"
        bundle.unlink()
        tree = root.path / "current" / "blob"
        paths = sorted(str(p) for p in tree.rglob("*") if p.is_file())
        ours, anchor = [], []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(["openssl", "dgst", "-sha256", *paths], check=True,
                           capture_output=True)
            anchor.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = verify(root)
            ours.append(time.perf_counter() - started)
            assert not report.differences and report.checked == files, report.summary
        changed = Path(paths[len(paths) // 2])
        with changed.open("r+b") as f:
            f.seek(12345)
            byte = f.read(1)
            f.seek(12345)
            f.write(bytes([byte[0] ^ 1]))
        found = verify(root)
        assert [(d.kind, d.what) for d in found.differences] == [("changed", "content")]
        return {"verify": statistics.median(ours), "openssl": statistics.median(anchor),
                "publish": published, "bytes": sum(os.path.getsize(p) for p in paths),
                "found": found.summary}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    m = measure(args.size_mib, args.files, args.runs)
    size, o, a = m["bytes"], m["verify"], m["openssl"]
    print(f"verify of a {size / MiB:.0f} MiB release in {args.files} files, median of "
          f"{args.runs}, page cache warm:")
    print(f"  openssl dgst -sha256, same files {a:6.2f} s  ({size / a / 1e6:5.0f} MB/s)")
    print(f"  updater verify                   {o:6.2f} s  ({size / o / 1e6:5.0f} MB/s)"
          f"  = {o / a:.2f}x the anchor")
    print(f"  release publish (with its file lists) {m['publish']:6.2f} s")
    print(f"  one byte changed: {m['found']}")


if __name__ == "__main__":
    main()
