"""A fleet report that cannot be queued never fails what it reports, and says so once: the
queue's note, which `updater status` shows until a report gets through; when even that cannot
be written (the disk is full), the reason is returned to the caller's log."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenlight.updater.store import HistoryEntry, InstallRoot, queue_event, queued

BIN = Path(sys.executable).parent


def _root(tmp_path: Path, published) -> InstallRoot:
    from greenlight.updater.product import init_root

    return init_root(tmp_path / "root", "http://127.0.0.1:9/",
                     (published.path / "metadata" / "root.json").read_bytes(), "stable")


def _entry(**fields: object) -> HistoryEntry:
    return HistoryEntry(**{"event": "upgraded", "channel": "stable", "from_version": "1.0",
                           "to_version": "1.1", "summary": "upgraded 1.0 -> 1.1", **fields})


def test_a_report_that_cannot_be_queued_is_said_once_in_the_status(tmp_path, published):
    root = _root(tmp_path, published)
    assert queue_event(root, _entry(), 100) is None and len(queued(root)) == 1
    # a report the wire format refuses (a release key no collector would take)
    bad = _entry(to_release="1.1@" + "z" * 12)
    said = queue_event(root, bad, 100)
    assert said is not None and said.startswith("a report of upgraded 1.1 could not be "
                                                "queued: ValidationError")
    assert len(queued(root)) == 1  # nothing half-written, the first still queued
    status = subprocess.run([str(BIN / "updater"), "status", "--root", str(root.path),
                             "--json"], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["reports"] == said


def test_on_a_full_disk_the_reason_goes_back_to_the_caller(tmp_path, published):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = _root(tmp_path, published)
    folder = root.state / "reports"
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError, match="No space left"):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        said = queue_event(root, _entry(), 100)
        assert said is not None and "could not be queued: OSError" in said
        assert "No space left on device" in said
        assert queued(root) == []
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
