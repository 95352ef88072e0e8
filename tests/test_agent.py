"""`updater agent`: updates that arrive without a person, held and pinned by one.

Time is injected (a clock and a sleep the test controls) wherever the behaviour depends on it;
the agent runs for real as a process where it must: taking a release on its own, and being
killed -9 in the middle of an upgrade. The product is the demo's archives with no services
and one real command check (see test_exit_codes.py).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from greenlight.release import init_repository, publish, yank
from greenlight.updater.agent import Agent
from greenlight.updater.policy import in_window
from greenlight.updater.store import InstallRoot, clear_hold, set_hold

from conftest import MARKER_PRODUCT as PRODUCT
from conftest import builtin_server

BIN = Path(sys.executable).parent
SCHEMA = json.loads((Path(__file__).parents[1] / "channels" / "schema" /
                     "ui-status.v1.schema.json").read_text())



class Clock:
    def __init__(self, local_hour: int = 3) -> None:
        self.at = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
        self.local_hour = local_hour
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.at

    def local(self, at: datetime) -> datetime:
        return datetime(2026, 11, 22, self.local_hour, 30)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def machine(tmp_path, builds):
    repo = init_repository(tmp_path / "repo")
    with builtin_server(repo.path) as server:
        yield Machine(tmp_path, repo, server, builds)


class Machine:
    def __init__(self, tmp: Path, repo, server, builds) -> None:
        self.tmp, self.repo, self.server, self.builds = tmp, repo, server, builds
        self.path = tmp / "root"
        self.hook_log = tmp / "events.jsonl"

    def init(self, agent: str = "") -> InstallRoot:
        done = self.updater("init", "--repo", self.server.url, "--trust",
                            str(self.repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        hook = self.tmp / "hook.sh"
        hook.write_text(f"#!/bin/sh\ncat >> {self.hook_log}\necho >> {self.hook_log}\n")
        hook.chmod(0o755)
        with (self.path / "greenlight.toml").open("a") as f:
            f.write(PRODUCT + f'\n[agent]\ninterval = 60\njitter = 0\nretry = 1\n'
                              f'on_event = ["{hook}"]\n{agent}\n')
        return InstallRoot(self.path)

    def updater(self, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run([str(BIN / "updater"), *args, "--root", str(self.path)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **(env or {})})

    def publish(self, version: str, *faults: str) -> None:
        publish(self.repo, "stable", version, self.builds(version, *faults))

    def events(self) -> list[str]:
        if not self.hook_log.exists():
            return []
        return [json.loads(line)["event"] for line in self.hook_log.read_text().splitlines()
                if line.strip()]

    def status(self) -> dict:
        data = json.loads((self.path / "state" / "status.json").read_text())
        jsonschema.validate(data, SCHEMA)  # after every event, the file a UI reads is valid
        return data


def driven(root: InstallRoot, local_hour: int = 3) -> tuple[Clock, Agent]:
    """An agent whose time is the returned clock's, with no jitter."""
    clock = Clock(local_hour)
    return clock, Agent(root, clock.now, clock.sleep, rng=lambda: 0.0, local=clock.local)


def cycle(agent: Agent, m: Machine) -> dict:
    agent.cycle()
    return m.status()


def test_windows_are_local_times_and_may_span_midnight():
    at = datetime(2026, 1, 1, 23, 30)
    assert in_window([], at)
    assert in_window(["22:00-02:00"], at) and in_window(["22:00-02:00"], at.replace(hour=1))
    assert not in_window(["02:00-05:00"], at)
    assert in_window(["02:00-05:00", "23:00-23:45"], at)


def test_auto_installs_in_the_window_and_downloads_outside_it(machine):
    root = machine.init('window = ["02:00-05:00"]')
    clock, agent = driven(root, local_hour=12)  # outside the window
    machine.publish("1.0")
    status = cycle(agent, machine)
    assert root.installed_version() is None
    assert (status["update"], status["available"]) == ("downloaded", "1.0")
    assert "outside the install windows 02:00-05:00" in status["held_because"]
    # Fetched and verified already: every component's artifact, and its signed file list
    # (fetched first, with the manifest), is in downloads/ under its own sha256 (a leftover
    # .partial/ folder does not count), and nothing is half-fetched.
    kept = [p for p in (machine.path / "downloads").iterdir() if p.is_file()]
    published = {hashlib.sha256(a.read_bytes()).hexdigest() for a in machine.builds("1.0").values()}
    lists = {p.name.split(".")[0]
             for p in (machine.repo.path / "targets" / "artifacts" / "_files" / "1.0").iterdir()}
    assert len(lists) == len(published)
    assert {p.name for p in kept} == published | lists
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in kept)
    assert not list((machine.path / "downloads" / ".partial").glob("*"))
    clock.local_hour = 3
    status = cycle(agent, machine)
    assert root.installed_version() == "1.0" and status["update"] == "none"
    assert machine.events() == ["check-found", "downloaded", "upgraded"]


def test_a_hold_stops_installs_and_unhold_resumes(machine):
    root = machine.init()
    clock, agent = driven(root)
    machine.publish("1.0")
    cycle(agent, machine)
    machine.publish("1.1")
    set_hold(root, clock.now() + timedelta(days=2), "release freeze", "ops")
    status = cycle(agent, machine)
    assert root.installed_version() == "1.0"
    assert status["hold"]["reason"] == "release freeze"
    assert status["held_because"] == "on hold: release freeze"
    clock.at += timedelta(days=3)  # the hold ran out
    status = cycle(agent, machine)
    assert root.installed_version() == "1.1" and status["hold"] is None
    machine.publish("1.2")
    set_hold(root, None, "", "ops")
    cycle(agent, machine)
    assert root.installed_version() == "1.1"
    clear_hold(root)
    cycle(agent, machine)
    assert root.installed_version() == "1.2"


def test_a_pin_survives_channel_moves_and_unpin_ends_it(machine):
    root = machine.init()
    clock, agent = driven(root)
    machine.publish("1.0")
    cycle(agent, machine)
    assert machine.updater("pin", "1.0").returncode == 0
    machine.publish("1.1")
    status = cycle(agent, machine)
    assert root.installed_version() == "1.0" and status["pin"] == "1.0"
    assert status["update"] == "held" and "pinned to 1.0" in status["held_because"]
    by_hand = machine.updater("upgrade")
    assert by_hand.returncode == 15 and "pinned to 1.0" in by_hand.stdout
    checked = machine.updater("check")
    assert checked.returncode == 15 and checked.stdout.strip() == (
        "stable: 1.1 is held back here: pinned to 1.0 here; the channel carries 1.1 "
        "(updater unpin ends it)")
    shown = machine.updater("status")
    assert "pinned to" in shown.stdout and "1.0" in shown.stdout
    assert machine.updater("pin", "v1.1").returncode == 2  # versions are canonical
    assert machine.updater("unpin").returncode == 0
    cycle(agent, machine)
    assert root.installed_version() == "1.1"


def test_a_revoked_release_is_left_at_the_next_cycle_even_in_a_hold(machine):
    root = machine.init('window = ["02:00-03:00"]')
    clock, agent = driven(root, local_hour=2)
    machine.publish("1.0")
    machine.publish("1.1")
    cycle(agent, machine)
    assert root.installed_version() == "1.1"
    set_hold(root, None, "holidays", "ops")
    clock.local_hour = 12  # outside the window too
    yank(machine.repo, "stable", "1.1", "corrupts the store")
    cycle(agent, machine)
    assert root.installed_version() == "1.0"
    assert machine.events()[-1] == "left-revoked"
    history = json.loads(machine.updater("history", "--json").stdout)["entries"]
    assert "corrupts the store" in json.dumps(history[-1])


def test_a_rollback_is_what_the_ui_reads(machine):
    root = machine.init()
    clock, agent = driven(root)
    machine.publish("1.0")
    cycle(agent, machine)
    machine.publish("1.1", "refuse-ui-token")
    status = cycle(agent, machine)
    assert root.installed_version() == "1.0"
    incident = status["last_incident"]
    assert incident["event"] == "rolled-back" and incident["failed_release"] == "1.1"
    assert incident["failed_checks"][0]["name"] == "marker"
    assert status["update"] == "held" and status["installed"] == "1.0"
    assert machine.events()[-1] == "rolled-back"
    status = cycle(agent, machine)  # quarantined now: held, said once
    assert status["update"] == "held" and machine.events()[-2:] == ["rolled-back", "held"]
    cycle(agent, machine)
    assert machine.events()[-2:] == ["rolled-back", "held"]


def test_repository_outages_back_off_then_catch_up(machine):
    root = machine.init()
    clock, agent = driven(root)
    machine.publish("1.0")
    config = machine.path / "greenlight.toml"
    served = config.read_text()
    config.write_text(served.replace(machine.server.url.rstrip("/"), "http://127.0.0.1:9"))
    root = InstallRoot(machine.path)
    agent.root = root
    waits = [agent.cycle() for _ in range(8)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]  # from `retry`, doubling, up to `interval`
    status = machine.status()
    assert "cannot reach the repository at http://127.0.0.1:9/" in status["last_error"]
    config.write_text(served)
    agent.root = InstallRoot(machine.path)
    assert agent.cycle() == 60
    assert agent.root.installed_version() == "1.0" and machine.status()["last_error"] is None


def test_a_failing_or_hanging_hook_changes_nothing(machine, tmp_path):
    for hook in (["false"], ["sh", "-c", "sleep 30"], [str(tmp_path / "missing")]):
        root = machine.init() if not machine.path.exists() else InstallRoot(machine.path)
        config = machine.path / "greenlight.toml"
        text = config.read_text()
        start = text.index("\non_event = ") + 1  # the table's, not a comment
        end = text.index("\n", start)
        config.write_text(text[:start] + f"on_event = {json.dumps(hook)}\nhook_timeout = 0.5"
                          + text[end:].replace("\nhook_timeout = 0.5", ""))
        root = InstallRoot(machine.path)
        version = f"1.{len(root.installed_releases())}"
        machine.publish(version)
        driven(root)[1].cycle()
        assert root.installed_version() == version, (machine.path / "logs" / "agent.log"
                                                      ).read_text()
    log = (machine.path / "logs" / "agent.log").read_text()
    assert "on_event exited 1 for" in log
    assert "on_event did not finish within 0.5s" in log
    assert "on_event could not run" in log


@pytest.mark.slow
def test_the_agent_takes_a_release_on_its_own(machine):
    """A real `updater agent` with a short interval: a release published while it runs is
    installed with nobody typing anything."""
    machine.init()
    config = machine.path / "greenlight.toml"
    config.write_text(config.read_text().replace("interval = 60\n", "interval = 0.5\n", 1))
    machine.publish("1.0")
    agent = subprocess.Popen([str(BIN / "updater"), "agent", "--root", str(machine.path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        root = InstallRoot(machine.path)
        deadline = time.monotonic() + 60
        while root.installed_version() != "1.0":
            assert time.monotonic() < deadline and agent.poll() is None
            time.sleep(0.05)
        machine.publish("1.1")
        while root.installed_version() != "1.1":
            assert time.monotonic() < deadline and agent.poll() is None
            time.sleep(0.05)
        # The status file follows the commit: wait for the agent to write it.
        while machine.status()["installed"] != "1.1" or machine.status()["next_check"] is None:
            assert time.monotonic() < deadline and agent.poll() is None
            time.sleep(0.05)
    finally:
        agent.send_signal(signal.SIGINT)
        out = agent.communicate(timeout=30)[0]
    assert "upgraded: nothing -> 1.0" in out and "upgraded: 1.0 -> 1.1" in out
    assert "Traceback" not in out


@pytest.mark.slow
def test_an_agent_killed_mid_upgrade_recovers_at_its_next_start(machine):
    machine.init()
    machine.publish("1.0")
    assert machine.updater("agent", "--once").returncode == 0
    machine.publish("1.1")
    killed = machine.updater("agent", "--once", env={"GREENLIGHT_KILL_AT": "switch:after"})
    assert killed.returncode == -signal.SIGKILL
    assert (machine.path / "state" / "journal.json").exists()
    assert machine.status()["installed"] == "1.0"
    again = machine.updater("agent", "--once")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (machine.path / "state" / "journal.json").exists()
    events = [e["event"] for e in json.loads(machine.updater("history", "--json").stdout)
              ["entries"]]
    assert events[-2:] == ["recovered", "upgraded"]
    assert InstallRoot(machine.path).installed_version() == "1.1"



@pytest.mark.slow
def test_stopping_the_agent_at_any_moment_frees_the_root(machine):
    """A service manager stops the agent (SIGTERM) at random moments, some inside a
    transaction: it exits only once its cycle undid or finished the transaction and let go of
    the root, so an `updater stop` right after never finds the root held."""
    import random

    seed = int(os.environ.get("GREENLIGHT_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    machine.init()
    with (machine.path / "greenlight.toml").open("a") as f:  # a post-check worth cutting
        f.write('\n[[check]]\nname = "slow"\ntype = "command"\n'
                'command = ["sleep", "0.7"]\ntimeout = 10.0\n')
    machine.publish("1.0")
    started = time.monotonic()
    assert machine.updater("agent", "--once").returncode == 0
    span = time.monotonic() - started
    root = InstallRoot(machine.path)
    for round_ in range(1, 7):
        machine.publish(f"1.{round_}")
        before = root.installed_version()
        agent = subprocess.Popen([str(BIN / "updater"), "agent", "--root", str(machine.path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(span * 1.3 * rng.random())  # the moment of the stop: random, on purpose
        agent.send_signal(signal.SIGTERM)
        out = agent.communicate(timeout=120)[0]
        where = f"(seed {seed}, round {round_}): {out}"
        # 0: a clean stop; death by the SIGTERM itself only when it came before the
        # interpreter was up (systemd calls that clean too), when nothing had started.
        assert agent.returncode in (0, -signal.SIGTERM), where
        # the agent's cycle undid or finished its transaction before the agent exited
        assert not (machine.path / "state" / "journal.json").exists(), f"left a journal {where}"
        stop = machine.updater("stop")
        assert stop.returncode == 0, f"{stop.stderr} {where}"
        assert not (machine.path / "state" / "journal.json").exists(), where
        assert root.installed_version() in (before, f"1.{round_}"), where
        assert "Traceback" not in out, where
    events = [e["event"] for e in json.loads(machine.updater("history", "--json").stdout)
              ["entries"]]
    # every stop was clean: nothing left to recover
    assert "recovered" not in events, (
        f"seed {seed}: " + (machine.path / "logs" / "agent.log").read_text()[-4000:])


def test_a_stop_pending_across_the_exec_ends_the_loop_before_any_cycle(tmp_path):
    """`updater agent` blocks SIGTERM before it execs its loop: a stop sent in that moment is
    pending in the new program, which must take it before it starts a cycle (a stop taken by a
    handler there, and lost with the exec, left an agent running that was told to stop)."""
    from greenlight.updater.agent import _cycle

    ran = tmp_path / "a-cycle-ran"
    wrapper = (
        "import os, signal, sys\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.execv(sys.executable, sys.argv[1:])\n")
    (tmp_path / "state").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-I", "-S", str(_cycle.LOOP),
         "--root", str(tmp_path), "--cycle-limit", "60", "--stop-limit", "5", "--",
         "sh", "-c", f"touch {ran}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("stopped by SIGTERM"), done.stdout
    assert not ran.exists()


def test_a_stop_a_library_swallowed_is_still_a_stop(tmp_path):
    """A C extension may catch the `Interrupted` a signal raised and make it an error of its
    own (pydantic-core reports it as a failed validation): the funnel still ends the command
    as stopped (143, one line), never as that error, and never with a traceback."""
    script = (
        "import os, signal\n"
        "from greenlight.updater._errors import TrustError, handle_interrupts\n"
        "from greenlight.updater.cli._common import run_command\n"
        "handle_interrupts()\n"
        "def work():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        for _ in range(10**6): pass\n"
        "    except BaseException:\n"
        "        raise TrustError('a field did not match its pattern') from None\n"
        "run_command(False, work)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stderr == "updater: interrupted by SIGTERM\n"


def test_the_agent_verifies_on_its_schedule_and_repairs(machine):
    """`verify_every`: the installed tree is compared with its signed file lists once that
    long has passed; a changed file is an event and a history entry (queued for the fleet),
    and with `repair = true` the release is re-staged and the genuine file is back."""
    root = machine.init("verify_every = 3600\nrepair = true")
    clock, agent = driven(root)
    machine.publish("1.0")
    cycle(agent, machine)
    assert root.installed_version() == "1.0"
    cycle(agent, machine)  # the first verification: as signed
    assert (machine.path / "state" / "verified-at").is_file()
    script = machine.path / "current" / "core" / "core.py"
    genuine = script.read_bytes()
    script.write_bytes(genuine.replace(b"def ", b"def  ", 1)[:len(genuine)])
    cycle(agent, machine)  # not due yet: nothing said
    assert machine.events()[-1] == "upgraded" and script.read_bytes() != genuine
    clock.at += timedelta(seconds=3601)
    cycle(agent, machine)
    assert machine.events()[-2:] == ["damaged", "repaired"], machine.events()
    assert script.read_bytes() == genuine
    history = [json.loads(line) for line in
               (machine.path / "state" / "history.jsonl").read_text().splitlines()]
    assert [h["event"] for h in history[-2:]] == ["damaged", "repaired"]
    assert "changed core/core.py (content)" in history[-2]["summary"]


def test_a_held_cycle_is_reported_once_to_the_fleet(machine):
    """The fleet's count of held machines comes from the agent too, not only from a person's
    `updater upgrade`: a cycle held back by the quarantine queues one `held` report, and the
    cycles after it, held for the same reason, none."""
    from greenlight.updater.store import queued

    root = machine.init('\n[report]\nurl = "http://127.0.0.1:9/"\ntimeout = 0.5\n')
    clock, agent = driven(root)
    machine.publish("1.0")
    cycle(agent, machine)
    machine.publish("1.1", "refuse-ui-token")
    cycle(agent, machine)  # rolled back, quarantined

    def held() -> list[dict]:
        reports = [json.loads(p.read_text()) for p in queued(root)]
        return [r for r in reports if r["outcome"] == "held"]

    assert held() == []
    assert cycle(agent, machine)["update"] == "held"
    assert [(r["release"], r["before"].split("@")[0]) for r in held()] == [("1.1", "1.0")]
    assert "quarantined" in held()[0]["note"]
    cycle(agent, machine)
    assert len(held()) == 1


def test_the_loops_cycles_are_quiet_when_nothing_changes(machine, tmp_path):
    """Each cycle of the long-running agent is a process of its own (`agent --once` with the
    loop's `--report`): what a cycle found is logged when it changes, not at every cycle."""
    machine.init()
    machine.publish("1.0")
    wait = tmp_path / "wait.json"

    def loop_cycle() -> str:
        done = machine.updater("agent", "--once", "--report", str(wait))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return (machine.path / "logs" / "agent.log").read_text()

    loop_cycle()
    settled = loop_cycle()  # installed 1.0, then up to date: said once
    assert settled.count("up to date at 1.0") == 1, settled
    assert loop_cycle() == settled and loop_cycle() == settled
    machine.publish("1.1", "refuse-ui-token")
    loop_cycle()
    held = loop_cycle()
    assert loop_cycle() == held, held  # held back by the quarantine: said once
