"""After the commit: the demo product on held sockets, left to the agent and reporting to a
real collector, whose new release passes its post-check and then crash-loops. The launcher
gives up, the held socket refuses at once, one agent cycle records and reports the
`crash-loop` and rolls the release back within its probation."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenlight.release import publish
from greenlight.updater.product import ProcessBackend, SocketHolder
from greenlight.updater.store import InstallRoot

from conftest import FLEET, Collector, builtin_server, free_port
from examples.demo.config import configure_machine, manifest_toml
from examples.demo.hammer import Hammer

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _until(predicate, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_release_that_crash_loops_after_its_commit_is_said_refused_and_rolled_back(
        tmp_path, repo, builds):
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'collector.sqlite3'}")
    root = tmp_path / "root"

    def updater(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updater"), *args, "--root", str(root)],
                              capture_output=True, text=True, timeout=180)

    def release(version: str, *faults: str) -> None:
        product = tmp_path / f"product-{version}.toml"
        product.write_text(manifest_toml(soak=0.5, grace=4.0, held=True))
        publish(repo, "stable", version, builds(version, *faults), manifest=product)

    backend = ProcessBackend(InstallRoot(root))
    try:
        with builtin_server(repo.path) as server:
            done = updater("init", "--repo", server.url, "--trust",
                           str(repo.metadata_dir / "1.root.json"), "--channel", "stable")
            assert done.returncode == 0, done.stderr
            port = free_port()
            configure_machine(root, port, free_port())
            (root / "data" / "fleet-token").write_text(FLEET + "\n")
            with (root / "greenlight.toml").open("a") as f:
                f.write(f'\n[agent]\ninterval = 60\njitter = 0\n\n[report]\n'
                        f'url = "{collector.url}"\n')

            def cycle() -> dict:
                done = updater("agent", "--once")
                assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
                return json.loads((root / "state" / "status.json").read_text())

            release("1.0")
            cycle()
            release("1.1", "crash-after-serving")
            status = cycle()
            assert status["installed"] == "1.1", status  # it passed its post-check
            (root / "data" / "crash-now").touch()  # and some time later, it crashes
            token = (root / "data" / "ui-token").read_text().strip()
            with Hammer(port, token, timeout=5.0) as hammer:
                _until(lambda: backend.restarts("core").gave_up, "the launcher to give up")
                gave_up = time.monotonic()
                _until(lambda: hammer.tally.between(gave_up, time.monotonic()).requests >= 20,
                       "the client to call while the core is down")
                down = hammer.tally.between(gave_up, time.monotonic())
                status = cycle()
            # While it was down for good the client was refused at once, never left waiting.
            assert down.count("refused") == down.requests, down.errors[:5]
            assert max(o.seconds for o in down.outcomes) < 1.0

            assert status["installed"] == "1.0", status
            assert status["last_incident"]["event"] == "crash-loop", status["last_incident"]
            assert status["last_incident"]["failed_release"] == "1.1"
            events = [e["event"] for e in json.loads(updater("history", "--json").stdout)
                      ["entries"]]
            assert events[-2:] == ["crash-loop", "manual-rollback"], events
            log = (root / "logs" / "agent.log").read_text()
            assert "crash-loop: service core is in a crash loop" in log, log
            assert "rolled-back: 1.1 rolled back to 1.0" in log, log
            _until(lambda: collector.rollouts().get(("stable", "1.1"), {}).get(
                "outcomes", {}).get("crash-loop") == 1, "the collector to count the crash loop",
                   30)
            counted = collector.rollouts()[("stable", "1.1")]["outcomes"]
            assert counted.get("upgraded") == 1, counted
            # 1.0 serves again on the same held socket.
            with Hammer(port, token, timeout=5.0) as hammer:
                _until(lambda: hammer.tally.count("ok") >= 5, "1.0 to serve", 30)
    finally:
        for name in ("ui", "core"):
            pid = backend.pid(name)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        SocketHolder(InstallRoot(root)).quit()
        collector.stop()
