"""Greenlight updates itself, on the one-file executable (PyInstaller, built for real).

A machine installed by the offline installer of this tree (Greenlight 0.3.0: bin/updater
enters updater/0.3.0/) is left to its agent. The pipeline publishes this tree built as 0.4.0
with `release publish-updater`, then a release that needs 0.4.0 (`release publish
--requires`). One unattended cycle moves the machine to 0.4.0 and then to the release. A
build published under another version than it is fails its qualification and is quarantined;
a self-update killed -9 once the new version is staged leaves one working updater. (Every
power-loss state of an activation is enumerated in tests/test_selfupdate.py.)
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenlight.channels import this_platform, updater_component
from greenlight.release import init_repository, publish
from greenlight.release.distribution._installer import build_installer
from greenlight.release.distribution._updater import build_updater, updater_archive
from greenlight.updater.store import InstallRoot, managed_version, read_updaters

from conftest import MARKER_PRODUCT, builtin_server

pytestmark = pytest.mark.exhaustive
BIN = Path(sys.executable).parent


def release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "release"), *args], capture_output=True, text=True,
                          timeout=600)


def test_a_machine_on_the_executable_moves_itself_then_the_release(tmp_path, builds):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    installer = build_installer(repo, "stable", tmp_path / "dist", work_dir=tmp_path / "work")
    newer = build_updater(tmp_path / "dist-0.4.0", version="0.4.0",
                          work_dir=tmp_path / "work-0.4.0")
    machine = tmp_path / "machine.toml"
    machine.write_text(MARKER_PRODUCT + "\n[agent]\ninterval = 60\njitter = 0\nretry = 1\n")
    path = tmp_path / "root"
    root = InstallRoot(path)
    point = path / "bin" / "updater"

    def updater(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(point), *args, "--root", str(path)], capture_output=True,
                              text=True, timeout=timeout, cwd=tmp_path)

    def version() -> list[str]:
        return subprocess.run([str(point), "--version"], capture_output=True,
                              text=True, timeout=60).stdout.split()

    with builtin_server(repo.path) as server:
        done = subprocess.run([str(installer), "--root", str(path), "--repo", server.url,
                               "--config", str(machine)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert managed_version(root) == "0.3.0"
        assert version() == ["updater", "0.3.0"]
        assert json.loads(updater("status", "--json").stdout)["greenlight"]["kind"] == "exe"

        published = release("publish-updater", str(repo.path), "--channel", "stable",
                            "--exe", f"{this_platform()}={newer}")
        assert published.returncode == 0, published.stderr
        assert "published Greenlight 0.4.0 on greenlight-stable" in published.stdout

        # Killed -9, with the qualification it runs, once 0.4.0 is staged: the next command
        # finds one working updater (every other point of an activation: test_selfupdate.py).
        killed = subprocess.Popen([str(point), "self-update", "--root", str(path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        deadline = time.monotonic() + 120
        while not (path / "updater" / "0.4.0").exists() and killed.poll() is None:
            assert time.monotonic() < deadline, "0.4.0 was never staged"
            time.sleep(0.01)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        after = updater("status", "--json")
        assert after.returncode == 0, after.stderr
        state = read_updaters(root)
        assert managed_version(root) == state.active.version and state.pending is None
        assert version() == ["updater", state.active.version]

        needs = release("publish", str(repo.path), "--channel", "stable", "--version", "1.1",
                        "--requires", "0.4.0",
                        *[f"--component={n}={p}" for n, p in builds("1.1").items()])
        assert needs.returncode == 0, needs.stderr
        cycle = updater("agent", "--once")
        assert cycle.returncode == 0, cycle.stdout + cycle.stderr
        assert "0.4.0 (qualified, activated)" in cycle.stdout or \
            managed_version(root) == "0.4.0", cycle.stdout
        assert "1.0 -> 1.1" in cycle.stdout, cycle.stdout
        assert root.installed_version() == "1.1"
        assert managed_version(root) == "0.4.0"
        assert version() == ["updater", "0.4.0"]
        # What outlives this version names bin/updater, which follows it: the agent's unit.
        assert updater("systemd-units", "--out", str(tmp_path / "units")).returncode == 0
        unit = (tmp_path / "units" / "greenlight-agent.service").read_text()
        assert f"ExecStart={point} agent" in unit, unit

        # A build published as 0.5.0 that is 0.4.0 fails its qualification: quarantined, and
        # the machine goes on with 0.4.0.
        mislabeled = release("publish-updater", str(repo.path), "--channel", "stable",
                             "--exe", f"{this_platform()}={newer}",
                             "--version", "0.5.0")
        assert mislabeled.returncode == 2 and "says it is 0.4.0" in mislabeled.stderr
        archive = updater_archive(newer, tmp_path / "archives", "0.5.0", this_platform())
        forged = release("publish", str(repo.path), "--channel", "greenlight-stable",
                         "--version", "0.5.0", "--no-deltas",
                         f"--component={updater_component()}={archive}")
        assert forged.returncode == 0, forged.stderr
        refused = updater("self-update", "--json")
        assert refused.returncode == 20, refused.stdout + refused.stderr
        said = json.loads(refused.stdout)
        assert "it says it is Greenlight '0.4.0', not 0.5.0" in said["note"], said
        assert managed_version(root) == "0.4.0"
        assert updater("check").returncode == 0
