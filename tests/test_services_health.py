"""Services and health checks against the real demo core, under the process backend (the
systemd backend runs on a real systemd in test_systemd.py)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from greenlight.updater.product import (
    CommandCheck,
    DnsCheck,
    HealthChecker,
    HttpCheck,
    ProcessBackend,
    ServiceConfig,
    SystemdBackend,
    TcpCheck,
    VersionCheck,
    WebSocketCheck,
    render_unit,
)
from greenlight.updater.store import InstallRoot

from conftest import free_port
from examples.demo.build import build


@pytest.fixture
def core(tmp_path):
    """A real demo core (built with a fault or not) running under the process backend."""
    started = []

    def run(*faults: str):
        archives = build("9.9", tmp_path / "build", faults)
        release = tmp_path / "release" / "core"
        release.mkdir(parents=True)
        subprocess.run(["tar", "-C", str(release), "-xzf", str(archives["core"])], check=True)
        (tmp_path / "token").write_text("s3cret\n")
        port, dns_port = free_port(), free_port()
        root = InstallRoot(tmp_path)
        backend = ProcessBackend(root)
        service = ServiceConfig(name="core", command=[
            sys.executable, str(release / "core.py"), "--port", str(port),
            "--token-file", str(tmp_path / "token"), "--dns-port", str(dns_port)])
        backend.start(service, {"version": "9.9", "root": str(tmp_path)})
        started.append((backend, service))
        checker = HealthChecker(tmp_path, backend, {"version": "9.9", "root": str(tmp_path)})
        # Ready means both listeners are bound: the HTTP port and the DNS responder (which
        # the core starts after it), so no check below races the core's start-up.
        dns = DnsCheck(name="d", type="dns", resolver=f"127.0.0.1:{dns_port}",
                       query="core.greenlight.test", timeout=0.5)
        deadline = time.monotonic() + 20
        while not (checker.run(TcpCheck(name="t", type="tcp", port=port)).ok
                   and checker.run(dns).ok):
            assert time.monotonic() < deadline, "core did not start"
            time.sleep(0.05)
        return checker, port, dns_port, backend, service

    yield run
    for backend, service in started:
        backend.stop(service, timeout=5)


def test_checks_pass_on_a_good_core_with_evidence(core):
    checker, port, dns_port, _, _ = core()
    base = f"http://127.0.0.1:{port}"
    results = checker.run_all([
        HttpCheck(name="session", type="http", url=f"{base}/api/v1/session",
                  bearer_token_file="token", json_fields={"user": "ui"}),
        WebSocketCheck(name="ws", type="websocket", url=f"ws://127.0.0.1:{port}/ws",
                       bearer_token_file="token", send=['{"auth": "{token}"}', "hi"],
                       expect=['"ok": true', "hi"]),
        DnsCheck(name="dns", type="dns", resolver=f"127.0.0.1:{dns_port}",
                 query="core.greenlight.test", expect="127.0.0.1"),
        VersionCheck(name="version", type="version", url=f"{base}/api/version"),
        CommandCheck(name="true", type="command", command=["true"]),
    ])
    assert [r.ok for r in results] == [True] * 5, [r.summary for r in results]
    assert results[0].evidence["status"] == 200 and results[0].latency_ms > 0
    assert results[2].evidence["answers"] == ["127.0.0.1"]


def test_checks_explain_a_core_that_refuses_the_ui(core):
    checker, port, dns_port, _, _ = core("refuse-ui-token")
    base = f"http://127.0.0.1:{port}"
    ping = checker.run(HttpCheck(name="ping", type="http", url=f"{base}/api/ping"))
    session = checker.run(HttpCheck(name="session", type="http", url=f"{base}/api/v1/session",
                                    bearer_token_file="token", retries=2, interval=0.01))
    ws = checker.run(WebSocketCheck(name="ws", type="websocket", url=f"ws://127.0.0.1:{port}/ws",
                                    bearer_token_file="token", send=['{"auth": "{token}"}']))
    assert ping.ok  # "the port answers" is not "the UI can use the core"
    assert not session.ok and session.attempts == 3
    assert session.evidence["status"] == 403 and "denying api access" in session.summary
    assert not ws.ok and ws.evidence["close_code"] == 4003


def test_wrong_version_dns_and_dead_port_are_explained(core):
    checker, port, dns_port, _, _ = core()
    version = checker.run(VersionCheck(name="v", type="version", url=f"http://127.0.0.1:{port}/api/version"))
    checker.values["version"] = "1.0"
    wrong = checker.run(VersionCheck(name="v", type="version", url=f"http://127.0.0.1:{port}/api/version"))
    assert version.ok and not wrong.ok and "version is '9.9', expected '1.0'" in wrong.summary
    dns = checker.run(DnsCheck(name="d", type="dns", resolver=f"127.0.0.1:{dns_port}",
                               query="other.test", timeout=1))
    assert not dns.ok and "answered nothing" in dns.summary
    dead = checker.run(TcpCheck(name="p", type="tcp", port=free_port(), timeout=0.5))
    assert not dead.ok and "refused" in dead.summary


def test_process_backend_records_exit_and_kills_after_timeout(core):
    checker, port, _, backend, service = core()
    outcome = backend.stop(service, timeout=5)
    # A clean stop: the core exits 0 from its handler, or dies of the SIGTERM it was sent if
    # the signal came before the handler was in place; both are clean, as in systemd.
    assert outcome.was_running and not outcome.killed and outcome.returncode in (0, -15)
    assert not outcome.crashed and not backend.is_running("core")
    again = backend.stop(service, timeout=1)
    assert not again.was_running

    # The child says when it ignores SIGTERM; only then is a stop a test of the kill.
    ignoring = backend.root.path / "ignoring-sigterm"
    stubborn = ServiceConfig(name="stubborn", command=[
        sys.executable, "-c", "import pathlib,signal,sys,time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); pathlib.Path(sys.argv[1]).touch(); "
        "time.sleep(60)", str(ignoring)])
    backend.start(stubborn, {"root": str(backend.root.path)})
    deadline = time.monotonic() + 20
    while not ignoring.exists():
        assert time.monotonic() < deadline and backend.is_running("stubborn")
        time.sleep(0.01)
    slow = backend.stop(stubborn, timeout=0.5)
    assert slow.killed and not slow.crashed and not backend.is_running("stubborn")


def test_systemd_unit_is_rendered_from_the_config():
    service = ServiceConfig(name="core", command=["{python}", "{release_dir}/core/core.py",
                                                  "--port", "80"], env={"MODE": "prod"},
                            stop_signal="SIGINT")
    unit = render_unit(service, {"python": "/usr/bin/python3", "release_dir": "/opt/app/current",
                                 "root": "/opt/app"}, timeout=12)
    assert f"ExecStart={sys.executable} /opt/app/current/core/core.py --port 80" in unit
    assert "KillSignal=SIGINT" in unit and "TimeoutStopSec=12" in unit
    assert "WorkingDirectory=/opt/app" in unit and "Environment=MODE=prod" in unit
    assert "Restart=on-failure" in unit and "RestartSec=1s" in unit
    assert "StartLimitBurst=5" in unit and "StartLimitIntervalSec=60s" in unit
    assert "StandardOutput=append:/opt/app/logs/core.log" in unit


def test_systemd_backend_without_systemctl_is_a_config_error(tmp_path):
    from greenlight.updater import ConfigError

    backend = SystemdBackend(InstallRoot(tmp_path), systemctl=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="systemctl is not on this machine"):
        backend.is_running("core")


def _echo_server():
    """A core that answers 401 and echoes the request's headers in the body."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = f"denying api access; you sent {dict(self.headers)}".encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_tokens_never_reach_a_result(tmp_path):
    from greenlight.updater.product import HttpCheck

    token = "s3cret-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    server = _echo_server()
    try:
        checker = HealthChecker(tmp_path, ProcessBackend(InstallRoot(tmp_path)), {})
        result = checker.run(HttpCheck(
            name="ui-session", type="http", bearer_token_file="token",
            url=f"http://127.0.0.1:{server.server_address[1]}/api/v1/session",
            headers={"X-Api-Key": "another-secret-value"}))
    finally:
        server.shutdown()
    assert not result.ok and "401" in result.summary
    dumped = result.model_dump_json()
    assert token not in dumped and "another-secret-value" not in dumped
    assert "[reda" in dumped  # the marker may itself be cut by the excerpt


@pytest.mark.parametrize("content", [b"abc\ndef\n", "t\u00f6ken".encode(), b"", b"two words"])
def test_bad_token_files_are_refused_without_showing_them(tmp_path, content):
    from greenlight.updater import ConfigError
    from greenlight.updater.product import HttpCheck

    (tmp_path / "token").write_bytes(content)
    checker = HealthChecker(tmp_path, ProcessBackend(InstallRoot(tmp_path)), {})
    with pytest.raises(ConfigError, match="one line of printable ASCII") as refused:
        checker.run(HttpCheck(name="s", type="http", url="http://127.0.0.1:9/",
                              bearer_token_file="token"))
    for line in content.splitlines():
        if line:
            assert line.decode(errors="replace") not in str(refused.value)


def test_a_service_that_dies_of_sigterm_stopped_cleanly(tmp_path):
    backend = ProcessBackend(InstallRoot(tmp_path))
    ready = tmp_path / "ready"
    plain = ServiceConfig(name="plain", command=[
        sys.executable, "-c", "import pathlib,sys,time; pathlib.Path(sys.argv[1]).touch(); "
        "time.sleep(60)", str(ready)])
    backend.start(plain, {"root": str(tmp_path)})
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    outcome = backend.stop(plain, timeout=5)
    assert outcome.returncode == -15 and not outcome.crashed and not outcome.killed
    assert "died of SIGTERM" in outcome.describe() and "clean stop" in outcome.describe()


@pytest.mark.parametrize(("listed", "status", "crashed"), [
    ([], 143, True), ([143], 143, False), (["SIGINT"], -2, False), ([], -2, True)])
def test_success_exit_status_widens_what_is_clean(listed, status, crashed):
    from greenlight.updater.product import StopOutcome
    from greenlight.updater.product._services import clean_statuses

    service = ServiceConfig(name="s", command=["x"], success_exit_status=listed)
    outcome = StopOutcome("s", True, status, False, 0.1, clean_statuses(service))
    assert outcome.crashed is crashed


# The marker is written whole, by a rename: a marker that exists has the child's pid (a
# SIGTERM between its creation and its write left it empty).
_CHILD = ("import os,pathlib,sys,time; pathlib.Path(sys.argv[1] + '~').write_text(str(os.getpid()))"
          "; os.replace(sys.argv[1] + '~', sys.argv[1]); time.sleep(60)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent is gone for every purpose here.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_stop_sent_at_once_after_start_stops_the_service(tmp_path):
    """No wait between start and stop: every round ends clean, recorded, nothing orphaned."""
    backend = ProcessBackend(InstallRoot(tmp_path))
    for round_ in range(15):
        marker = tmp_path / f"child-{round_}"
        service = ServiceConfig(name="quick", command=[sys.executable, "-c", _CHILD, str(marker)])
        backend.start(service, {"root": str(tmp_path)})
        outcome = backend.stop(service, timeout=10)
        assert outcome.was_running and not outcome.killed and not outcome.crashed, outcome
        assert backend.last_exit("quick") is not None  # the launcher recorded the exit
        assert not backend.is_running("quick")
        if marker.exists():  # the child got as far as running: it is gone too
            assert not _alive(int(marker.read_text()))


def test_the_launcher_forwards_a_signal_that_comes_during_its_start_up(tmp_path):
    """SIGTERM sent to the launcher right after it is spawned, at staggered moments: either
    it dies before it started anything, or the child gets the signal; never an orphan."""
    from greenlight.updater.product import launcher_argv

    forwarded = 0
    for round_ in range(60):  # 20 staggered rounds, then later ones until one forwarded
        if round_ >= 20 and forwarded:
            break
        marker, exit_file = tmp_path / f"child-{round_}", tmp_path / f"exit-{round_}.json"
        launcher = subprocess.Popen([*launcher_argv(), "--exit-file", str(exit_file), "--",
                                     sys.executable, "-c", _CHILD, str(marker)],
                                    start_new_session=True)
        if round_ % 4 or round_ >= 20:  # staggered by busy work, not by sleeping
            deadline = time.perf_counter() + (
                round_ * 0.004 if round_ < 20 else (round_ - 19) * 0.05)
            while time.perf_counter() < deadline:
                pass
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
        if exit_file.exists():
            record = json.loads(exit_file.read_text())
            assert record["signals"] == ["SIGTERM"] and record["returncode"] == -15, record
            forwarded += 1
        if marker.exists():
            assert exit_file.exists()  # a child that ran was waited for and recorded
            assert not _alive(int(marker.read_text()))
    assert forwarded > 0


_ORDERED = """
import os, pathlib, signal, sys, time
name, folder = sys.argv[1], pathlib.Path(sys.argv[2])
before = {"a": None, "b": "a", "c": "b"}[name]
log = folder / "order.log"
def say(line):
    with open(log, "a") as f:
        f.write(line + "\\n")
def stop(*_):
    say(f"stop {name}")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
say(f"start {name}" + (f" ({before} ready: {(folder / f'{before}.ready').exists()})"
                       if before else ""))
time.sleep(0.3)  # not ready at once: the next one must wait
(folder / f"{name}.ready").write_text("")
while True:
    time.sleep(1)
"""


def _control(tmp_path, services, checks):
    from greenlight.updater.product import Config, RepositoryConfig, ServiceControl

    config = Config(repository=RepositoryConfig(url="http://127.0.0.1:9/"), service=services,
                    check=checks)
    root = InstallRoot(tmp_path)
    return ServiceControl(root, config, ProcessBackend(root))


def test_services_start_in_order_each_ready_first_and_stop_in_reverse(tmp_path):
    from greenlight.updater.product import CommandCheck

    script = tmp_path / "ordered.py"
    script.write_text(_ORDERED)
    names = ["a", "b", "c"]
    control = _control(
        tmp_path,
        [ServiceConfig(name=n, command=[sys.executable, str(script), n, str(tmp_path)],
                       ready=f"{n}-ready") for n in names],
        [CommandCheck(name=f"{n}-ready", type="command",
                      command=["test", "-e", str(tmp_path / f"{n}.ready")]) for n in names])
    control.start_all("1.0@000000000000")
    try:
        outcomes = control.stop_all("1.0@000000000000")
    finally:
        for n in names:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.killpg(control.backend.pid(n), signal.SIGKILL)
    assert (tmp_path / "order.log").read_text().splitlines() == [
        "start a", "start b (a ready: True)", "start c (b ready: True)",
        "stop c", "stop b", "stop a"]
    assert [o.service for o in outcomes] == ["c", "b", "a"]
    assert not any(o.crashed or o.killed for o in outcomes)


def test_a_release_that_dies_during_start_up_is_named_with_its_last_words(tmp_path):
    from greenlight.updater.product import HealthFailure

    control = _control(
        tmp_path,
        [ServiceConfig(name="core", ready="core-port", command=[
            "sh", "-c", "echo 'core: cannot open the store' >&2; exit 3"])],
        [TcpCheck(name="core-port", type="tcp", port=free_port())])
    with pytest.raises(HealthFailure) as failed:
        control.start_all("1.4@000000000000")
    assert str(failed.value) == ("service core of 1.4 exited during start-up: "
                                 "core: cannot open the store")
    result = failed.value.results[0]
    assert result.name == "core-start" and not result.ok
    assert result.evidence["last_exit"]["returncode"] == 3


# --- supervision: the launcher restarts crashed services, as systemd would -----------------

_MARKED = ("import os,pathlib,sys,time; pathlib.Path(sys.argv[1]).write_text(str(os.getpid()));"
           " time.sleep(600)")


def _wait(predicate, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_crashed_service_is_restarted_and_a_crash_loop_left_down(tmp_path):
    marker = tmp_path / "core.pid"
    control = _control(tmp_path, [ServiceConfig(
        name="core", command=[sys.executable, "-c", _MARKED, str(marker)],
        restart_delay=0.05, restart_burst=3, restart_interval=60)], [])
    backend = control.backend
    control.start_all("1.0@000000000000")
    try:
        _wait(marker.exists, "the service to start")
        first = int(marker.read_text())
        marker.unlink()
        os.kill(first, signal.SIGKILL)  # the service dies; its launcher lives
        _wait(marker.exists, "the launcher to restart the service")
        assert int(marker.read_text()) != first and backend.is_running("core")
        restarts = backend.restarts("core")
        assert (restarts.count, restarts.last_returncode, restarts.gave_up) == (1, -9, False)
        assert not backend.crashed("core")
        assert control.supervise() == [("core", restarts, 1, False)]
        assert control.supervise() == []  # said once
        # Two more crashes within the interval: the third start was the last the burst allows.
        for _ in range(2):
            _wait(marker.exists, "the service to run")
            pid = int(marker.read_text())
            marker.unlink()
            os.kill(pid, signal.SIGKILL)
        _wait(lambda: not backend.is_running("core"), "the launcher to give up")
        restarts = backend.restarts("core")
        assert restarts.gave_up and restarts.count == 2 and backend.crashed("core")
        assert restarts.describe("core") == (
            "service core is in a crash loop: it crashed again (death by SIGKILL) after being "
            "restarted 2 times, and its supervisor gave up")
        news = control.supervise()
        assert [(n, new, looped) for n, _, new, looped in news] == [("core", 1, True)]
    finally:
        control.stop_all("1.0@000000000000")


@pytest.mark.parametrize(("policy", "code", "restarted"), [
    ("on-failure", "import sys; sys.exit(0)", False),      # a clean exit is not a failure
    ("on-failure", "import os,signal; os.kill(os.getpid(), signal.SIGTERM)", False),
    ("on-failure", "import sys; sys.exit(3)", True),
    ("no", "import sys; sys.exit(3)", False),
    ("always", "import sys; sys.exit(0)", True),
])
def test_the_restart_policy_is_systemds(tmp_path, policy, code, restarted):
    marker = tmp_path / "ran"
    program = ("import pathlib,sys; p=pathlib.Path(sys.argv[1]); "
               f"p.write_text(p.read_text() + 'x' if p.exists() else 'x'); {code}")
    backend = ProcessBackend(InstallRoot(tmp_path))
    service = ServiceConfig(name="core", command=[sys.executable, "-c", program, str(marker)],
                            restart=policy, restart_delay=0.05, restart_burst=2)
    backend.start(service, {"root": str(tmp_path)})
    try:
        _wait(lambda: not backend.is_running("core"), "the service to end for good")
    finally:
        backend.stop(service, timeout=5)
    assert (marker.read_text() == "xx") is restarted, marker.read_text()
    assert backend.restarts("core").gave_up is restarted


def test_a_stop_while_a_restart_waits_is_a_clean_stop(tmp_path):
    backend = ProcessBackend(InstallRoot(tmp_path))
    service = ServiceConfig(name="core", restart_delay=600,
                            command=[sys.executable, "-c", "import sys; sys.exit(4)"])
    backend.start(service, {"root": str(tmp_path)})
    _wait(lambda: backend.restarts("core").count == 1, "the first crash")
    outcome = backend.stop(service, timeout=5)
    assert outcome.was_running and not outcome.crashed and not outcome.killed
    assert outcome.seconds < 5 and not backend.is_running("core")
    assert backend.last_exit("core")["last_crash"] == 4


def test_a_service_that_crashes_during_the_post_check_fails_it(tmp_path):
    """A release whose service crashed once and was restarted runs again, but it is not
    healthy: the post-check fails it, naming the crash; `updater health` later only says it."""
    from greenlight.updater.product import HealthFailure

    marker = tmp_path / "crashed-once"
    program = ("import pathlib,sys,time; p=pathlib.Path(sys.argv[1]); "
               "first = not p.exists(); first and (time.sleep(0.3), p.write_text('x'), "
               "sys.exit(3)); time.sleep(600)")
    control = _control(tmp_path, [ServiceConfig(
        name="core", command=[sys.executable, "-c", program, str(marker)],
        restart_delay=0.05)], [])
    control.start_all("1.0@000000000000")
    try:
        with pytest.raises(HealthFailure) as failed:
            control.post_check("1.0@000000000000", grace=0.1, soak=3)
        assert "check core-running: service core crashed (exit status 3) and was restarted " \
               "1 time" in failed.value.summary
        evidence = failed.value.results[0].evidence
        assert (evidence["restarts"], evidence["last_crash"]) == (1, 3)
        # By hand, later: it runs, and the restart is in the evidence, not a failure.
        [result] = control.check_now("1.0@000000000000")
        assert result.ok and result.evidence["restarts"] == 1
    finally:
        control.stop_all("1.0@000000000000")


def test_a_stray_process_on_the_port_is_not_taken_for_the_service(tmp_path):
    """What answers the ready check must be the service: a stray server holding its port
    (another copy, another program) fails the start, named, and the service is not left
    restarting."""
    from greenlight.updater.product import HealthFailure

    port = free_port()
    stray = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                              "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _answers(port), "the stray server to listen")
        control = _control(tmp_path, [ServiceConfig(
            name="core", ready="core-up",
            command=[sys.executable, "-c", "import time; time.sleep(600)"])],
            [HttpCheck(name="core-up", type="http", url=f"http://127.0.0.1:{port}/")])
        try:
            with pytest.raises(HealthFailure) as failed:
                control.start_all("1.0@000000000000")
        finally:
            control.stop_all("1.0@000000000000")
        assert f"port {port} answers from pid {stray.pid} (" in str(failed.value)
        assert "http.server" in str(failed.value) and "not from the service" in str(failed.value)
    finally:
        stray.kill()
        stray.wait()


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _expected_minimum() -> dict[str, str]:
    """The documented minimum (docs/configuration.md, "Environment"), computed here from
    the passwd database and this process's LANG, not by the code under test."""
    import pwd

    entry = pwd.getpwuid(os.getuid())
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name,
            "SHELL": entry.pw_shell or "/bin/sh", "LANG": os.environ["LANG"]}


def test_a_service_gets_its_declared_environment_and_nothing_of_the_updaters(tmp_path,
                                                                             monkeypatch):
    """Issue 38: a variable of whoever ran the updater (a test's) reached the core. Now a
    service sees the documented minimum and its own `env`, placeholders filled, as a systemd
    unit would; its `env` may override the minimum."""
    monkeypatch.setenv("GREENLIGHT_LEAK_CANARY", "reached-the-service")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "nowhere"))
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("PATH", f"{tmp_path}/bin:{os.environ['PATH']}")
    backend = ProcessBackend(InstallRoot(tmp_path))
    service = ServiceConfig(name="envdump", command=["env", "-0"], restart="no",
                            env={"MODE": "prod-{version}", "DATA": "{root}/data",
                                 "HOME": "{root}/home"})
    backend.start(service, {"root": str(tmp_path), "version": "9.9"})
    _wait(lambda: backend.last_exit("envdump") is not None, "the service to end")
    assert backend.last_exit("envdump")["returncode"] == 0
    dumped = (tmp_path / "logs" / "envdump.log").read_bytes().rstrip(b"\0").split(b"\0")
    seen = dict(entry.decode().split("=", 1) for entry in dumped)
    assert seen == {**_expected_minimum(), "MODE": "prod-9.9", "DATA": f"{tmp_path}/data",
                    "HOME": f"{tmp_path}/home"}


def test_a_command_check_runs_with_the_minimum_environment(tmp_path, monkeypatch):
    """A command check runs as the UI would: the same minimum, nothing of the updater's."""
    monkeypatch.setenv("GREENLIGHT_LEAK_CANARY", "reached-the-check")
    monkeypatch.setenv("LANG", "C.UTF-8")
    dump = tmp_path / "check-env.json"
    checker = HealthChecker(tmp_path, ProcessBackend(InstallRoot(tmp_path)),
                            {"root": str(tmp_path), "python": sys.executable})
    result = checker.run(CommandCheck(name="env", type="command", command=[
        "{python}", "-c", "import json, os, sys; "
        "open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))", str(dump)]))
    assert result.ok, result.summary
    assert json.loads(dump.read_text()) == _expected_minimum()


def test_a_ready_check_through_another_services_port_is_not_a_stray(tmp_path):
    """A worker whose ready check goes through the core's port (it has no port of its own):
    the core answers there, and that is not a stray copy of the worker. A process that is no
    service's still is, for the service whose port it holds."""
    from greenlight.updater.product import HealthFailure, HttpCheck

    port = free_port()
    core = ServiceConfig(name="core", command=[sys.executable, "-m", "http.server", str(port),
                                               "--bind", "127.0.0.1"], ready="core-up")
    worker = ServiceConfig(name="worker", command=[sys.executable, "-c",
                                                   "import time; time.sleep(600)"],
                           ready="worker-up")
    url = f"http://127.0.0.1:{port}/"
    control = _control(tmp_path, [core, worker],
                       [HttpCheck(name="core-up", type="http", url=url),
                        HttpCheck(name="worker-up", type="http", url=url)])
    try:
        control.start_all("1.0@000000000000")
        assert control.backend.is_running("core") and control.backend.is_running("worker")
    finally:
        control.stop_all("1.0@000000000000")

    stray = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                              "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _answers(port), "the stray server to listen")
        alone = _control(tmp_path / "alone", [worker],
                         [HttpCheck(name="worker-up", type="http", url=url)])
        with pytest.raises(HealthFailure, match="not from the service"):
            alone.start_all("1.0@000000000000")
        alone.stop_all("1.0@000000000000")
    finally:
        stray.kill()
        stray.wait()


def test_a_services_log_is_bounded_by_its_launcher(tmp_path):
    """A chatty service: its log never grows far past `[logs] max_size`, rotated as
    logrotate's copytruncate into `keep` copies, while the service keeps writing."""
    backend = ProcessBackend(InstallRoot(tmp_path))
    backend.log_limits = (20_000, 2)
    chatty = ServiceConfig(name="chatty", command=[
        sys.executable, "-u", "-c",
        "import time; [print('x' * 99) or time.sleep(0.0005) for _ in iter(int, 1)]"])
    backend.start(chatty, {"root": str(tmp_path)})
    log = tmp_path / "logs" / "chatty.log"
    try:
        _wait(lambda: (tmp_path / "logs" / "chatty.log.2").exists(), "two rotations", 60)
        _wait(lambda: log.stat().st_size < 20_000, "the log emptied in place", 30)
        assert backend.is_running("chatty")
        assert not (tmp_path / "logs" / "chatty.log.3").exists()  # keep = 2
        assert 20_000 <= (tmp_path / "logs" / "chatty.log.1").stat().st_size < 2_000_000
    finally:
        backend.stop(chatty, timeout=5)
