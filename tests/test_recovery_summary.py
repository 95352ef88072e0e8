"""A recovery says what it found and did for the step the journal says was interrupted, and
nothing else: a failure an earlier start left in a service's log is not this transaction's.
Real processes: tally's core (tests/tally), the `updater` CLI, a kill -9 at a named step."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from greenlight.release import publish
from greenlight.updater.product import ProcessBackend
from greenlight.updater.store import InstallRoot

from conftest import builtin_server, child_of, free_port
from tally import build, configure

BIN = Path(sys.executable).parent
FAILURE = "tally: cannot open the local store"
pytestmark = pytest.mark.slow


def _updater(root: Path, *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "updater"), *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def _until(predicate: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("command", [("upgrade",), ("agent", "--once")])
def test_a_kill_during_fetch_is_recovered_without_an_old_failure_of_the_core(
        tmp_path, repo, command):
    root = tmp_path / "root"
    with builtin_server(repo.path) as server:
        done = _updater(root, "init", "--repo", server.url, "--trust",
                        str(repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        port = free_port()
        configure(root, port, free_port())
        publish(repo, "stable", "1.3", build("1.3", tmp_path / "builds" / "1.3"))
        done = _updater(root, "upgrade")
        assert done.returncode == 0, done.stdout + done.stderr
        backend = ProcessBackend(InstallRoot(root))
        try:
            # An earlier failure, for real: the core crashed, and its supervisor's restart
            # failed as it started (a broken local store) until the store was back.
            log, broken = root / "logs" / "core.log", root / "data" / "crash-on-start"
            broken.touch()
            core = child_of(backend.pid("core"))
            assert core is not None, "the core is not running"
            os.kill(core, signal.SIGKILL)
            _until(lambda: FAILURE in log.read_text(), "the core's restart to fail")
            broken.unlink()
            _until(lambda: _answers(port), "the supervisor to bring the core back")
            assert log.read_text().splitlines()[-1] == FAILURE  # the log's last word
            assert backend.restarts("core").count >= 2
            running = backend.pid("core"), child_of(backend.pid("core"))

            publish(repo, "stable", "1.4", build("1.4", tmp_path / "builds" / "1.4"))
            killed = _updater(root, *command, env={"GREENLIGHT_KILL_AT": "fetch:before"})
            assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
            assert (root / "state" / "journal.json").exists()

            done = _updater(root, "status")  # the next command recovers first
            assert done.returncode == 0, done.stdout + done.stderr
            assert not (root / "state" / "journal.json").exists()
            entries = json.loads(_updater(root, "history", "--json").stdout)["entries"]
            last = entries[-1]
            assert last["event"] == "recovered", entries
            assert last["summary"] == ("interrupted upgrade to 1.4 (during fetch): nothing had "
                                       "changed; 1.3 left as it was"), last["summary"]
            assert FAILURE not in last["summary"] and "exited" not in last["summary"]
            assert InstallRoot(root).installed_version() == "1.3"
            assert (backend.pid("core"), child_of(backend.pid("core"))) == running
            assert _answers(port)
        finally:
            launcher = backend.pid("core")
            if launcher is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(launcher, signal.SIGKILL)
