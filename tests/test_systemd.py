"""The systemd backend, the generated units and the stop semantics on a real systemd: a
`systemd --user` of the test's own (tests/usermanager.py), confined to its own cgroup
subtree and torn down with nothing left behind."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenlight.updater.product import ServiceConfig, SystemdBackend, render_unit
from greenlight.updater.store import InstallRoot

from usermanager import UserManager, user_manager

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

_ON_SIGTERM = {
    "exits-0": "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))",
    "dies": "pass",
    "exits-3": "signal.signal(signal.SIGTERM, lambda *a: os._exit(3))",
    "exits-70": "signal.signal(signal.SIGTERM, lambda *a: os._exit(70))",
    "segfaults": "signal.signal(signal.SIGTERM, lambda *a: os.kill(os.getpid(), 11))",
    "ignores": "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
}


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    with user_manager(tmp_path_factory.mktemp("systemd")) as running:
        yield running


def _until(predicate, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


class Units:
    """Services of a test as units of the user manager, each a Python program that writes
    its pid to a marker once its SIGTERM behaviour is in place (whole, by a rename: a marker
    that exists has its pid)."""

    def __init__(self, manager: UserManager, tmp: Path, name: str) -> None:
        self.manager, self.tmp, self.name = manager, tmp, name
        self.root = InstallRoot(tmp)
        (tmp / "logs").mkdir(exist_ok=True)

    def service(self, behaviour: str = "dies", timeout: float = 10, code: str | None = None,
                **fields: object) -> tuple[ServiceConfig, Path, SystemdBackend]:
        marker = self.tmp / f"{self.name}.started"
        marker.unlink(missing_ok=True)
        program = code or (f"import os,pathlib,signal,sys,time; {_ON_SIGTERM[behaviour]}; "
                           f"pathlib.Path(sys.argv[1] + '~').write_text(str(os.getpid())); "
                           f"os.replace(sys.argv[1] + '~', sys.argv[1]); "
                           f"time.sleep(600)")
        service = ServiceConfig(name=self.name, command=[sys.executable, "-c", program,
                                                        str(marker)], **fields)
        unit = self.tmp / SystemdBackend.unit(service)
        unit.write_text(render_unit(service, {"root": str(self.tmp)}, timeout=timeout,
                                    user=True))
        self.manager.install(unit)
        backend = SystemdBackend(self.root, services=[service], user=True)
        backend.systemctl = "systemctl"
        return service, marker, backend


@pytest.fixture
def units(manager, tmp_path, request, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", manager.env["XDG_RUNTIME_DIR"])
    name = "t" + str(abs(hash(request.node.nodeid)) % 10**10)
    made = Units(manager, tmp_path, name)
    yield made
    manager.systemctl("stop", f"greenlight-{name}.service", check=False)


def test_the_backend_starts_asks_and_stops_a_unit(units):
    service, marker, backend = units.service("exits-0")
    backend.start(service, {})
    _until(marker.exists, "the unit's process to start")
    assert backend.is_running(service.name) and backend.pid(service.name) == int(
        marker.read_text())
    assert backend.owns(service.name, int(marker.read_text())) is True
    assert backend.owns(service.name, os.getpid()) is False
    outcome = backend.stop(service, timeout=5)
    assert outcome.was_running and outcome.returncode == 0 and not outcome.crashed
    assert not backend.is_running(service.name) and backend.pid(service.name) is None
    assert not backend.crashed(service.name)
    # Its output went where the process backend's goes.
    assert (units.tmp / "logs").is_dir()


@pytest.mark.parametrize(("behaviour", "returncode", "crashed", "stubborn", "result"), [
    ("exits-0", 0, False, False, "success"),
    ("dies", -15, False, False, "success"),      # death by the stop signal: ExecMainCode=2
    ("exits-70", 70, True, False, "exit-code"),  # in-flight work cut off: a crash on stop
    ("segfaults", -11, True, False, "core-dump"),
    ("ignores", -9, False, True, "timeout"),     # killed after TimeoutStopSec: stubborn
])
def test_stop_outcomes_are_what_systemd_says(units, behaviour, returncode, crashed, stubborn,
                                             result):
    service, marker, backend = units.service(behaviour, timeout=1)
    backend.start(service, {})
    _until(marker.exists, "the unit's process to start")  # its handler is in place
    outcome = backend.stop(service, timeout=1)
    assert (outcome.returncode, outcome.crashed, outcome.killed) == (returncode, crashed,
                                                                     stubborn), outcome
    assert backend.last_exit(service.name)["result"] in (result, "signal"), result
    assert not backend.is_running(service.name)


def test_a_success_exit_status_is_a_clean_stop(units):
    service, marker, backend = units.service("exits-3", success_exit_status=[3])
    backend.start(service, {})
    _until(marker.exists, "the unit's process to start")
    outcome = backend.stop(service, timeout=5)
    assert outcome.returncode == 3 and not outcome.crashed
    assert backend.last_exit(service.name)["result"] == "success"


def test_a_killed_service_is_restarted_and_said(units):
    service, marker, backend = units.service("dies", restart_delay=0.1)
    backend.start(service, {})
    _until(marker.exists, "the unit's process to start")
    first = int(marker.read_text())
    marker.unlink()
    os.kill(first, signal.SIGKILL)  # the main process dies on its own
    _until(marker.exists, "systemd to restart the service")
    assert int(marker.read_text()) != first
    restarts = backend.restarts(service.name)
    # systemd forgets how the process ended once it restarts it; the count is what it keeps.
    assert restarts.count == 1 and not restarts.gave_up and not backend.crashed(service.name)
    assert restarts.describe("svc") == "service svc crashed and was restarted 1 time"
    # A start by Greenlight begins the count again.
    backend.stop(service, timeout=5)
    backend.start(service, {})
    assert backend.restarts(service.name).count == 0


def test_a_crash_loop_hits_the_start_limit_and_stays_down(units):
    service, marker, backend = units.service(
        code="import sys; sys.exit(4)", restart_delay=0.05, restart_burst=3,
        restart_interval=60)
    backend.start(service, {})
    _until(lambda: backend.restarts(service.name).gave_up, "systemd to give up")
    restarts = backend.restarts(service.name)
    assert restarts.count >= 2 and restarts.last_returncode == 4, restarts
    assert backend.crashed(service.name) and not backend.is_running(service.name)
    assert "crash loop" in restarts.describe(service.name)
    # Greenlight's start resets the limit (systemd would refuse a start otherwise).
    marker.unlink(missing_ok=True)
    backend.start(service, {})
    assert backend.restarts(service.name).count <= 1


def test_the_generated_units_load_and_the_agent_unit_stops_on_sigterm(manager, tmp_path, repo):
    root = tmp_path / "root"
    done = subprocess.run([str(BIN / "updater"), "init", "--root", str(root), "--repo",
                           "http://127.0.0.1:9/", "--channel", "stable", "--trust",
                           str(repo.metadata_dir / "1.root.json")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    text = (root / "greenlight.toml").read_text()
    (root / "greenlight.toml").write_text(
        'backend = "systemd"\nsystemd_scope = "user"\n' + text + '''
[[service]]
name = "core"
command = ["{python}", "-c", "import time; time.sleep(600)"]
restart_delay = 2
restart_burst = 4
restart_interval = 30

[[service]]
name = "ui"
command = ["{python}", "-c", "import time; time.sleep(600)"]
restart = "no"
''')
    out = tmp_path / "units"
    done = subprocess.run([str(BIN / "updater"), "systemd-units", "--root", str(root), "--out",
                           str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    paths = sorted(out.iterdir())
    assert [p.name for p in paths] == ["greenlight-agent.service", "greenlight-core.service",
                                       "greenlight-ui.service"]
    manager.install(*paths)
    core = manager.show("greenlight-core.service", "LoadState", "Restart", "RestartUSec",
                        "StartLimitBurst", "StartLimitIntervalUSec", "After", "WantedBy")
    assert core["LoadState"] == "loaded", core
    assert (core["Restart"], core["RestartUSec"], core["StartLimitBurst"],
            core["StartLimitIntervalUSec"]) == ("on-failure", "2s", "4", "30s")
    assert "default.target" in core["WantedBy"]
    ui = manager.show("greenlight-ui.service", "LoadState", "Restart", "After")
    assert ui["Restart"] == "no" and "greenlight-core.service" in ui["After"]
    agent = manager.show("greenlight-agent.service", "LoadState", "Restart", "KillMode",
                         "TimeoutStopUSec", "After")
    assert agent["LoadState"] == "loaded" and agent["Restart"] == "on-failure"
    assert "greenlight-core.service" in agent["After"] and agent["KillMode"] == "control-group"
    # The agent runs under systemd and stops on SIGTERM as any service: a clean stop.
    manager.systemctl("start", "greenlight-agent.service")
    _until(lambda: (root / "logs" / "agent.log").exists(), "the agent's first cycle", 60)
    manager.systemctl("stop", "greenlight-agent.service")
    ended = manager.show("greenlight-agent.service", "Result", "ExecMainCode",
                         "ExecMainStatus", "ActiveState")
    assert ended["ActiveState"] == "inactive" and ended["Result"] == "success", ended


_SERVE_HELD = """\
import json, os, pathlib, socket, sys
seen = {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
seen["pid"] = os.getpid()
server = socket.socket(fileno=3)
seen["address"] = list(server.getsockname())
pathlib.Path(sys.argv[1] + "~").write_text(json.dumps(seen))
os.replace(sys.argv[1] + "~", sys.argv[1])
while True:
    conn, _ = server.accept()
    conn.sendall(f"hello from {os.getpid()}\\n".encode())
    conn.close()
"""


def test_held_sockets_are_passed_by_systemd_and_wait_across_a_restart(units, manager):
    """Under systemd the held socket is a `.socket` unit: the service gets it by the protocol
    (LISTEN_FDNAMES its name), and while the service is stopped a client's connection waits
    in the backlog (the gate takes the traffic, the service is not started by it) until the
    next start accepts it."""
    from greenlight.updater.product import (
        GATE_UNIT,
        SocketConfig,
        render_gate,
        render_socket,
        socket_unit,
    )

    from conftest import free_port

    port = free_port()
    held = SocketConfig(name="api", service=units.name, listen=f"127.0.0.1:{port}")
    program = units.tmp / "serve_held.py"  # an ExecStart= line holds no newline
    program.write_text(_SERVE_HELD)
    service, marker, backend = units.service(
        code=f"import runpy; runpy.run_path({str(program)!r}, run_name='__main__')")
    unit = units.tmp / SystemdBackend.unit(service)
    unit.write_text(render_unit(service, {"root": str(units.tmp)}, user=True, sockets=[held]))
    (units.tmp / socket_unit(held)).write_text(render_socket(held, {}))
    (units.tmp / GATE_UNIT).write_text(render_gate())
    manager.install(unit, units.tmp / socket_unit(held), units.tmp / GATE_UNIT)
    try:
        backend.start(service, {})
        _until(marker.exists, "the unit's process to start")
        first = __import__("json").loads(marker.read_text())
        assert first["LISTEN_PID"] == str(first["pid"]) and first["LISTEN_FDS"] == "1"
        assert first["LISTEN_FDNAMES"] == "api" and first["address"] == ["127.0.0.1", port]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert c.makefile().readline() == f"hello from {first['pid']}\n"
        marker.unlink()
        assert backend.stop(service, timeout=5).was_running
        waiting = socket.create_connection(("127.0.0.1", port), timeout=10)  # not refused
        with waiting:
            assert not backend.is_running(service.name)  # traffic did not start it
            backend.start(service, {})
            _until(marker.exists, "the unit's process to start again")
            second = __import__("json").loads(marker.read_text())
            waiting.settimeout(10)
            assert waiting.makefile().readline() == f"hello from {second['pid']}\n"
        assert second["pid"] != first["pid"]
    finally:
        manager.systemctl("stop", socket_unit(held), GATE_UNIT, check=False)


def test_the_units_follow_each_release_through_upgrades_and_a_rollback(tmp_path, repo,
                                                                         monkeypatch):
    """Under systemd the product's unit files are each release's: `updater systemd-units`
    once, then a release that adds a service and moves the core to another port, a bad one
    rolled back and one that drops a service: each start rewrites the units (and
    enables a new one as the product's were), so no one edits the machine between releases."""
    from greenlight.release import publish

    from conftest import builtin_server, free_port
    from tally import build, manifest

    with user_manager(tmp_path / "systemd") as manager, builtin_server(repo.path) as server:
        monkeypatch.setenv("XDG_RUNTIME_DIR", manager.env["XDG_RUNTIME_DIR"])
        monkeypatch.setenv("XDG_CONFIG_HOME", manager.env["XDG_CONFIG_HOME"])
        root = tmp_path / "root"

        def updater(*args: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([str(BIN / "updater"), *args, "--root", str(root)],
                                  capture_output=True, text=True, timeout=180)
            assert "Traceback" not in done.stderr, done.stderr
            return done

        def release(version: str, text: str) -> None:
            (tmp_path / f"{version}.toml").write_text(text)
            publish(repo, "stable", version, build(version, tmp_path / "builds" / version),
                    manifest=tmp_path / f"{version}.toml")

        def answers(port: str) -> str | None:
            import httpx

            try:
                return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.split()[-1]
            except httpx.HTTPError:
                return None

        done = updater("init", "--repo", server.url, "--trust",
                       str(repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        ports = {name: str(free_port()) for name in ("core_port", "api_port", "relay_port")}
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / "api-key").write_text("k" * 32 + "\n")
        config = root / "greenlight.toml"
        config.write_text('backend = "systemd"\nsystemd_scope = "user"\n'
                          'disabled_checks = ["tally-dns"]\n' + config.read_text()
                          + "\n[values]\n" + "".join(f'{k} = "{v}"\n' for k, v in ports.items()))
        done = updater("systemd-units", "--out", str(manager.units))
        assert done.returncode == 0, done.stderr
        manager.systemctl("enable", "greenlight-agent.service")  # as an admin does
        manager.systemctl("daemon-reload")
        core_unit, relay_unit = manager.units / "greenlight-core.service", (
            manager.units / "greenlight-relay.service")
        relay = {"relay_port": ports["relay_port"]}
        try:
            release("1.0", manifest("core_port"))
            done = updater("upgrade")
            assert done.returncode == 0, done.stdout + done.stderr
            assert answers(ports["core_port"]) == "1.0"
            assert f"--port {ports['core_port']}" in core_unit.read_text()
            assert manager.show("greenlight-core.service", "ActiveState")["ActiveState"] == (
                "active")

            # 1.1 adds a service and moves the core to the port the machine names api_port
            release("1.1", manifest("api_port", relay=True, values=relay))
            assert updater("upgrade").returncode == 0
            assert answers(ports["api_port"]) == "1.1" and answers(ports["core_port"]) is None
            assert relay_unit.exists() and "After=network.target greenlight-core.service" in (
                relay_unit.read_text())
            assert manager.systemctl("is-enabled", "greenlight-relay.service",
                                     check=False).returncode == 0
            assert manager.show("greenlight-relay.service", "ActiveState")["ActiveState"] == (
                "active")
            good = core_unit.read_text()
            assert f"--port {ports['api_port']}" in good

            bad = ('\n[[check]]\nname = "core-v2"\ntype = "http"\n'
                   'url = "http://127.0.0.1:{core_port}/v2/healthz"\n')
            release("1.2", manifest("core_port", relay=True, values=relay, extra_check=bad))
            done = updater("upgrade")
            assert done.returncode == 20, done.stdout + done.stderr
            # the rollback started 1.1 on 1.1's units: the core back on api_port
            assert core_unit.read_text() == good and answers(ports["api_port"]) == "1.1"

            # 1.3 drops the relay: its unit is stopped, disabled and removed
            release("1.3", manifest("core_port"))
            assert updater("upgrade").returncode == 0
            assert answers(ports["core_port"]) == "1.3" and not relay_unit.exists()
            assert manager.show("greenlight-relay.service", "ActiveState")["ActiveState"] != (
                "active")
            assert manager.systemctl("is-enabled", "greenlight-relay.service",
                                     check=False).returncode != 0
            record = __import__("json").loads((root / "state" / "systemd-units.json")
                                              .read_text())
            assert record["units"] == ["greenlight-core.service"]
        finally:
            updater("stop")


_NOTIFYING = r'''
import os, pathlib, socket, sys, time
marker = pathlib.Path(sys.argv[1])
target = os.environ["NOTIFY_SOCKET"]
address = "\0" + target[1:] if target.startswith("@") else target

def say(message):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(message.encode())

time.sleep(1)  # a slow start-up: systemd's start waits for what follows
marker.with_name(marker.name + ".ready").write_text(str(os.getpid()))
say("READY=1")
marker.with_name(marker.name + "~").write_text(str(os.getpid()))
os.replace(marker.with_name(marker.name + "~"), marker)
stall = marker.with_name(marker.name + ".stall")
while True:
    if not (stall.exists() and stall.read_text() == str(os.getpid())):
        say("WATCHDOG=1")
    time.sleep(0.1)
'''


def test_notify_and_watchdog_are_systemds_own(units, tmp_path):
    """`notify = true` and `watchdog` render as Type=notify and WatchdogSec=: systemd's start
    waits for READY=1, and a service that stops sending WATCHDOG=1 is restarted by systemd,
    as the launcher does under the process backend (test_notify.py)."""
    script = tmp_path / "notifying.py"
    script.write_text(_NOTIFYING)
    service, marker, backend = units.service(
        code=f"exec(open({str(script)!r}).read())", notify=True, watchdog=1.0,
        restart_delay=0.1)
    try:
        backend.start(service, {})  # returns once READY=1 was said, a second after the start
        assert marker.with_name(marker.name + ".ready").exists()
        _until(marker.exists, "the unit's process to start")
        first = int(marker.read_text())
        assert backend.restarts(service.name).count == 0
        marker.unlink()
        marker.with_name(marker.name + ".stall").write_text(str(first))
        _until(marker.exists, "systemd's watchdog to restart it", 30)
        assert int(marker.read_text()) != first
        assert backend.restarts(service.name).count == 1 and backend.is_running(service.name)
    finally:
        backend.stop(service, timeout=5)
