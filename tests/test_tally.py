"""A product Greenlight was not written for: tally (tests/tally). Its core dies of SIGTERM,
its archives have a top folder, it starts through `sh -c 'exec ...'`, and its checks read
plain text. Every run goes through the `updater` CLI with real processes."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenlight.release import publish
from greenlight.updater.product import ProcessBackend
from greenlight.updater.store import InstallRoot

from conftest import builtin_server, child_of, free_port
from tally import build, configure, manifest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


class Tally:
    def __init__(self, tmp: Path, repo, server, **options: float) -> None:
        self.tmp, self.repo = tmp, repo
        self.path = tmp / "root"
        done = subprocess.run([str(BIN / "updater"), "init", "--root", str(self.path), "--repo",
                               server.url, "--trust", str(repo.metadata_dir / "1.root.json"),
                               "--channel", "stable"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        self.port, self.dns_port = free_port(), free_port()
        self.manifested = bool(options.pop("manifested", False))
        self.manifest_text = manifest()
        if self.manifested:  # the services come from each release's manifest
            configure(self.path, self.port, self.dns_port, services=False)
        else:
            configure(self.path, self.port, self.dns_port, **options)
        self.root = InstallRoot(self.path)

    def publish(self, channel: str, version: str, **faults: object) -> None:
        archives = build(version, self.tmp / "builds" / f"{channel}-{version}", faults)
        product = None
        if self.manifested:
            product = self.tmp / f"product-{channel}-{version}.toml"
            product.write_text(self.manifest_text)
        publish(self.repo, channel, version, archives,
                fallback="stable" if channel != "stable" else None, manifest=product)

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updater"), *args, "--root", str(self.path)],
                              capture_output=True, text=True, timeout=timeout)

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--json").stdout)

    def core(self) -> tuple[int | None, str | None]:
        """The running core's pid and the version it runs, from what it answers itself."""
        import httpx

        backend = ProcessBackend(self.root)
        if not backend.is_running("core"):
            return None, None
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/version", timeout=5).text
        except httpx.HTTPError:
            return backend.pid("core"), None
        return backend.pid("core"), answer.split()[-1]

    def kill_all(self) -> None:
        pid = ProcessBackend(self.root).pid("core")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def tally(tmp_path, repo):
    made: list[Tally] = []
    with builtin_server(repo.path) as server:
        def make(**options: float) -> Tally:
            t = Tally(tmp_path, repo, server, **options)
            made.append(t)
            return t

        yield make
        for t in made:
            t.kill_all()


def _until(predicate, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _upgrade(t: Tally, expect: int) -> dict:
    done = t.run("upgrade", "--json")
    assert done.returncode == expect, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def _agent(t: Tally):
    """Left to the agent: its settings in greenlight.toml, and one cycle (`agent --once`) at
    each call, which returns status.json."""
    with (t.path / "greenlight.toml").open("a") as f:
        f.write("\n[agent]\ninterval = 60\njitter = 0\n")

    def cycle() -> dict:
        done = t.run("agent", "--once")
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return json.loads((t.path / "state" / "status.json").read_text())

    return cycle


def _failed(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["incident"]["failed_checks"]}


# The longest walk on the second product: kept out of `make test`'s time budget (its shorter
# lives below stay in it); CI runs it in `make test-exhaustive`.
@pytest.mark.exhaustive
def test_tally_through_good_bad_and_good_releases(tally):
    t = tally()
    t.publish("stable", "1.0")
    report = _upgrade(t, 0)
    assert report["outcome"] == "upgraded" and t.core()[1] == "1.0"
    # The archive's top folder core-1.0/ is left out, as the channel file records.
    assert (t.path / "current" / "core" / "core.py").is_file()
    assert not (t.path / "current" / "core" / "core-1.0").exists()
    assert (t.path / "current" / "ui" / "probe.py").is_file()

    # The core dies of the SIGTERM it is sent: a clean stop, so the upgrade goes through.
    t.publish("stable", "1.1")
    old_pid = t.core()[0]
    report = _upgrade(t, 0)
    assert report["outcome"] == "upgraded" and report["from_version"] == "1.0"
    pid, version = t.core()
    assert version == "1.1" and pid != old_pid
    history = t.json("history")["entries"]
    assert history[-1]["event"] == "upgraded"

    # beta 1.2 refuses the UI's key while its health endpoint still answers.
    t.publish("beta", "1.2", **{"refuse-key": True})
    assert t.run("channel", "beta").returncode == 0
    report = _upgrade(t, 20)
    failed = _failed(report)
    assert set(failed) == {"ui-items"}, failed
    assert "401" in failed["ui-items"]["summary"] and "unknown key" in failed["ui-items"]["summary"]
    assert report["channel_now"] == "stable" and t.core()[1] == "1.1"

    # beta 1.3's DNS answer loses its A record.
    t.publish("beta", "1.3", **{"no-a-record": True})
    assert t.run("channel", "beta").returncode == 0
    report = _upgrade(t, 20)
    failed = _failed(report)
    assert set(failed) == {"tally-dns"}, failed
    assert failed["tally-dns"]["evidence"]["answers"] == []
    assert t.core()[1] == "1.1"

    # beta 1.4's core dies two seconds after it starts: inside the soak window.
    t.publish("beta", "1.4", **{"die-after": 2})
    assert t.run("channel", "beta").returncode == 0
    report = _upgrade(t, 20)
    # The report names the dead service, not whichever check happened to notice first. (On a
    # slow machine the core can die before it is ready: then start-up names it.)
    failed = _failed(report)
    assert {"core-running", "core-start"} & set(failed), report["incident"]
    died = failed.get("core-running") or failed["core-start"]
    assert died["type"] in {"process", "service"} and not died["ok"]
    summary = report["incident"]["summary"]
    assert f"check {died['name']}:" in summary or "service core of 1.4 exited" in summary
    assert t.core()[1] == "1.1"

    # The good beta after them all.
    t.publish("beta", "1.5")
    assert t.run("channel", "beta").returncode == 0
    report = _upgrade(t, 0)
    assert report["outcome"] == "upgraded" and t.core()[1] == "1.5"
    status = t.json("status")
    assert status["installed"] == "1.5" and status["identity"]["key"].startswith("1.5@")
    assert len(status["identity"]["components"]) == 2

    # Quarantine: three entries with their reasons; one is lifted by a person.
    entries = {e["version"]: e for e in t.json("quarantine")["entries"]}
    assert set(entries) == {"1.2", "1.3", "1.4"}
    assert "ui-items" in entries["1.2"]["reason"] and "tally-dns" in entries["1.3"]["reason"]
    lifted = t.run("quarantine", "clear", "1.2")
    assert lifted.returncode == 0 and "lifted 1.2@" in lifted.stdout, lifted.stderr
    assert {e["version"] for e in t.json("quarantine")["entries"]} == {"1.3", "1.4"}
    event = t.json("history")["entries"][-1]
    assert event["event"] == "quarantine-lifted" and event["by"]
    missing = t.run("quarantine", "clear", "1.2")
    assert missing.returncode == 9 and "not quarantined here" in missing.stderr


def test_a_lifted_release_is_installed_again(tally):
    """A release that failed because of a local mistake (a wrong path in greenlight.toml)
    is quarantined; once the mistake is fixed and the quarantine lifted, it installs."""
    t = tally()
    t.publish("stable", "1.0")
    config = t.path / "greenlight.toml"
    good = config.read_text()
    config.write_text(good.replace("/core/core.py", "/core/tally.py"))
    report = _upgrade(t, 20)
    assert "tally.py" in json.dumps(report["incident"]) and report["installed"] is None
    config.write_text(good)
    held = t.run("check")
    assert held.returncode == 15 and "held back" in held.stdout and "quarantine" in held.stdout
    assert t.run("quarantine", "clear", "1.0").returncode == 0
    assert t.run("check").returncode == 10
    _upgrade(t, 0)
    assert t.core()[1] == "1.0"


def _assert_whole(t: Tally, seed: int, round_: int) -> str:
    """After recovery: one whole release in place and running, nothing half-done left."""
    where = f"(seed {seed}, round {round_})"
    assert not (t.path / "state" / "journal.json").exists(), where
    assert not list((t.path / "releases").glob(".staging-*")), where
    assert not (t.path / "state" / "sideload").exists(), where
    key = os.readlink(t.path / "current").split("/")[-1]
    manifest = json.loads((t.path / "releases" / key / "release.json").read_text())
    assert key.split("@")[0] == manifest["version"], where
    for name in ("core", "ui"):
        assert (t.path / "current" / name).is_dir(), where
    health = t.run("health")
    assert health.returncode == 0, f"{where}: {health.stdout}{health.stderr}"
    assert t.core()[1] == manifest["version"], where
    return manifest["version"]


@pytest.mark.exhaustive  # a long run: make test-exhaustive
def test_kill_9_at_random_moments_then_the_next_command_recovers(tally):
    seed = int(os.environ.get("GREENLIGHT_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    t = tally(soak=1.0)
    t.publish("stable", "1.0")
    started = time.monotonic()
    _upgrade(t, 0)
    span = time.monotonic() - started  # how long a whole upgrade takes here
    rounds = 6

    def recoveries() -> int:
        return sum(e["event"] == "recovered" for e in t.json("history")["entries"])

    round_ = 0
    while round_ < rounds or recoveries() < 2:
        round_ += 1
        assert round_ <= rounds + 6, f"seed {seed}: the kills missed every transaction"
        t.publish("stable", f"1.{round_}")
        updater = subprocess.Popen([str(BIN / "updater"), "upgrade", "--root", str(t.path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if round_ <= rounds:
            # Stratified: round k dies somewhere in the k-th slice of an upgrade's span, so
            # the rounds reach early, middle and late moments alike (some before the
            # transaction's journal exists, some after it finished).
            offset = span * 1.5 * (round_ - 1 + rng.random()) / rounds
        else:
            # Too few of those fell inside a transaction (a loaded machine stretches the
            # moments before it): die at a random moment once the journal exists.
            journal = t.path / "state" / "journal.json"
            while not journal.exists() and updater.poll() is None:
                time.sleep(0.005)
            offset = span * 0.3 * rng.random()
        try:
            updater.wait(timeout=offset)  # finished before its moment came: nothing to kill
        except subprocess.TimeoutExpired:
            updater.send_signal(signal.SIGKILL)
            updater.wait()
        done = t.run("status")  # the next command, whatever it is, recovers first
        assert done.returncode == 0, f"seed {seed}: {done.stdout}{done.stderr}"
        _assert_whole(t, seed, round_)
    recovered = [e for e in t.json("history")["entries"] if e["event"] == "recovered"]
    print(f"seed {seed}: span {span:.2f}s, {round_} rounds; recovered: "
          f"{[e['summary'] for e in recovered]}")
    rounds = round_
    newest = f"1.{rounds + 1}"
    t.publish("stable", newest)
    report = _upgrade(t, 0)
    assert report["installed"] == newest
    assert _assert_whole(t, seed, rounds + 1) == newest


@pytest.mark.exhaustive  # a long run: make test-exhaustive
def test_a_short_unattended_life(tally):
    """The agent alone: a bad beta after which the machine stays on its last good release
    (stable only carries an older one) and returns to beta for the fix; then a crash of the
    core, which the next release repairs instead of being blocked by it. The crash loop is
    the machine's (a broken local store), so no rollback would help: without a probation
    the release stays down (test_a_crash_loop_within_the_probation_rolls_the_release_back
    shows the reaction within one)."""
    t = tally(soak=1.0, probation=0)
    cycle = _agent(t)

    t.publish("stable", "1.0")
    t.publish("beta", "1.1")
    assert t.run("channel", "beta").returncode == 0
    cycle()
    assert t.core()[1] == "1.1"

    t.publish("beta", "1.2", **{"refuse-key": True})
    status = cycle()
    assert t.core()[1] == "1.1"
    assert (status["channel"], status["chosen_channel"]) == ("stable", "beta")
    for _ in range(2):  # stable's 1.0 is older: no downgrade, cycle after cycle
        status = cycle()
        assert t.core()[1] == "1.1" and status["update"] == "held"
        assert "no automatic downgrade" in status["held_because"]
    check = t.run("check")
    assert check.returncode == 15, check.stdout + check.stderr
    assert "on stable after a fallback from beta; beta: 1.2 (" in check.stdout
    assert "is quarantined here: 1.2 did not become healthy" in check.stdout
    assert "no automatic downgrade" in check.stdout

    t.publish("beta", "1.3")  # the fix
    status = cycle()
    assert t.core()[1] == "1.3"
    assert (status["channel"], status.get("chosen_channel")) == ("beta", None)

    # The core crashes: its supervisor restarts it, and the next cycle says so.
    launcher, _ = t.core()
    first = child_of(launcher)
    os.kill(first, signal.SIGKILL)
    _until(lambda: child_of(launcher) not in (None, first) and t.core()[1] == "1.3",
           "the launcher to restart the core")
    cycle()
    log = (t.path / "logs" / "agent.log").read_text()
    assert "service-restarted: service core crashed (death by SIGKILL) and was restarted " \
           "1 time (1.3)" in log, log
    cycle()  # said once, not every cycle
    assert (t.path / "logs" / "agent.log").read_text().count("service-restarted") == 1

    # Then it crashes at every start: a crash loop, left down, an incident and a report.
    (t.path / "data" / "crash-on-start").touch()
    os.kill(child_of(launcher), signal.SIGKILL)
    _until(lambda: not ProcessBackend(t.root).is_running("core"), "the launcher to give up", 60)
    status = cycle()
    log = (t.path / "logs" / "agent.log").read_text()
    assert "crash-loop: service core is in a crash loop: it crashed again (exit status 3)" in log
    assert status["last_incident"]["event"] == "crash-loop"
    assert status["last_incident"]["failed_release"] == "1.3", status["last_incident"]
    loop = [e for e in t.json("history")["entries"] if e["event"] == "crash-loop"]
    assert len(loop) == 1 and "cannot open the local store" in loop[0]["summary"]

    # The vendor's next release repairs the machine instead of being blocked by it.
    (t.path / "data" / "crash-on-start").unlink()
    t.publish("beta", "1.4")
    cycle()
    assert t.core()[1] == "1.4"
    upgraded = [e for e in t.json("history")["entries"] if e["event"] == "upgraded"][-1]
    assert upgraded["to_version"] == "1.4" and "the repair of 1.3" in upgraded["summary"]
    assert "core had died" in upgraded["summary"]
    events = [e["event"] for e in t.json("history")["entries"]]
    assert "downgraded" not in events and "precheck-blocked" not in events
    log = (t.path / "logs" / "agent.log").read_text()
    assert "upgraded: 1.1 -> 1.0" not in log and "downgraded" not in log


def test_start_will_not_take_a_stray_process_for_the_core(tally):
    """`updater start` while a stray server holds the core's port: the core dies of 'Address
    already in use' (or would answer from the wrong process); either way start fails and
    names what answers, instead of 'started core'."""
    t = tally()
    t.publish("stable", "1.0")
    assert _upgrade(t, 0)["outcome"] == "upgraded"
    assert t.run("stop").returncode == 0
    stray = subprocess.Popen([sys.executable, "-m", "http.server", str(t.port), "--bind",
                              "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        def serving() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{t.port}/", timeout=1).status_code > 0
            except httpx.HTTPError:
                return False

        _until(serving, "the stray server to listen")
        done = t.run("start")
        assert done.returncode == 12, done.stdout + done.stderr
        assert "started" not in done.stdout and "Traceback" not in done.stderr
        said = done.stderr.strip()
        assert len(said.splitlines()) == 1, said
        assert (f"pid {stray.pid} (" in said and "not from the service" in said) or (
            "exited during start-up" in said), said
        assert not ProcessBackend(t.root).is_running("core")  # not left restarting
    finally:
        stray.kill()
        stray.wait()
    done = t.run("start")
    assert done.returncode == 0, done.stderr
    assert t.core()[1] == "1.0"


def test_services_a_release_declares_are_watched_after_the_commit(tally):
    """The same life as above with the services declared by each release's manifest, not by
    greenlight.toml: a kill -9 of the core is a `service-restarted` event, a crash loop an
    incident in the history and status.json, and `updater start` names what it started."""
    t = tally(manifested=True)
    cycle = _agent(t)

    t.publish("stable", "1.0")
    cycle()
    assert t.core()[1] == "1.0"
    launcher, _ = t.core()
    first = child_of(launcher)
    os.kill(first, signal.SIGKILL)
    _until(lambda: child_of(launcher) not in (None, first) and t.core()[1] == "1.0",
           "the launcher to restart the core")
    cycle()
    log = (t.path / "logs" / "agent.log").read_text()
    assert "service-restarted: service core crashed (death by SIGKILL)" in log, log

    (t.path / "data" / "crash-on-start").touch()
    os.kill(child_of(launcher), signal.SIGKILL)
    _until(lambda: not ProcessBackend(t.root).is_running("core"), "the launcher to give up", 60)
    status = cycle()
    assert status["last_incident"]["event"] == "crash-loop", status
    loop = [e for e in t.json("history")["entries"] if e["event"] == "crash-loop"]
    assert len(loop) == 1 and "crash loop" in loop[0]["summary"], loop

    (t.path / "data" / "crash-on-start").unlink()
    done = t.run("start")
    assert done.returncode == 0 and "core" in done.stdout, done.stdout + done.stderr
    assert "started nothing" not in done.stdout


def test_a_crash_loop_within_the_probation_rolls_the_release_back(tally):
    """1.1 passes its post-check, then its core dies a few seconds after every start: a
    crash loop of a committed release, within its probation. The next agent cycle records the
    incident and rolls back to 1.0, which is quarantined out of the way of the next cycle."""
    t = tally(manifested=True)
    t.manifest_text = manifest().replace('ready = "core-up"\n', 'ready = "core-up"\n'
                                         'restart_burst = 2\nrestart_delay = 0.1\n', 1)
    cycle = _agent(t)

    t.publish("stable", "1.0")
    cycle()
    t.publish("stable", "1.1", **{"die-after": 8})
    cycle()
    assert t.core()[1] == "1.1"  # it passed its post-check
    _until(lambda: not ProcessBackend(t.root).is_running("core"), "the launcher to give up", 90)
    status = cycle()
    assert t.core()[1] == "1.0", status
    events = [e["event"] for e in t.json("history")["entries"]]
    assert events[-2:] == ["crash-loop", "manual-rollback"], events
    log = (t.path / "logs" / "agent.log").read_text()
    assert "rolled-back: 1.1 rolled back to 1.0: service core is in a crash loop" in log, log
    assert "within its probation of 600 s" in log
    assert [q["version"] for q in t.json("quarantine")["entries"]] == ["1.1"]
    cycle()  # 1.1 is quarantined here: no loop back into it
    assert t.core()[1] == "1.0"
