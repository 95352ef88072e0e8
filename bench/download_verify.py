"""Warm check and download+verify, against their anchors, in one run on one loopback server.

    python -m bench.download_verify [--size-mib 200] [--runs 3]

Prints:
  - the HTTP requests and TCP connections of a warm `updater check` with nothing new
    (the TUF minimum is two: the next root, absent, and the timestamp);
  - download+verify throughput of one artifact through Greenlight (hashing while streaming
    into the store), as a ratio to `curl` writing to disk, `curl | openssl dgst -sha256`,
    and python-tuf's own `Updater.download_target` (its default urllib3 fetcher, and over
    Greenlight's httpx fetcher);
  - peak memory (max RSS) of a process that downloads and verifies it.
The server is `release serve` in its own process; every run starts with the page cache of the
destination flushed (sync) and the median of the runs is reported.
"""

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tuf.ngclient import Updater

from greenlight.release import init_repository, publish, serving
from greenlight.updater.operations import check, open_repository
from greenlight.updater.product import init_root
from greenlight.updater.trust import Downloads, HttpxFetcher, TrustedRepository

from bench._memory import peak_mib
from bench.sideload import _Random

MiB = 1024 * 1024


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_repo(work: Path, size: int) -> tuple[Path, str]:
    repo = init_repository(work / "repo")
    blob = work / "blob.tar"  # a plain tar of one member of random bytes: an archive
    with tarfile.open(blob, "w") as tar:
        info = tarfile.TarInfo("blob.bin")
        info.size = size - 3 * 512 - 10 * 512  # header, end blocks and padding: about `size`
        tar.addfile(info, io.BufferedReader(_Random(info.size), 8 * MiB))
    channel = publish(repo, "stable", "1.0", {"blob": blob})
    blob.unlink()
    return repo.path, channel.components["blob"].target


def timed(runs: int, prepare: Callable[[], None], work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        prepare()
        os.sync()
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def warm_check(repo: Path, work: Path, runs: int = 20) -> dict[str, object]:
    """A warm `updater check` with nothing new: requests and connections (counted by the
    server), and its median time against python-tuf's bare `Updater.refresh()` (urllib3)."""
    with serving(repo) as server:
        root = init_root(work / "count-root", server.url,
                                  (repo / "metadata" / "1.root.json").read_bytes(), "stable")
        check(root, open_repository(root))
        server.reset_counts()
        check(root, open_repository(root))
        paths, connections = list(server.paths), server.connections
        ours = []
        for _ in range(runs):
            started = time.perf_counter()
            check(root, open_repository(root))
            ours.append(time.perf_counter() - started)
        bare_meta = work / "bare-meta"
        bare_meta.mkdir()
        shutil.copy(repo / "metadata" / "1.root.json", bare_meta / "root.json")
        Updater(str(bare_meta), server.url + "/metadata/", bootstrap=None).refresh()
        bare = []
        for _ in range(runs):
            started = time.perf_counter()
            Updater(str(bare_meta), server.url + "/metadata/", bootstrap=None).refresh()
            bare.append(time.perf_counter() - started)
    return {"paths": paths, "connections": connections,
            "seconds": statistics.median(ours), "bare_seconds": statistics.median(bare)}


def child_download(repo_url: str, metadata_dir: str, target: str, dest: str) -> None:
    """Run in a child process: download and verify one target, for its peak RSS."""
    trusted = TrustedRepository(Path(metadata_dir), repo_url + "/metadata/", repo_url + "/targets/")
    info = trusted.target_info(target)
    assert info is not None
    trusted.download(info, Downloads(Path(dest)))
    print(peak_mib())


def peak_rss_mib(args: list[str]) -> float:
    """Peak memory of a child process that downloads and verifies one target."""
    done = subprocess.run([sys.executable, "-m", "bench.download_verify", "--child", *args],
                          check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--small-mib", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_download(*args.child)
        return

    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    try:
        report(measure(work, args.size_mib, args.small_mib, args.runs), args.size_mib, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, size_mib: int, small_mib: int, runs: int) -> dict[str, object]:
    size = size_mib * MiB
    repo, target = make_repo(work, size)
    stored = next((repo / "targets").rglob("*.blob.tar"))
    warm = warm_check(repo, work)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "release.cli", "serve", str(repo),
                               "--port", str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    file_url = f"{url}/targets/{stored.relative_to(repo / 'targets')}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                import httpx

                httpx.get(f"{url}/metadata/1.root.json")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        out = work / "out"
        meta = work / "meta"
        shutil.rmtree(meta, ignore_errors=True)
        meta.mkdir()
        shutil.copy(repo / "metadata" / "1.root.json", meta / "root.json")

        def fresh() -> None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()

        trusted = TrustedRepository(meta, url + "/metadata/", url + "/targets/")
        info = trusted.target_info(target)
        assert info is not None

        def tuf_updater(fetcher: object) -> Updater:
            return Updater(str(meta), url + "/metadata/", str(out), url + "/targets/",
                           fetcher=fetcher, bootstrap=None)  # type: ignore[arg-type]

        results = {
            "curl > file": timed(runs, fresh, lambda: subprocess.run(
                ["curl", "-sf", "-o", str(out / "f"), file_url], check=True)),
            "curl | openssl dgst -sha256": timed(runs, fresh, lambda: subprocess.run(
                f"curl -sf {file_url} | openssl dgst -sha256 > {out / 'digest'}",
                shell=True, check=True)),
            "python-tuf download_target (urllib3)": timed(runs, fresh, lambda: (
                u := tuf_updater(None), u.refresh(), u.download_target(info))),
            "python-tuf download_target (httpx fetcher)": timed(runs, fresh, lambda: (
                u := tuf_updater(HttpxFetcher()), u.refresh(), u.download_target(info))),
            "greenlight (stream, hash, store)": timed(runs, fresh, lambda: trusted.download(
                info, Downloads(out))),
        }
        small_repo, small_target = make_repo(work / "small", small_mib * MiB)
    finally:
        server.terminate()
        server.wait()

    with serving(small_repo) as small_server:
        smeta = work / "smeta"
        smeta.mkdir()
        shutil.copy(small_repo / "metadata" / "1.root.json", smeta / "root.json")
        rss_small = peak_rss_mib([small_server.url, str(smeta), small_target, str(work / "s1")])
    with serving(repo) as big_server:
        rss_big = peak_rss_mib([big_server.url, str(meta), target, str(work / "s2")])

    return {"size": size, "results": results, "warm": warm, "rss_small": rss_small,
            "rss_big": rss_big}


def report(m: dict, size_mib: int, runs: int) -> None:  # type: ignore[type-arg]
    warm, results, size = m["warm"], m["results"], m["size"]
    ours = results["greenlight (stream, hash, store)"]
    print(f"warm `updater check`, nothing new: {len(warm['paths'])} requests on "
          f"{warm['connections']} connection(s): "
          f"{', '.join(p.rsplit('/', 1)[-1] for p in warm['paths'])} (TUF minimum: 2); "
          f"{warm['seconds'] * 1000:.1f} ms against python-tuf's bare refresh "
          f"{warm['bare_seconds'] * 1000:.1f} ms")
    print()
    print(f"download+verify of a {size_mib} MiB artifact on 127.0.0.1, median of {runs}")
    print(f"{'':44} {'MB/s':>8} {'greenlight is':>14}")
    for name, seconds in results.items():
        mbps = size / seconds / 1e6
        ratio = "" if seconds is ours else f"{seconds / ours:.2f}x"
        print(f"{name:44} {mbps:8.0f} {ratio:>14}")
    print()
    print(f"peak RSS of a download+verify: {m['rss_small']:.0f} MiB, "
          f"{m['rss_big']:.0f} MiB at {size_mib} MiB")


if __name__ == "__main__":
    main()
