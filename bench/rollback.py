"""Rollback time (service restart excluded: no services) for a 10 MB and a 1 GB release.

The root holds two staged releases of the given size; `updater rollback` runs the real
transaction (journal, stop, switch, start, post-check, commit) with no services, so what is
timed is Greenlight's own work, which should not depend on the release's size.
"""

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from greenlight.channels import ComponentArtifact, now
from greenlight.updater.operations import rollback
from greenlight.updater.product import init_root
from greenlight.updater.store import (
    RELEASE_MANIFEST,
    HistoryEntry,
    InstallRoot,
    ReleaseManifest,
    record,
)

MiB = 1024 * 1024


def _release(root: InstallRoot, version: str, size: int) -> None:
    folder = root.release_dir(version) / "app"
    folder.mkdir(parents=True)
    chunk = os.urandom(8 * MiB)
    with (folder / "payload.bin").open("wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    artifact = ComponentArtifact(version=version, target=f"artifacts/app/{version}/app.tar",
                                 sha256="0" * 64, length=size)
    manifest = ReleaseManifest(version=version, channel="stable", components={"app": artifact},
                               installed_at=now())
    (root.release_dir(version) / RELEASE_MANIFEST).write_text(manifest.model_dump_json())


def rollback_seconds(size: int, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
        try:
            root = init_root(work / "root", "http://127.0.0.1:9/", b"{}", "stable")
            _release(root, "1.0", size)
            _release(root, "1.1", size)
            root.switch_current("1.1")
            record(root, HistoryEntry(event="upgraded", channel="stable", from_version="1.0",
                                      to_version="1.1", summary="bench"))
            os.sync()
            started = time.perf_counter()
            report = rollback(InstallRoot(root.path))
            times.append(time.perf_counter() - started)
            assert report.installed == "1.0"
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return statistics.median(times)


__all__ = ["rollback_seconds"]
