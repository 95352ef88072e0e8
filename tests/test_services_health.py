"""Services and health checks against the real demo core; the systemd backend through a
stand-in systemctl (systemd cannot run here)."""

import stat
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
        deadline = time.monotonic() + 10
        while not checker.run(TcpCheck(name="t", type="tcp", port=port)).ok:
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


@pytest.fixture
def fake_systemctl(tmp_path):
    calls = tmp_path / "calls.log"
    script = tmp_path / "systemctl"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
case "$1" in
  is-active) [ -f {tmp_path}/active-$3 ] ;;
  start) touch {tmp_path}/active-$2 ;;
  stop) rm -f {tmp_path}/active-$2 ;;
  show) if [ "$3" = "MainPID" ]; then echo 1234
        elif [ -f {tmp_path}/killed ]; then
          printf 'ExecMainCode=2\nExecMainStatus=%s\n' "$(cat {tmp_path}/killed)"
        else printf 'ExecMainCode=1\nExecMainStatus=0\n'; fi ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, calls


def test_systemd_backend_drives_units(tmp_path, fake_systemctl):
    script, calls = fake_systemctl
    backend = SystemdBackend(InstallRoot(tmp_path), systemctl=str(script))
    core_service = ServiceConfig(name="core", command=["x"])
    backend.start(core_service, {})
    assert backend.is_running("core") and backend.pid("core") == 1234
    outcome = backend.stop(core_service, timeout=5)
    assert outcome.was_running and outcome.returncode == 0 and not outcome.crashed
    assert not backend.is_running("core")
    assert calls.read_text().splitlines()[0] == "start greenlight-core.service"


def test_systemd_backend_asks_about_the_configured_unit(tmp_path, fake_systemctl):
    script, calls = fake_systemctl
    service = ServiceConfig(name="core", command=["x"], unit="acme-core.service")
    backend = SystemdBackend(InstallRoot(tmp_path), systemctl=str(script), services=[service])
    backend.start(service, {})
    assert backend.is_running("core") and backend.pid("core") == 1234
    backend.last_exit("core")
    asked = [line.split()[-1] for line in calls.read_text().splitlines()]
    assert asked and set(asked) == {"acme-core.service"}


def test_systemd_unit_is_rendered_from_the_config():
    service = ServiceConfig(name="core", command=["{python}", "{release_dir}/core/core.py",
                                                  "--port", "80"], env={"MODE": "prod"},
                            stop_signal="SIGINT")
    unit = render_unit(service, {"python": "/usr/bin/python3", "release_dir": "/opt/app/current",
                                 "root": "/opt/app"}, timeout=12)
    assert f"ExecStart={sys.executable} /opt/app/current/core/core.py --port 80" in unit
    assert "KillSignal=SIGINT" in unit and "TimeoutStopSec=12" in unit
    assert "WorkingDirectory=/opt/app" in unit and "Environment=MODE=prod" in unit


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


@pytest.mark.parametrize(("signal_number", "crashed"), [(15, False), (9, True), (11, True)])
def test_systemd_stop_by_the_stop_signal_is_clean(tmp_path, fake_systemctl, signal_number,
                                                  crashed):
    script, _ = fake_systemctl
    (tmp_path / "killed").write_text(str(signal_number))
    service = ServiceConfig(name="core", command=["x"])
    backend = SystemdBackend(InstallRoot(tmp_path), systemctl=str(script), services=[service])
    backend.start(service, {})
    outcome = backend.stop(service, timeout=5)
    assert outcome.returncode == -signal_number and outcome.crashed is crashed


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
