"""Shared fixtures: real repositories made by `release`, real servers on 127.0.0.1.

`served` runs each test that uses it twice: against the project's development server and
against nginx serving the very same tree (a repository needs nothing but static files).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from greenlight.channels import ChannelFile
from greenlight.release import FileRepository, init_repository, publish, serving

from examples.demo.build import build

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


# A product with no services and one real command check, which fails when the release carries
# the demo's `refuse-ui-token` fault or when `data/broken-<version>` exists: enough to make the
# pre-check, the post-check and a rollback's own check fail on demand.
MARKER_PRODUCT = r'''
[health]
grace = 0.3
soak = 0
interval = 0.1

[[check]]
name = "marker"
type = "command"
command = ["sh", "-c", """test ! -e '{root}/data/broken-{version}' && \
                        ! grep -q refuse-ui-token '{release_dir}/core/build.json'"""]
'''


def _port_block() -> range:
    """This test process's own block of ports, below the kernel's ephemeral range: no other
    xdist worker hands them out, and no outgoing connection is given one by the kernel."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    size = 1000
    start = max(1024, low - 16 * size) + (index % 16) * size
    return range(start, min(start + size, low))


_PORTS = _port_block()
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # a DNS responder needs UDP too
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1, free for TCP and UDP, never handed out twice in this process."""
    for port in _PORTS:
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # the block is used up: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running static server over a repository tree, and what it was asked for."""

    url: str
    kind: str
    paths: Callable[[], list[str]]
    connections: Callable[[], int]
    reset: Callable[[], None]


@contextmanager
def builtin_server(root: Path) -> Iterator[Served]:
    with serving(root) as server:
        yield Served(server.url, "builtin", lambda: list(server.paths),
                     lambda: server.connections, server.reset_counts)


_NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format counted '$connection $request_uri $status';
    access_log {tmp}/access.log counted;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ return 404; }}
        location /metadata/ {{ }}
        location /targets/ {{ }}
    }}
}}
"""


@contextmanager
def nginx_server(root: Path, tmp: Path) -> Iterator[Served]:
    if NGINX is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: tests/ensure_packages.sh should have installed it")
        pytest.skip("nginx is not installed (tests/ensure_packages.sh installs it as root)")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(tmp=tmp, port=port, root=root.resolve()))
    log = tmp / "access.log"
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nginx did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
    offset = [0]
    syncs = [0]

    def lines() -> list[list[str]]:
        # nginx writes a request's log line after its response: ask for a marker and wait
        # until the marker is logged, so every earlier request is in the log too.
        syncs[0] += 1
        marker = f"/greenlight-sync/{syncs[0]}"
        httpx.get(f"http://127.0.0.1:{port}{marker}")
        deadline = time.monotonic() + 10
        while True:
            text = log.read_text() if log.exists() else ""
            if marker in text:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"nginx never logged {marker}: its access log is incomplete")
            time.sleep(0.01)
        return [line.split() for line in text[offset[0]:].splitlines()
                if line and "/greenlight-sync/" not in line]

    def reset() -> None:
        offset[0] = log.stat().st_size if log.exists() else 0

    try:
        yield Served(f"http://127.0.0.1:{port}", "nginx", lambda: [p[1] for p in lines()],
                     lambda: len({p[0] for p in lines()}), reset)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def repo(tmp_path: Path) -> FileRepository:
    return init_repository(tmp_path / "repo")


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Path]]:
    """build(version, *faults) -> {component: archive}, cached for the session."""
    folder = tmp_path_factory.mktemp("builds")
    cache: dict[tuple[str, ...], dict[str, Path]] = {}

    def make(version: str, *faults: str) -> dict[str, Path]:
        key = (version, *faults)
        if key not in cache:
            cache[key] = build(version, folder / "-".join(key), faults)
        return cache[key]

    return make


@pytest.fixture
def published(repo: FileRepository, builds: Callable[..., dict[str, Path]]) -> FileRepository:
    """stable 1.0 and beta 1.1 of the demo product."""
    publish(repo, "stable", "1.0", builds("1.0"))
    publish(repo, "beta", "1.1", builds("1.1"), fallback="stable")
    return repo


@pytest.fixture(params=["builtin", pytest.param("nginx", marks=pytest.mark.nginx)])
def served(request: pytest.FixtureRequest, published: FileRepository,
           tmp_path: Path) -> Iterator[Served]:
    if request.param == "builtin":
        with builtin_server(published.path) as s:
            yield s
    else:
        with nginx_server(published.path, tmp_path / "nginx") as s:
            yield s


@pytest.fixture
def server(published: FileRepository) -> Iterator[Served]:
    with builtin_server(published.path) as s:
        yield s


# --- the fleet collector, as a real process ---------------------------------------------

FLEET, ADMIN = "f" * 24, "a" * 24
_MACHINE_KEYS: dict[str, bytes] = {}


def child_of(launcher: int | None) -> int | None:
    """The service process a launcher (by pid) runs now, or None."""
    try:
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    except (OSError, TypeError):
        return None
    return int(children[0]) if children else None


def sign_entry(repo: FileRepository, entry: ChannelFile) -> None:
    """Sign a channel entry exactly as it is, as a newer pipeline would have (publish works
    out its `requires` itself)."""
    from greenlight.channels import channel_role, channel_target

    info = repo.add_target_bytes(channel_target(entry.channel), entry.to_json())
    with repo.edit_targets(channel_role(entry.channel)) as role_targets:
        role_targets.targets[info.path] = info
    repo.commit()


def machine_key(name: str) -> bytes:
    """A made-up machine's private key (PEM), one per name, for this test run."""
    from greenlight.channels import new_private_key

    return _MACHINE_KEYS.setdefault(name, new_private_key())


def machine_id(name: str) -> str:
    from greenlight.channels import key_id

    return key_id(machine_key(name))


def wait_state(repo: FileRepository, what: Callable[..., bool], deadline: float = 30,
               channel: str = "stable") -> object:
    """The channel's signed rollout state once `what(state)` holds: polled, as a machine
    reads it, until then (the collector publishes it on its own time)."""
    from greenlight.release.repository._rollouts import current_state

    end = time.monotonic() + deadline
    while True:
        state = current_state(FileRepository(repo.path), channel)
        if state is not None and what(state):
            return state
        assert time.monotonic() < end, f"the collector did not publish it: {state}"
        time.sleep(0.02)


def post_report(url: str, name: str, report: dict | bytes, token: str = FLEET,
                **kw: object) -> httpx.Response:
    """POST a report as the made-up machine `name` would: its installation is the machine's
    key id (for a dict), the body signed with its key, the fleet token in front."""
    from greenlight.channels import sign_body

    if isinstance(report, dict):
        report = json.dumps({**report, "installation": machine_id(name)}).encode()
    return httpx.post(url.rstrip("/") + "/v1/reports", content=report, timeout=30,
                      headers={"Authorization": f"Bearer {token}",
                               "Content-Type": "application/json",
                               **sign_body(machine_key(name), report)}, **kw)


def wait_http(url: str, proc: subprocess.Popen, what: str) -> None:
    """Wait until `url` answers (polling, with a deadline), failing if `proc` exits first."""
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            output = proc.stdout.read() if proc.stdout and proc.poll() is not None else ""
            assert proc.poll() is None, f"{what} exited: {output}"
            assert time.monotonic() < deadline, f"{what} did not answer"
            time.sleep(0.05)


class Collector:
    def __init__(self, tmp: Path, db: str, port: int | None = None, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        tokens = tmp / "tokens"
        tokens.mkdir(exist_ok=True)
        (tokens / "fleet").write_text(FLEET + "\n")
        (tokens / "admin").write_text(ADMIN + "\n")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "release"), "collector", "--db", db,
             "--port", str(self.port),
             "--fleet-token-file", str(tokens / "fleet"),
             "--admin-token-file", str(tokens / "admin"), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=None if env is None else {**os.environ, **env})
        wait_http(self.url + "v1/rollouts", self.proc, "the collector")

    def rollouts(self) -> dict:
        answer = httpx.get(self.url + "v1/rollouts",
                           headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        return {(r["channel"], r["release"]): r for r in answer.json()["rollouts"]}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def until(what: Callable[[], object], deadline: float = 30, waiting_for: str = "it") -> None:
    """Wait until `what()` is true: polled (each try asks the process or database under
    test), failing after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not what():
        assert time.monotonic() < end, f"waited {deadline:g} s for {waiting_for}"
        time.sleep(0.02)


@pytest.fixture
def postgres():
    """A real PostgreSQL from Debian's packages, in a folder of this test, on 127.0.0.1."""
    from bench.postgres import Unavailable, temporary_postgres

    try:
        with temporary_postgres(free_port()) as url:
            yield url
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A collector's database URL: a SQLite file, and a real PostgreSQL when one can be
    started here."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'collector.sqlite3'}"
        return
    yield request.getfixturevalue("postgres")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_collector(request, tmp_path):
    """A real collector on SQLite, and on a real PostgreSQL when one can be started here."""
    if request.param == "sqlite":
        running = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}")
        yield running
        running.stop()
        return
    running = Collector(tmp_path, request.getfixturevalue("postgres"))
    try:
        yield running
    finally:
        running.stop()


# --- what a test reports (each test's `record_property("power_loss", ...)`) ---------------------
_REPORTED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":  # runs where the reports arrive: with xdist, the controller
        _REPORTED.extend(str(v) for k, v in report.user_properties if k == "power_loss")


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _REPORTED:
        terminalreporter.section("power-loss crash states")
        for line in sorted(_REPORTED):
            terminalreporter.write_line(line)
