"""Upgrades the user never notices: the product's sockets held by Greenlight and passed by
systemd's protocol, and each release proven beside the running one before it is switched in
(preflight), with the demo product's real processes and a client calling the core's UI
endpoint all along."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from greenlight.release import publish
from greenlight.updater.product import ProcessBackend, ServiceConfig, SocketHolder
from greenlight.updater.product.holder import bind
from greenlight.updater.store import InstallRoot

from conftest import builtin_server, child_of, free_port
from examples.demo.config import configure_machine, manifest_toml
from examples.demo.hammer import Hammer

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


class Held:
    """A machine whose releases carry the demo product's manifest with its sockets held."""

    def __init__(self, tmp: Path, repo, url: str, builds) -> None:
        self.tmp, self.repo, self.builds = tmp, repo, builds
        self.path = tmp / "root"
        done = self.run("init", "--repo", url, "--trust", str(repo.metadata_dir / "1.root.json"),
                        "--channel", "stable")
        assert done.returncode == 0, done.stderr
        self.port, self.dns_port = free_port(), free_port()
        configure_machine(self.path, self.port, self.dns_port)
        self.root = InstallRoot(self.path)

    def run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updater"), *args, "--root", str(self.path)],
                              capture_output=True, text=True, timeout=180, **kw)  # type: ignore

    def publish(self, version: str, *faults: str, channel: str = "stable",
                side_by_side: bool = True, fallback: str | None = None,
                handover: bool = False) -> None:
        text = manifest_toml(soak=0.5, grace=4.0, held=True, handover=handover)
        if not side_by_side:
            text = "side_by_side = false\n" + text
        product = self.tmp / f"product-{version}.toml"
        product.write_text(text)
        publish(self.repo, channel, version, self.builds(version, *faults), manifest=product,
                fallback=fallback)

    def upgrade(self, expect: int) -> dict:
        done = self.run("upgrade", "--json")
        assert done.returncode == expect, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout)

    def hammer(self) -> Hammer:
        return Hammer(self.port, (self.path / "data" / "ui-token").read_text().strip())

    def core(self) -> int | None:
        return ProcessBackend(self.root).pid("core")

    def shadows(self) -> list[str]:
        backend = ProcessBackend(self.root, slot="preflight")
        return [n for n in ("core", "ui") if backend.is_running(n)]

    def version(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/api/version", timeout=10).json()["version"]

    def stop(self) -> None:
        self.run("stop")
        backend, shadow = ProcessBackend(self.root), ProcessBackend(self.root, slot="preflight")
        for b in (backend, shadow, ProcessBackend(self.root, slot="next")):
            for name in ("ui", "core"):
                pid = b.pid(name)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
        SocketHolder(self.root).quit()


@pytest.fixture
def machine(tmp_path, repo, builds):
    made: list[Held] = []
    with builtin_server(repo.path) as server:
        def make() -> Held:
            m = Held(tmp_path, repo, server.url, builds)
            made.append(m)
            return m

        yield make
        for m in made:
            m.stop()


def test_the_launcher_passes_held_sockets_by_systemds_protocol(tmp_path):
    """What a service written for systemd's sockets sees: LISTEN_PID its own pid, LISTEN_FDS
    and LISTEN_FDNAMES, and descriptors 3 and 4 the very sockets that were held; and so does
    its restart after a crash (the supervisor keeps them)."""
    root = InstallRoot(tmp_path / "root")
    (tmp_path / "root" / "state").mkdir(parents=True)
    report = tmp_path / "seen.jsonl"
    probe_file = tmp_path / "probe.py"  # a program of several lines: a file (no argument
    probe_file.write_text(  # of a service holds a control character)
        "import json, os, socket, sys\n"
        "seen = {k: os.environ.get(k) for k in ('LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES')}\n"
        "seen['pid'] = os.getpid()\n"
        "seen['fds'] = [list(socket.socket(fileno=fd).getsockname())[:2] for fd in (3, 4)]\n"
        f"open({str(report)!r}, 'a').write(json.dumps(seen) + '\\n')\n"
        "sys.exit(3 if len(open(" + repr(str(report)) + ").readlines()) < 2 else 0)\n")
    probe = str(probe_file)
    api = bind({"listen": f"127.0.0.1:{free_port()}", "kind": "stream"})
    dns = bind({"listen": f"127.0.0.1:{free_port()}", "kind": "datagram"})
    addresses = [list(api.getsockname()), list(dns.getsockname())]
    backend = ProcessBackend(root)
    service = ServiceConfig(name="svc", command=[sys.executable, probe],
                            restart="on-failure", restart_delay=0.0)
    try:
        backend.start(service, {"root": str(root.path)}, [("api", api), ("dns", dns)])
        deadline = time.monotonic() + 30
        while len(report.read_text().splitlines() if report.exists() else []) < 2:
            assert time.monotonic() < deadline, "the service did not run twice"
            time.sleep(0.02)
    finally:
        backend.stop(service, 5.0)
        api.close()
        dns.close()
    runs = [json.loads(line) for line in report.read_text().splitlines()]
    for seen in runs:
        assert seen["LISTEN_PID"] == str(seen["pid"])
        assert seen["LISTEN_FDS"] == "2" and seen["LISTEN_FDNAMES"] == "api:dns"
        assert seen["fds"] == addresses
    assert runs[0]["pid"] != runs[1]["pid"]  # restarted after its crash, same sockets


_ECHO = ("import socket; s = socket.socket(fileno=3)\n"
         "while True:\n    c, _ = s.accept(); c.sendall(b'up'); c.close()\n")


def _held_svc(tmp_path: Path):
    """A root whose holder holds one TCP socket for a service `svc`, and its backend."""
    from greenlight.updater.product import SocketConfig

    root = InstallRoot(tmp_path / "root")
    (tmp_path / "root" / "state").mkdir(parents=True)
    port = free_port()
    held = [SocketConfig(name="api", service="svc", listen=f"127.0.0.1:{port}")]
    return root, port, held, SocketHolder(root), ProcessBackend(root), {"root": str(root.path)}


def close(listening) -> None:
    """This process's copies of held sockets (the holder keeps its own)."""
    for _, sock in listening["svc"]:
        sock.close()


def test_a_held_socket_whose_service_is_down_for_good_refuses_until_it_is_back(tmp_path):
    """A crash loop on a held TCP socket: once its supervisor gives up, a client is refused
    at once (not left waiting in a backlog nobody accepts); the next start listens again on
    the same socket, and the client is served."""
    root, port, held, holder, backend, values = _held_svc(tmp_path)
    crashing = ServiceConfig(name="svc", command=[sys.executable, "-c", "raise SystemExit(3)"],
                             restart_delay=0.0, restart_burst=2)
    (tmp_path / "echo.py").write_text(_ECHO)
    serving = ServiceConfig(name="svc", command=[sys.executable, str(tmp_path / "echo.py")])
    try:
        listening = holder.hold(held, values)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # held: a connection waits in the backlog while nothing serves
        backend.start(crashing, values, listening["svc"])
        close(listening)
        deadline = time.monotonic() + 30
        while backend.is_running("svc"):
            assert time.monotonic() < deadline, "the supervisor did not give up"
            time.sleep(0.02)
        assert backend.restarts("svc").gave_up
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        listening = holder.hold(held, values)  # the next start
        backend.start(serving, values, listening["svc"])
        close(listening)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert client.recv(2) == b"up"
    finally:
        backend.stop(serving, 5.0)
        holder.quit()


def test_a_successor_that_never_serves_leaves_its_predecessor_serving(tmp_path):
    """A handover's successor on the held socket is waited for until it says READY=1: one
    that never says it is not taken for ready, and one that crashes (its launcher down for
    good) does not shut the socket its predecessor still serves on."""
    root, port, held, holder, backend, values = _held_svc(tmp_path)
    (tmp_path / "echo.py").write_text(_ECHO)
    serving = ServiceConfig(name="svc", command=[sys.executable, str(tmp_path / "echo.py")])
    silent = ServiceConfig(name="svc", command=[sys.executable, "-c",
                                                "import time; time.sleep(600)"])
    crashing = ServiceConfig(name="svc", command=[sys.executable, "-c", "raise SystemExit(3)"],
                             restart="no")
    try:
        listening = holder.hold(held, values)
        backend.start(serving, values, listening["svc"])
        close(listening)
        for successor, why in ((silent, "it did not say READY=1 within 0.5s"),
                               (crashing, "it exited before it said READY=1")):
            successors = ProcessBackend(root, slot="next")
            listening = holder.hold(held, values)
            successors.start(successor, values, listening["svc"], notify=True)
            close(listening)
            assert successors.wait_notified("svc", 0.5 if successor is silent else 20) == why
            successors.stop(successor, 5.0)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                assert client.recv(2) == b"up"  # the predecessor, still serving
    finally:
        backend.stop(serving, 5.0)
        holder.quit()


def test_the_holder_keeps_a_socket_across_callers_and_frees_what_is_no_longer_declared(
        tmp_path):
    from greenlight.updater.product import SocketConfig

    def close(listening) -> None:  # this process's copies: the holder keeps its own
        for _, sock in listening["svc"]:
            sock.close()

    root = InstallRoot(tmp_path / "root")
    (tmp_path / "root" / "state").mkdir(parents=True)
    port = free_port()
    api = SocketConfig(name="api", service="core", listen=f"127.0.0.1:{port}")
    holder = SocketHolder(root)
    try:
        first = holder.hold([api], {})
        again = holder.hold([api], {})
        a, b = first["core"][0][1], again["core"][0][1]
        assert (a.getsockname(), a.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)) == (
            b.getsockname(), 1)
        # the same socket: a connection made through one is accepted on the other
        a.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            b.settimeout(5)
            conn, _ = b.accept()
            conn.close()
        b.close()
        assert holder.hold([], {}) == {}  # no longer declared: closed, the port is free
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        holder.quit()
    assert not holder.running()


def test_the_holder_binds_a_unix_socket_at_any_path_length_and_refuses_a_planted_file(
        tmp_path):
    from greenlight.updater import StoreError
    from greenlight.updater.product import SocketConfig

    deep = tmp_path / ("d" * 60) / ("e" * 60)  # past AF_UNIX's 108 bytes, root included
    root = InstallRoot(deep / "root")
    (deep / "root" / "state").mkdir(parents=True)
    path = deep / "run" / "core.sock"
    holder = SocketHolder(root)
    try:
        held = holder.hold([SocketConfig(name="api", service="core", listen=str(path))], {})
        server = held["core"][0][1]
        with socket.socket(socket.AF_UNIX) as client:
            from greenlight.updater.product.holder import unix_address

            address, fd = unix_address(str(path))
            client.connect(address)
            os.close(fd)  # type: ignore[arg-type]
            conn, _ = server.accept()
            conn.close()
        server.close()
        planted = tmp_path / "planted.sock"
        planted.write_text("not a socket")
        with pytest.raises(StoreError, match="exists and is not a socket"):
            holder.hold([SocketConfig(name="api", service="core", listen=str(planted))], {})
        assert planted.read_text() == "not a socket"
        # A socket file left behind: replaced inside the root, never removed outside it.
        for where, replaced in ((tmp_path / "stale.sock", False),
                                (root.path / "run" / "stale.sock", True)):
            where.parent.mkdir(exist_ok=True)
            bind({"listen": str(where)}).close()  # its file stays: a stale socket
            spec = [SocketConfig(name="api", service="core", listen=str(where))]
            if replaced:
                holder.hold(spec, {})["core"][0][1].close()
            else:
                with pytest.raises(StoreError, match="a socket file is there already"):
                    holder.hold(spec, {})
                assert where.exists()
        # Inside the root, a folder on the way that is a symlink is refused.
        (root.path / "elsewhere").symlink_to(tmp_path)
        with pytest.raises(StoreError, match="is a symlink"):
            holder.hold([SocketConfig(name="api", service="core",
                                      listen=str(root.path / "elsewhere" / "x.sock"))], {})
        assert not (tmp_path / "x.sock").exists()
    finally:
        holder.quit()


@pytest.mark.parametrize("top, ok", [
    ("", False),                          # side by side by default: a fixed port cannot be
    ("side_by_side = false\n", True),     # a product that cannot run twice: held, not shadowed
    ("side_by_side = false\nhandover = true\n", False),  # handover runs two at once
])
def test_greenlight_toml_sockets_follow_the_manifests_rules(tmp_path, top, ok):
    from greenlight.updater import ConfigError
    from greenlight.updater.product import Config

    path = tmp_path / "greenlight.toml"
    path.write_text(top + '[repository]\nurl = "http://127.0.0.1:9/"\n[[service]]\n'
                    'name = "core"\ncommand = ["x"]\n[[socket]]\nname = "api"\n'
                    'service = "core"\nlisten = "127.0.0.1:8080"\n')
    if ok:
        assert Config.load(path).socket[0].listen == "127.0.0.1:8080"
        return
    with pytest.raises(ConfigError) as caught:
        Config.load(path)
    said = str(caught.value)
    assert "\n" not in said and ("fixed address" in said or "handover" in said), said


def test_a_good_upgrade_on_held_sockets_refuses_nothing(machine):
    m = machine()
    m.publish("1.0")
    assert m.upgrade(0)["outcome"] == "upgraded"
    m.publish("1.1")
    before = m.core()
    with m.hammer() as h:
        report = m.upgrade(0)
    assert report["outcome"] == "upgraded" and m.version() == "1.1"
    assert m.core() != before
    assert h.tally.requests > 10 and h.tally.errors == [], h.tally.errors[:5]
    assert report["timings"]["preflight"] > 0  # it was proven beside 1.0 first
    assert (m.path / "logs" / "preflight" / "core.log").exists()
    assert m.shadows() == []


def test_a_bad_release_fails_preflight_while_the_ui_never_sees_an_error(machine):
    """The beta incident, caught before it could be noticed: 1.1 refuses the UI's token.
    Preflight runs it beside 1.0, its checks see the 403, and it is quarantined and the
    machine falls back, while 1.0 (the same process) answers every call throughout."""
    m = machine()
    m.publish("1.0")
    assert m.upgrade(0)["outcome"] == "upgraded"
    m.publish("1.1", "refuse-ui-token", channel="beta", fallback="stable")
    assert m.run("channel", "beta").returncode == 0
    core = m.core()
    with m.hammer() as h:
        done = m.run("upgrade")
    assert done.returncode == 20, done.stdout + done.stderr
    assert "CAUGHT IN PREFLIGHT" in done.stdout and "never stopped" in done.stdout
    assert h.tally.requests > 10 and h.tally.errors == [], h.tally.errors[:5]
    assert m.core() == core and m.version() == "1.0"  # never stopped, never switched
    entry = json.loads(m.run("history", "--json").stdout)["entries"][-1]
    assert entry["event"] == "rolled-back" and entry["preflight"] is True
    assert entry["summary"].startswith("preflight (beside 1.0, which kept running)")
    failed = {c["name"]: c for c in entry["failed_checks"]}
    assert failed["ui-session"]["evidence"]["status"] == 403
    assert "denying api access" in json.dumps(failed["ui-session"]["evidence"])
    status = json.loads(m.run("status", "--json").stdout)
    assert status["channel"] == "stable" and [k.split("@")[0] for k in status["quarantined"]] \
        == ["1.1"]
    assert m.shadows() == [] and not (m.path / "state" / "journal.json").exists()


def test_side_by_side_false_keeps_the_stop_start_order_on_held_sockets(machine):
    m = machine()
    m.publish("1.0", side_by_side=False)
    assert m.upgrade(0)["outcome"] == "upgraded"
    m.publish("1.1", side_by_side=False)
    with m.hammer() as h:
        report = m.upgrade(0)
    assert report["outcome"] == "upgraded" and m.version() == "1.1"
    assert not (m.path / "logs" / "preflight").exists()  # no shadow ran
    # stopped, then started: the calls made meanwhile waited in the held socket's backlog
    assert h.tally.errors == [], h.tally.errors[:5]


def test_a_handover_never_leaves_the_sockets_without_a_server(machine):
    """The Envoy order: 1.1's core starts beside 1.0's on the same held sockets and says
    READY=1, then 1.0's drains; the client is never refused and never fails."""
    m = machine()
    m.publish("1.0", handover=True)
    assert m.upgrade(0)["outcome"] == "upgraded"
    m.publish("1.1", handover=True)
    before = m.core()
    with m.hammer() as h:
        report = m.upgrade(0)
    assert report["outcome"] == "upgraded" and m.version() == "1.1"
    assert h.tally.requests > 10 and h.tally.errors == [], h.tally.errors[:5]
    record = json.loads((m.path / "state" / "run" / "core.json").read_text())
    assert record["pid"] != before and "/run/next/" in record["exit_file"]  # taken over
    assert not list((m.path / "state" / "run" / "next").glob("*.json"))
    assert m.run("health").returncode == 0
    # and stopping it afterwards judges its end by the launcher that started it
    done = m.run("stop")
    assert done.returncode == 0 and "core: exited with status 0" in done.stdout + done.stderr \
        or "core: died of SIGTERM" in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("during", ["preflight", "handover"])
def test_killed_mid_switch_the_next_command_leaves_one_whole_release(machine, during):
    """kill -9 while the shadow runs (preflight), or while 1.1's core runs beside 1.0's
    (handover): the next command stops what the updater started and 1.0 serves."""
    m = machine()
    m.publish("1.0", handover=True)
    assert m.upgrade(0)["outcome"] == "upgraded"
    m.publish("1.1", handover=True)
    core = m.core()
    successor = m.path / "state" / "run" / "next" / "core.json"
    upgrade = subprocess.Popen([str(BIN / "updater"), "upgrade", "--root", str(m.path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ("ui" in m.shadows() if during == "preflight" else successor.exists()):
            assert upgrade.poll() is None and time.monotonic() < deadline, f"no {during}"
            time.sleep(0.01)
        upgrade.kill()
    finally:
        upgrade.wait()
    recovered = m.run("status")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert m.shadows() == [] and m.version() == "1.0"
    assert not ProcessBackend(m.root, slot="next").is_running("core")
    if during == "preflight":
        assert m.core() == core  # never stopped
    last = json.loads(m.run("history", "--json").stdout)["entries"][-1]
    assert last["event"] == "recovered" and during in last["summary"] or "start" in \
        last["summary"], last["summary"]
    assert m.upgrade(0)["outcome"] == "upgraded" and m.version() == "1.1"


def test_a_manual_rollback_whose_target_fails_here_comes_back_and_says_so(machine):
    """`updater rollback` to a kept release that fails on this machine now (its fault shows
    only on legacy hardware, which this machine became): the rollback is undone, the machine
    stays on the release it was on, and the target is quarantined, in one report."""
    m = machine()
    m.publish("1.0", "refuse-ui-token-on-legacy", handover=True)
    assert m.upgrade(0)["outcome"] == "upgraded"
    m.publish("1.1", handover=True)
    assert m.upgrade(0)["outcome"] == "upgraded"
    (m.path / "data" / "legacy-hardware").write_text("")
    with m.hammer() as h:
        done = m.run("rollback", "--json")
    assert done.returncode == 20 and "Traceback" not in done.stderr, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "rolled-back" and report["quarantined"] == "1.0"
    assert "ui-session" in report["incident"]["summary"]
    assert m.version() == "1.1" and m.root.installed_version() == "1.1"
    assert h.tally.count("refused") == 0  # held sockets: waited, never refused
    status = json.loads(m.run("status", "--json").stdout)
    assert [k.split("@")[0] for k in status["quarantined"]] == ["1.0"]


def test_a_killed_holder_does_not_block_the_next_upgrade(machine):
    """The holder killed while the product runs (the services keep their copies of the
    sockets): the next upgrade cannot hand over on sockets nobody holds any more, so it
    stops and starts, and a new holder binds them again once the old release let go."""
    m = machine()
    m.publish("1.0", handover=True)
    assert m.upgrade(0)["outcome"] == "upgraded"
    control = str(m.path / "state" / "run" / "sockets.ctl").encode()

    def cmdline(pid: str) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            return b""

    holders = [int(e) for e in os.listdir("/proc") if e.isdigit() and control in cmdline(e)]
    assert len(holders) == 1
    os.kill(holders[0], signal.SIGKILL)
    assert m.version() == "1.0"  # the core still serves on its own copy
    m.publish("1.1", handover=True)
    report = m.upgrade(0)
    assert report["outcome"] == "upgraded" and m.version() == "1.1"
    assert SocketHolder(m.root).running()
    record = json.loads((m.path / "state" / "run" / "core.json").read_text())
    assert "/run/next/" not in record["exit_file"]  # a stop and a start, not a handover


def test_a_product_whose_notify_errors_are_fatal_stays_up(machine):
    """The core ends itself when a notify cannot be sent. Its NOTIFY_SOCKET is its launcher's,
    not the updater's that started it: after a handover (the updater gone), a kill -9 and its
    supervisor's restart (READY=1 again), a second handover (the old core's STOPPING=1) and a
    stop and start, it is up, and nothing was a crash."""
    m = machine()
    m.publish("1.0", "notify-errors-fatal", handover=True)
    assert m.upgrade(0)["outcome"] == "upgraded"
    m.publish("1.1", "notify-errors-fatal", handover=True)
    assert m.upgrade(0)["outcome"] == "upgraded" and m.version() == "1.1"

    backend = ProcessBackend(m.root)
    first = child_of(m.core())
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not ((backend.notified("core") or {}).get("start") == 2
               and (backend.notified("core") or {}).get("ready")):
        assert time.monotonic() < deadline, "the restarted core did not say READY=1"
        time.sleep(0.02)
    assert m.version() == "1.1" and backend.restarts("core").count == 1
    assert "serving on held sockets" in str(backend.notified("core"))

    m.publish("1.2", "notify-errors-fatal", handover=True)
    with m.hammer() as h:
        assert m.upgrade(0)["outcome"] == "upgraded"
    assert m.version() == "1.2" and h.tally.errors == [], h.tally.errors[:5]
    assert m.run("stop").returncode == 0
    assert m.run("start").returncode == 0 and m.version() == "1.2"
    events = [e["event"] for e in json.loads(m.run("history", "--json").stdout)["entries"]]
    assert not {"crashed-on-stop", "crash-loop", "service-restarted"} & set(events), events
    logs = "".join(p.read_text() for p in (m.path / "logs").glob("core.log*"))
    assert "cannot notify" not in logs, logs[-2000:]
