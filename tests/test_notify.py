"""The service's NOTIFY_SOCKET and its watchdog, under the process backend: the launcher owns
the socket for the service's life (not the updater that started it), reads what systemd
reads there, and restarts a service whose watchdog runs out (systemd's own units for the same
settings are in test_systemd.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from greenlight.updater.product import (
    Config,
    ProcessBackend,
    RepositoryConfig,
    ServiceConfig,
    ServiceControl,
)
from greenlight.updater.store import InstallRoot

from conftest import child_of

# A service written as python-systemd's users write one, treating a failed notify as fatal:
# READY=1 once `go` exists, WATCHDOG=1 every 50 ms unless `stall-<pid>` exists (counted in
# `pings-<pid>`), STOPPING=1 on SIGTERM. It records the protocol's variables it was given in
# `env-<pid>`.
STRICT = r'''
import json, os, pathlib, signal, socket, sys, time
here = pathlib.Path(sys.argv[1])
target = os.environ["NOTIFY_SOCKET"]

def say(message):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect("\0" + target[1:] if target.startswith("@") else target)
            s.sendall(message.encode())
    except OSError as e:
        print(f"notify failed: {e}", flush=True)
        os._exit(71)

def on_term(signum, frame):
    say("STOPPING=1")
    os._exit(0)

signal.signal(signal.SIGTERM, on_term)
(here / f"env-{os.getpid()}").write_text(json.dumps(
    {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}))
while not (here / "go").exists():
    time.sleep(0.01)
say(f"READY=1\nSTATUS=serving as {os.getpid()}")
pings = 0
while True:
    if not (here / f"stall-{os.getpid()}").exists():
        say("WATCHDOG=1")
        pings += 1
        (here / f"pings-{os.getpid()}").write_text(str(pings))
    time.sleep(0.05)
'''

# Starts the service from a process of its own, which then exits, as `updater start` does.
STARTER = r'''
import json, pathlib, sys
from greenlight.updater.product import ProcessBackend, ServiceConfig
from greenlight.updater.store import InstallRoot
service = ServiceConfig.model_validate(json.loads(sys.argv[2]))
root = InstallRoot(pathlib.Path(sys.argv[1]))
ProcessBackend(root).start(service, {"version": "1.0", "root": sys.argv[1]})
'''


def _wait(predicate, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _service(tmp_path: Path, **settings: object) -> ServiceConfig:
    (tmp_path / "strict.py").write_text(STRICT)
    return ServiceConfig(name="core", command=[sys.executable, str(tmp_path / "strict.py"),
                                               str(tmp_path)],
                         workdir=str(tmp_path), restart_delay=0.05, **settings)


def _child(backend: ProcessBackend) -> int | None:
    return child_of(backend.pid("core"))


def _said(backend: ProcessBackend) -> dict:
    return backend.notified("core") or {}


def test_the_notify_socket_lives_as_long_as_the_service_not_its_starter(tmp_path):
    """Started by a process that exits at once: READY=1, a kill -9 and the supervisor's
    restart, its READY=1 again and its STOPPING=1 on a stop all reach a live socket, so a
    service whose notify errors are fatal never dies of one."""
    service = _service(tmp_path, notify=True)
    (tmp_path / "go").touch()
    done = subprocess.run([sys.executable, "-c", STARTER, str(tmp_path),
                           service.model_dump_json()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    backend = ProcessBackend(InstallRoot(tmp_path))
    assert backend.wait_notified("core", 20) is None
    first = _child(backend)
    said = _said(backend)
    assert said["ready"] and said["status"] == f"serving as {first}" and said["start"] == 1
    env = json.loads((tmp_path / f"env-{first}").read_text())
    assert env["NOTIFY_SOCKET"] == said["socket"] and env["WATCHDOG_USEC"] is None

    os.kill(first, signal.SIGKILL)
    _wait(lambda: _said(backend).get("start") == 2 and _said(backend).get("ready"),
          "the restarted service to say READY=1")
    second = _child(backend)
    assert json.loads((tmp_path / f"env-{second}").read_text())["NOTIFY_SOCKET"] == said["socket"]
    restarts = backend.restarts("core")
    assert (restarts.count, restarts.last_returncode, restarts.gave_up) == (1, -9, False)

    outcome = backend.stop(service, 10)
    assert outcome.was_running and not outcome.crashed and outcome.returncode == 0, outcome
    assert "notify failed" not in (tmp_path / "logs" / "core.log").read_text()


def test_a_start_waits_for_ready_1_and_ignores_anyone_else_saying_it(tmp_path):
    """`notify = true`: the start is done when the service says READY=1, not before; a
    READY=1 from a process outside the service is not the service's."""
    service = _service(tmp_path, notify=True, start_timeout=20)
    root = InstallRoot(tmp_path)
    control = ServiceControl(root, Config(repository=RepositoryConfig(url="http://127.0.0.1:9/"),
                                          service=[service]), ProcessBackend(root))
    backend = ProcessBackend(root)
    backend.start(service, {"version": "1.0", "root": str(tmp_path)})
    try:
        _wait(lambda: _said(backend).get("socket"), "the launcher's socket")
        forged = _said(backend)["socket"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect("\0" + forged[1:])
            s.sendall(b"READY=1\nSTATUS=forged")
        assert backend.wait_notified("core", 0.5) == "it did not say READY=1 within 0.5s"
        assert _said(backend)["status"] is None
    finally:
        backend.stop(service, 10)

    (tmp_path / "go").touch()
    control.start_all("1.0@000000000000")  # returns once READY=1 was said
    try:
        assert _said(control.backend)["ready"]
    finally:
        control.stop_all("1.0@000000000000")


def test_a_service_that_stops_pinging_its_watchdog_is_restarted(tmp_path):
    """`watchdog = 0.5`: the service is told WATCHDOG_USEC and its own WATCHDOG_PID; while it
    pings it runs on; once it stops (still running), it is sent SIGABRT and restarted, and the
    restart says it was the watchdog's."""
    service = _service(tmp_path, notify=True, watchdog=0.5)
    (tmp_path / "go").touch()
    backend = ProcessBackend(InstallRoot(tmp_path))
    backend.start(service, {"version": "1.0", "root": str(tmp_path)})
    try:
        assert backend.wait_notified("core", 20) is None
        first = _child(backend)
        env = json.loads((tmp_path / f"env-{first}").read_text())
        assert (env["WATCHDOG_USEC"], env["WATCHDOG_PID"]) == ("500000", str(first))
        pings = tmp_path / f"pings-{first}"
        # 30 pings are 1.5 s at least: three watchdog periods, and it still runs unrestarted
        _wait(lambda: pings.exists() and int(pings.read_text() or 0) >= 30, "30 pings")
        assert backend.restarts("core").count == 0 and _child(backend) == first
        (tmp_path / f"stall-{first}").touch()
        _wait(lambda: backend.restarts("core").count == 1, "the watchdog to restart it")
        restarts = backend.restarts("core")
        assert restarts.watchdog and restarts.last_returncode == -signal.SIGABRT
        assert "its watchdog ran out: no WATCHDOG=1 in time" in restarts.describe("core")
        _wait(lambda: _said(backend).get("start") == 2 and _said(backend).get("ready"),
              "the restarted service to say READY=1")
        assert _child(backend) != first and backend.is_running("core")
    finally:
        assert not backend.stop(service, 10).crashed
