"""Sideloading a bundle against `openssl dgst -sha256` of the same file, in one run.

    python -m bench.sideload [--size-mib 200] [--runs 3]

A repository with one component whose archive is a tar of SIZE MiB of random bytes is
bundled with `release bundle`; then an installation root (no services, so only the data path
is timed: indexing the bundle, TUF verification from it, staging the release straight from
the bundle while hashing it) sideloads it. The anchor is the time openssl takes just to hash
the bundle. Target: at most 1.3x.
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
from greenlight.updater.operations import sideload
from greenlight.updater.product import init_root

MiB = 1024 * 1024


class _Random(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = os.urandom(n)
        self.left -= n
        return n


def measure(size_mib: int = 200, runs: int = 3) -> dict[str, float]:
    """Medians, in seconds, of the sideload and of openssl hashing the bundle."""
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    try:
        archive = work / "blob.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo("blob.bin")
            info.size = size_mib * MiB
            tar.addfile(info, io.BufferedReader(_Random(info.size), 8 * MiB))
        repo = init_repository(work / "repo")
        publish(repo, "stable", "1.0", {"blob": archive})
        archive.unlink()
        bundle = work / "stable.bundle"
        build_bundle(repo, "stable", bundle)
        size = bundle.stat().st_size

        ours, anchor = [], []
        for i in range(runs):
            os.sync()
            started = time.perf_counter()
            subprocess.run(["openssl", "dgst", "-sha256", str(bundle)], check=True,
                           capture_output=True)
            anchor.append(time.perf_counter() - started)
            root = init_root(work / f"root{i}", "http://127.0.0.1:9/",
                                      (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
            os.sync()
            started = time.perf_counter()
            report = sideload(root, bundle)
            ours.append(time.perf_counter() - started)
            assert report.outcome == "upgraded"
            shutil.rmtree(root.path)
        return {"sideload": statistics.median(ours), "openssl": statistics.median(anchor),
                "size": size}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    m = measure(args.size_mib, args.runs)
    a, o, size = m["openssl"], m["sideload"], m["size"]
    print(f"sideload of a {size / MiB:.0f} MiB bundle, median of {args.runs}:")
    print(f"  openssl dgst -sha256 of the bundle  {a:6.2f} s  ({size / a / 1e6:5.0f} MB/s)")
    print(f"  updater sideload (verify + install) {o:6.2f} s  ({size / o / 1e6:5.0f} MB/s)"
          f"  = {o / a:.1f}x the hash alone")


if __name__ == "__main__":
    main()
