"""End to end, with real processes of the demo product: the two incidents, crashes at every
step of the transaction, and bad configuration."""

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
from greenlight.updater.transaction import STEPS

from conftest import builtin_server, free_port
from examples.demo.config import configure

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def updater(root: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "updater"), *args, "--root", str(root)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


class Product:
    """A repository served on 127.0.0.1 and an installation root of the demo product."""

    def __init__(self, tmp: Path, repo, server, **options: object) -> None:
        self.repo, self.server = repo, server
        self.path = tmp / "root"
        self.port, self.dns_port = free_port(), free_port()
        done = subprocess.run([str(BIN / "updater"), "init", "--root", str(self.path), "--repo",
                               server.url, "--trust", str(repo.metadata_dir / "1.root.json"),
                               "--channel", "stable"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        configure(self.path, self.port, self.dns_port, **options)
        self.root = InstallRoot(self.path)

    def run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return updater(self.path, *args, **kw)  # type: ignore[arg-type]

    def json(self, *args: str) -> dict:
        done = self.run(*args, "--json")
        return json.loads(done.stdout)

    def running_release(self) -> dict[str, str | None]:
        backend = ProcessBackend(self.root)
        releases = {}
        for name in ("core", "ui"):
            record = backend.run_dir / f"{name}.json"
            releases[name] = (json.loads(record.read_text())["release"]
                              if backend.is_running(name) else None)
        return releases

    def stop(self) -> None:
        backend = ProcessBackend(self.root)
        for name in ("ui", "core"):
            pid = backend.pid(name)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def product(tmp_path, repo, builds):
    made: list[Product] = []
    servers = []

    def make(stable: str = "1.6.10", stable_faults: tuple[str, ...] = (), **options: object):
        publish(repo, "stable", stable, builds(stable, *stable_faults))
        cm = builtin_server(repo.path)
        server = cm.__enter__()
        servers.append(cm)
        p = Product(tmp_path, repo, server, **options)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
    for cm in servers:
        cm.__exit__(None, None, None)


def test_the_beta_incident_rolls_back_to_stable_by_itself(product, repo, builds):
    p = product("1.6.10")
    first = p.run("upgrade")
    assert first.returncode == 0, first.stdout + first.stderr
    assert p.running_release() == {"core": "1.6.10", "ui": "1.6.10"}
    assert p.run("health").returncode == 0

    publish(repo, "beta", "1.6.11", builds("1.6.11", "refuse-ui-token"), fallback="stable")
    assert p.run("channel", "beta").returncode == 0
    broken = p.run("upgrade")
    assert broken.returncode == 20, broken.stdout + broken.stderr
    assert "ROLLED BACK" in broken.stdout and "ui-session" in broken.stdout
    assert "HTTP 403" in broken.stdout and "denying api access" in broken.stdout

    assert p.root.installed_version() == "1.6.10"
    assert p.running_release() == {"core": "1.6.10", "ui": "1.6.10"}
    status = p.json("status")
    assert status["channel"] == "stable" and "automatic fallback" in status["channel_reason"]
    assert [k.split("@")[0] for k in status["quarantined"]] == ["1.6.11"]
    incident = p.json("history")["entries"][-1]
    assert incident["event"] == "rolled-back" and incident["fallback_channel"] == "stable"
    failed = {c["name"]: c for c in incident["failed_checks"]}
    assert failed["ui-session"]["evidence"]["status"] == 403
    assert incident["timings"]["rollback_seconds"] > 0
    assert not (p.path / "state" / "journal.json").exists()

    # Stays on stable until the user switches back; 1.6.11 is not offered again.
    assert p.run("check").returncode == 0
    assert p.run("channel", "beta").returncode == 0
    again = p.json("check")
    assert again["available"] == "1.6.11" and again["update_available"] is False
    assert "denying api access" in again["quarantined"]
    held = p.run("upgrade")
    assert held.returncode == 15 and "quarantined" in held.stdout
    assert p.root.installed_version() == "1.6.10"

    publish(repo, "beta", "1.6.12", builds("1.6.12"))
    fixed = p.run("upgrade", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert json.loads(fixed.stdout)["outcome"] == "upgraded"
    assert p.root.installed_version() == "1.6.12"
    assert p.running_release() == {"core": "1.6.12", "ui": "1.6.12"}
    assert p.run("health").returncode == 0


def _ui_failures(root: Path) -> tuple[int, int, list[str]]:
    ok = failed = 0
    errors: list[str] = []
    for stats in (root / "data").glob("ui-stats-*.json"):
        data = json.loads(stats.read_text())
        ok, failed, errors = ok + data["ok"], failed + data["failed"], errors + data["errors"]
    return ok, failed, errors


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _ui_requests(root: Path, version: str | None = None) -> int:
    pattern = f"ui-stats-{version}.json" if version else "ui-stats-*.json"
    total = 0
    for stats in (root / "data").glob(pattern):
        with contextlib.suppress(OSError, ValueError):
            total += json.loads(stats.read_text())["ok"]
    return total


def test_the_restart_incident_ordered_stop_with_draining_loses_no_request(product, repo, builds):
    p = product("2.0", ("crash-on-stop-in-flight",))
    assert p.run("upgrade").returncode == 0
    publish(repo, "stable", "2.1", builds("2.1", "crash-on-stop-in-flight"))
    _wait_for(lambda: _ui_requests(p.path) > 5, "the UI's stream of requests")
    done = p.run("upgrade")
    assert done.returncode == 0, done.stdout + done.stderr
    _wait_for(lambda: _ui_requests(p.path, "2.1") > 0, "the new UI's first request")
    ok, failed, errors = _ui_failures(p.path)
    assert ok > 5 and failed == 0, errors
    assert p.running_release() == {"core": "2.1", "ui": "2.1"}


def test_the_restart_incident_without_draining_is_seen_and_rolled_back(product, repo, builds):
    p = product("2.0", ("crash-on-stop-in-flight",), drain=False)
    assert p.run("upgrade").returncode == 0
    publish(repo, "stable", "2.1", builds("2.1", "crash-on-stop-in-flight"))
    _wait_for(lambda: _ui_requests(p.path) > 5, "the UI's stream of requests")
    done = p.run("upgrade")
    assert done.returncode == 20, done.stdout + done.stderr
    assert "crashed when stopped (exit status 70)" in done.stdout
    # The running release failed its stop, not the new one: nothing is quarantined.
    assert "2.1 not quarantined" in done.stdout
    assert p.json("status")["quarantined"] == {}
    assert p.root.installed_version() == "2.0"
    assert p.running_release() == {"core": "2.0", "ui": "2.0"}
    incident = p.json("history")["entries"][-1]
    assert any("core: exited with status 70" in s for s in incident["stop_outcomes"])
    # Evidence against the release being left, never the one tried: its fleet report.
    from greenlight.updater.store import HistoryEntry, report_of

    report = report_of(p.root, HistoryEntry.model_validate(incident), "rolled-back")
    assert (report.outcome, report.release, report.before, report.after) == (
        "crashed-on-stop", "2.0", incident["to_release"], incident["to_release"])
    assert report.release_key == incident["to_release"] != incident["from_release"]
    assert report.upgrading_to == incident["from_release"]  # what it was upgrading to: 2.1


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw.split(b"\0") if entry)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if entry.name.isdigit() and int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_the_services_environment_is_not_the_updaters(product):
    """Issue 38: a variable of the test that ran `updater` reached the core. The core, the
    UI and their launchers now run in the documented minimum (docs/configuration.md), as a
    systemd unit would: nothing of the updater's environment but its LANG."""
    import pwd

    p = product("1.6.10")
    done = p.run("upgrade", env={"GREENLIGHT_LEAK_CANARY": "reached-the-core",
                                 "LANG": "C.UTF-8", "PYTHONPATH": str(p.path / "nowhere")})
    assert done.returncode == 0, done.stdout + done.stderr
    user = pwd.getpwuid(os.getuid())
    minimum = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": user.pw_dir, "USER": user.pw_name,
               "LOGNAME": user.pw_name, "SHELL": user.pw_shell or "/bin/sh"}
    backend = ProcessBackend(p.root)
    for name in ("core", "ui"):
        launcher = backend.pid(name)
        assert launcher is not None, f"{name} is not running"
        services = _children(launcher)
        assert len(services) == 1, f"{name}'s launcher has children {services}"
        for pid in (launcher, *services):
            assert _environ(pid) == minimum, f"{name} ({pid})"


KILL_POINTS = [f"{step.name}:{when}" for step in STEPS for when in ("before", "after")]
# `make test` kills at one point of each kind (undone before the switch, undone after it,
# finished once the post-check passed); `make test-exhaustive` at every one.
SAMPLED = {"stage:after", "start:after", "post-check:after"}


@pytest.mark.parametrize("point", [
    p if p in SAMPLED else pytest.param(p, marks=pytest.mark.exhaustive) for p in KILL_POINTS])
def test_killed_at_every_step_recovers_to_one_whole_release(product, repo, builds, point):
    """The architecture's promise (docs/architecture.md), point by point: killed before 3.1
    passed its post-check, recovery undoes the steps and 3.0 runs; killed once it passed (after
    `post-check`, or during `commit`), recovery finishes the commit and 3.1 runs. Recovery comes
    from an ordinary command, as every command recovers first: `status` and `health` for some
    points, `recover` for the others."""
    p = product("3.0")
    assert p.run("upgrade").returncode == 0
    publish(repo, "stable", "3.1", builds("3.1"))
    killed = p.run("upgrade", env={"GREENLIGHT_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL
    assert (p.path / "state" / "journal.json").exists()

    expected = "3.1" if point in ("post-check:after", "commit:before", "commit:after") else "3.0"
    command = ("status", "health", "recover")[KILL_POINTS.index(point) % 3]
    recovered = p.run(command)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert not (p.path / "state" / "journal.json").exists()
    assert p.root.installed_version() == expected
    last = p.json("history")["entries"][-1]
    assert last["event"] == "recovered" and "interrupted upgrade to 3.1" in last["summary"]
    assert p.running_release() == {"core": expected, "ui": expected}
    assert not list(p.root.releases.glob(".staging-*"))
    health = p.json("health")
    assert health["healthy"] and health["installed"] == expected
    assert httpx.get(f"http://127.0.0.1:{p.port}/api/version").json()["version"] == expected
    if expected == "3.0":  # and the next upgrade goes through from there
        assert p.run("upgrade").returncode == 0 and p.root.installed_version() == "3.1"


@pytest.mark.parametrize("point, expected, event", [
    ("post-check:after", "3.1", "upgraded"),
    pytest.param("commit:before", "3.1", "upgraded", marks=pytest.mark.exhaustive),
    pytest.param("start:after", "3.0", "interrupted", marks=pytest.mark.exhaustive),
])
def test_stopped_at_a_step_ends_whole_and_says_what_it_did(product, repo, builds, point,
                                                          expected, event):
    """A stop (SIGTERM) is taken by the command itself: before the post-check passed, the
    steps are undone ("interrupted"); once it passed, the commit is finished in the same
    process and recorded as the upgrade it is, never left for a recovery. Either way it
    exits 143 with one line."""
    p = product("3.0")
    assert p.run("upgrade").returncode == 0
    publish(repo, "stable", "3.1", builds("3.1"))
    stopped = p.run("upgrade", env={"GREENLIGHT_KILL_AT": f"{point}:TERM"})
    assert stopped.returncode == 143, stopped.stdout + stopped.stderr
    assert stopped.stderr.startswith("updater: interrupted by SIGTERM")
    assert stopped.stderr.count("\n") == 1 and "Traceback" not in stopped.stderr
    assert not (p.path / "state" / "journal.json").exists()
    assert p.root.installed_version() == expected
    events = [e["event"] for e in p.json("history")["entries"]]
    assert events[-1] == event and "recovered" not in events, events
    assert p.running_release() == {"core": expected, "ui": expected}


def test_a_second_updater_is_told_who_holds_the_root(product, repo, builds):
    p = product("4.0")
    from filelock import FileLock

    with FileLock(str(p.path / "state" / "lock")):
        (p.path / "state" / "lock.owner").write_text(json.dumps(
            {"pid": 4242, "command": "updater upgrade", "since": "now"}))
        busy = p.run("upgrade")
    assert busy.returncode == 6
    assert "another updater holds this root: pid 4242 (updater upgrade" in busy.stderr
    assert p.root.installed_version() is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t, port: t.replace('type = "dns"', 'type = "smoke-signal"'),
         "field check['core-dns'].type: unknown check type 'smoke-signal': expected one of "
         "process, tcp, http, websocket, dns, version, command"),
        (lambda t, port: t.replace(f'url = "http://127.0.0.1:{port}/api/version"\n', ""),
         "field check['core-version'].url: Field required"),
        (lambda t, port: t.replace("keep_releases = 3", "keep_releases = 0"),
         "field keep_releases: Input should be greater than or equal to 1"),
    ],
)
def test_bad_configuration_is_one_line_and_changes_nothing(product, edit, message):
    p = product("5.0")
    assert p.run("upgrade").returncode == 0
    config = p.path / "greenlight.toml"
    config.write_text(edit(config.read_text(), p.port))
    before = config.read_text()
    done = p.run("upgrade")
    assert done.returncode == 3
    assert done.stderr.strip() == f"updater: error: {config}: {message}"
    assert config.read_text() == before and p.root.installed_version() == "5.0"


def test_unreadable_credentials_file_is_named(product, repo, builds):
    p = product("6.0")
    assert p.run("upgrade").returncode == 0
    publish(repo, "stable", "6.1", builds("6.1"))
    (p.path / "data" / "ui-token").rename(p.path / "data" / "ui-token.moved")
    done = p.run("upgrade")
    assert done.returncode == 3
    assert done.stderr.strip() == (
        f"updater: error: bearer_token_file {p.path / 'data' / 'ui-token'}: cannot read: "
        "No such file or directory")
    assert p.root.installed_version() == "6.0"


def test_manual_rollback_returns_to_the_previous_release(product, repo, builds):
    p = product("7.0")
    assert p.run("upgrade").returncode == 0
    publish(repo, "stable", "7.1", builds("7.1"))
    assert p.run("upgrade").returncode == 0
    back = p.run("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "rolled back 7.1 -> 7.0" in back.stdout
    assert p.root.installed_version() == "7.0"
    assert p.running_release() == {"core": "7.0", "ui": "7.0"}
    assert [k.split("@")[0] for k in p.json("status")["quarantined"]] == ["7.1"]
    assert p.json("history")["entries"][-1]["event"] == "manual-rollback"


def test_rollback_that_fails_too_is_a_reported_dead_end(product, repo, builds):
    p = product("8.0")
    assert p.run("upgrade").returncode == 0
    # The running 8.0 is fine, but its files are now broken: it cannot start again.
    (p.root.current / "core" / "core.py").write_text("raise SystemExit(3)\n")
    publish(repo, "stable", "8.1", builds("8.1", "refuse-ui-token"))
    done = p.run("upgrade")
    assert done.returncode == 21, done.stdout + done.stderr
    assert "ROLLBACK FAILED" in done.stdout and "needs a person" in done.stdout
    last = p.json("history")["entries"][-1]
    assert last["event"] == "rollback-failed" and "rollback failed" in last["summary"]
    assert not (p.path / "state" / "journal.json").exists()  # no loop: nothing to resume
    assert p.run("recover").stdout.strip() == "nothing to recover"
    assert p.root.installed_version() == "8.0"
