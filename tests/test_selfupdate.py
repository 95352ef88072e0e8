"""Greenlight updates itself (docs/compatibility.md, updater/selfupdate): an updater release on
channel greenlight-<channel>, fetched with the root's own trust, qualified against the root
read-only, activated in one journaled step, watched for its first cycles, and put aside when
it fails. Every machine here is a real root on a real repository on loopback, and every
Greenlight a build of this tree at a version of the test's choosing (tests/greenlights.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import crashstates as cs
import pytest

from greenlight.release import init_repository, publish
from greenlight.release.distribution._bundle import build_bundle
from greenlight.updater.store import InstallRoot, history, managed_version, read_updaters

from conftest import MARKER_PRODUCT, builtin_server, sign_entry
from examples.demo.greenlights import greenlight_build, make_managed, publish_greenlight

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent


class Machine:
    """A root on 1.0 of the marker product whose bin/updater enters Greenlight 0.3.0."""

    def __init__(self, tmp: Path, repo, server, builds) -> None:
        self.tmp, self.repo, self.server, self.builds = tmp, repo, server, builds
        self.path = tmp / "root"
        self.root = InstallRoot(self.path)

    def setup(self) -> "Machine":
        publish(self.repo, "stable", "1.0", self.builds("1.0"))
        done = self.run(BIN / "updater", "init", "--repo", self.server.url, "--trust",
                        str(self.repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        with (self.path / "greenlight.toml").open("a") as f:
            f.write(MARKER_PRODUCT + "\n[agent]\ninterval = 60\njitter = 0\nretry = 1\n"
                                     "[report]\nurl = \"http://127.0.0.1:9/\"\n")
        assert self.run(BIN / "updater", "upgrade").returncode == 0
        make_managed(self.root, greenlight_build(self.tmp, "0.3.0"), "0.3.0")
        return self

    def run(self, program: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(program), *args, "--root", str(self.path)],
                              capture_output=True, text=True, timeout=300, cwd=self.tmp)

    def updater(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.path / "bin" / "updater", *args)

    def offer(self, version: str, fault: str | None = None, **kw) -> None:
        publish_greenlight(self.repo, "stable", greenlight_build(self.tmp, version, fault),
                           version, self.tmp, **kw)

    def needs(self, release: str, greenlight: str) -> None:
        """stable `release`, whose entry needs Greenlight >= `greenlight`."""
        entry = publish(self.repo, "stable", release, self.builds(release))
        sign_entry(self.repo, entry.model_copy(update={"requires": greenlight}))


@pytest.fixture
def machine(tmp_path, builds):
    repo = init_repository(tmp_path / "repo")
    with builtin_server(repo.path) as server:
        yield Machine(tmp_path, repo, server, builds).setup()


def test_the_agent_moves_greenlight_first_then_the_release_that_needs_it(machine):
    """One unattended cycle: the release needs 0.4.0, the machine runs 0.3.0. It says so,
    moves itself to 0.4.0 (qualified, activated), and the same cycle, re-executed in 0.4.0,
    installs the release."""
    machine.offer("0.4.0")
    machine.needs("1.1", "0.4.0")
    done = machine.updater("agent", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout
    assert "1.1 needs Greenlight >= 0.4.0; this machine runs 0.3.0: updating Greenlight first" \
        in log, log
    assert "Greenlight 0.3.0 -> 0.4.0 (qualified, activated)" in log, log
    assert "1.0 -> 1.1" in log, log
    assert log.index("updating Greenlight first") < log.index("0.3.0 -> 0.4.0") < \
        log.index("1.0 -> 1.1")
    assert machine.root.installed_version() == "1.1"
    assert managed_version(machine.root) == "0.4.0"
    state = read_updaters(machine.root)
    assert state.active.version == "0.4.0" and state.previous.version == "0.3.0"
    assert state.probation == 1  # the cycle 0.4.0 finished counted
    assert [e.event for e in history(machine.root)][-2:] == ["greenlight-updated", "upgraded"]
    status = json.loads(machine.updater("status", "--json").stdout)
    assert status["greenlight"] == {"version": "0.4.0", "kind": "exe", "active": "0.4.0",
                                    "previous": "0.3.0", "probation": 1, "quarantined": {}}
    ui = json.loads((machine.path / "state" / "status.json").read_text())
    assert ui["greenlight"]["version"] == "0.4.0"
    reports = [json.loads(p.read_text()) for p in (machine.path / "state" / "reports")
               .glob("*.json")]
    moved = [r for r in reports if r["channel"] == "greenlight-stable"]
    assert [(r["outcome"], r["release"]) for r in moved] == [("upgraded", "0.4.0")]
    again = machine.updater("self-update", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["outcome"] == "up-to-date"
    # The agent's unit enters bin/updater, which follows Greenlight's moves.
    units = machine.tmp / "units"
    assert machine.updater("systemd-units", "--out", str(units)).returncode == 0
    agent_unit = next(units.glob("greenlight-agent*.service")).read_text()
    assert f"ExecStart={machine.path}/bin/updater agent" in agent_unit, agent_unit


def test_a_greenlight_that_fails_to_qualify_is_quarantined_and_the_machine_keeps_working(
        machine):
    """0.4.0 cannot read this root's state: it fails its qualification, is removed and
    quarantined (history, status, a report against it), and 0.3.0 goes on: the next cycle
    upgrades the product."""
    machine.offer("0.4.0", "unreadable-state")
    done = machine.updater("self-update", "--json")
    assert done.returncode == 20, done.stdout + done.stderr
    said = json.loads(done.stdout)
    assert said["outcome"] == "quarantined" and said["active"] == "0.3.0"
    assert "failed to qualify" in said["note"] and "state: " in said["note"], said["note"]
    assert managed_version(machine.root) == "0.3.0"
    assert not (machine.path / "updater" / "0.4.0").exists()
    last = history(machine.root)[-1]
    assert last.event == "greenlight-quarantined" and last.from_version == "0.4.0"
    status = json.loads(machine.updater("status", "--json").stdout)
    assert list(status["greenlight"]["quarantined"]) == ["0.4.0"]
    again = machine.updater("self-update", "--json")
    assert again.returncode == 15 and "failed here before" in json.loads(again.stdout)["note"]
    publish(machine.repo, "stable", "1.1", machine.builds("1.1"))
    cycle = machine.updater("agent", "--once")
    assert cycle.returncode == 0 and machine.root.installed_version() == "1.1", cycle.stdout


def test_a_bundle_carries_greenlight_and_a_sideload_takes_it_first(machine):
    """Offline: a bundle without Greenlight cannot install a release that needs a newer one
    (exit 17, nothing changed); one made `--with-updater` moves Greenlight first, qualified
    and activated as online, and the sideload goes on in the new version."""
    machine.offer("0.4.0")
    machine.needs("1.1", "0.4.0")
    plain, carrying = machine.tmp / "plain.bundle", machine.tmp / "carrying.bundle"
    build_bundle(machine.repo, "stable", plain)
    build_bundle(machine.repo, "stable", carrying, with_updater=True)
    refused = machine.updater("sideload", str(plain))
    assert refused.returncode == 17, refused.stdout + refused.stderr
    assert managed_version(machine.root) == "0.3.0"
    assert machine.root.installed_version() == "1.0"
    done = machine.updater("sideload", str(carrying), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["installed"] == "1.1"
    assert managed_version(machine.root) == "0.4.0"
    assert [e.event for e in history(machine.root)][-2:] == ["greenlight-updated", "upgraded"]


def test_qualification_reads_the_root_and_writes_nothing(machine):
    """`updater qualify` loads everything and changes not a byte, not a mode, not a link."""
    publish(machine.repo, "stable", "1.1", machine.builds("1.1"))
    assert machine.updater("check").returncode == 10
    before = cs.snapshot(machine.path)
    done = machine.run(greenlight_build(machine.tmp, "0.4.0"), "qualify", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["version"] == "0.4.0" and report["ok"]
    assert [c["name"] for c in report["checks"]] == ["configuration", "metadata", "state",
                                                     "release", "channel"]
    assert cs.snapshot(machine.path).digest() == before.digest()
    broken = machine.run(greenlight_build(machine.tmp, "0.4.0", "unreadable-state"),
                         "qualify", "--json")
    assert broken.returncode == 1
    assert [c["name"] for c in json.loads(broken.stdout)["checks"] if not c["ok"]] == ["state"]


def _watch_the_loop(machine: Machine) -> str:
    """Run the long-running agent until its loop has put a Greenlight aside; its output."""
    agent = subprocess.Popen([str(machine.path / "bin" / "updater"), "agent", "--root",
                              str(machine.path)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=machine.tmp)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = read_updaters(machine.root)
            if state.quarantined and managed_version(machine.root) == "0.3.0":
                break
            assert agent.poll() is None, agent.stdout.read() if agent.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail("the loop did not fall back within 120 s")
    finally:
        agent.send_signal(signal.SIGTERM)
        out = agent.communicate(timeout=60)[0]
    return out


@pytest.mark.parametrize("fault, why", [
    ("crash-in-cycle", "its agent cycle died of signal 9"),
    ("unreachable", "its 3 agent cycles in a row ended in an error")])
def test_a_greenlight_whose_first_cycles_fail_is_put_aside_by_the_loop(machine, fault, why):
    """The long-running agent on 0.3.0 takes 0.4.0, whose cycles die of SIGKILL, or all end
    in an error (it cannot reach the repository: a clean-looking cycle that never verifies
    anything is no proof): the loop runs 0.3.0's fall-back, which quarantines 0.4.0 and
    turns bin/updater back."""
    machine.offer("0.4.0", fault)
    out = _watch_the_loop(machine)
    state = read_updaters(machine.root)
    assert [q.version for q in state.quarantined] == ["0.4.0"]
    assert why in state.quarantined[0].reason, state.quarantined[0].reason
    assert state.active.version == "0.3.0" and state.probation == 0 and state.previous is None
    assert "falling back to 0.3.0" in out, out
    events = [e for e in history(machine.root) if e.event.startswith("greenlight-")]
    assert [e.event for e in events] == ["greenlight-updated", "greenlight-quarantined"]
    assert json.loads(machine.updater("self-update", "--json").stdout)["outcome"] == "held"
    lifted = machine.updater("self-update", "--lift", "0.4.0")
    assert lifted.returncode == 0 and "may be taken again" in lifted.stdout
    assert read_updaters(machine.root).quarantined == []
    assert machine.updater("self-update", "--lift", "0.4.0").returncode == 9


def test_a_fall_back_never_goes_below_the_installed_release(machine):
    """0.4.0 took over and the release it installed needs it: a fall-back keeps 0.4.0 and
    says why; so does one asked of a version that is not the active one."""
    machine.offer("0.4.0")
    machine.needs("1.1", "0.4.0")
    assert machine.updater("agent", "--once").returncode == 0
    assert machine.root.installed_version() == "1.1"
    publish(machine.repo, "stable", "1.2", machine.builds("1.2"))  # the channel moves on
    assert machine.updater("check").returncode == 10
    done = machine.updater("self-update", "--json", "--fall-back", "said so", "--active",
                           "0.4.0")
    said = json.loads(done.stdout)
    assert done.returncode == 0 and said["outcome"] == "kept", said
    assert "installed release needs Greenlight >= 0.4.0" in said["note"]
    other = json.loads(machine.updater("self-update", "--json", "--fall-back", "said so",
                                       "--active", "0.3.0").stdout)
    assert other["outcome"] == "up-to-date" and managed_version(machine.root) == "0.4.0"


def test_links_planted_in_the_root_are_never_written_through(machine):
    """bin/ replaced by a link to a folder elsewhere: no command writes through it (the next
    command's settling included), and self-update refuses in one line, exit 7."""
    import shutil

    outside = machine.tmp / "outside-bin"
    shutil.move(machine.path / "bin", outside)
    (machine.path / "bin").symlink_to(outside)
    before = cs.snapshot(outside).digest()
    machine.offer("0.4.0")
    old = machine.path / "updater" / "0.3.0" / "updater"
    done = machine.run(old, "self-update")
    assert done.returncode == 7, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "not a folder" in done.stderr
    assert machine.run(old, "status").returncode == 0
    assert cs.snapshot(outside).digest() == before


def test_an_installer_never_moves_greenlight_back(machine):
    """`place` (what the offline installer does with itself) on a root whose Greenlight is
    newer than it, even with its record gone: the newer one stays, with its folder."""
    from greenlight.updater.selfupdate import place

    machine.offer("0.9.0")
    assert machine.updater("self-update").returncode == 0
    assert managed_version(machine.root) == "0.9.0"
    (machine.path / "state" / "updater.json").unlink()
    said = place(machine.root, greenlight_build(machine.tmp, "0.3.0"))
    assert said == "bin/updater stays on Greenlight 0.9.0 (newer than 0.3.0)"
    assert managed_version(machine.root) == "0.9.0"
    assert (machine.path / "updater" / "0.9.0" / "updater").is_file()


def test_a_link_planted_where_the_versions_live_is_refused(machine):
    """root/updater replaced by a link to a folder elsewhere: self-update refuses in one line
    (exit 7) and writes nothing through it."""
    import shutil

    outside = machine.tmp / "outside"
    shutil.move(machine.path / "updater", outside)
    (machine.path / "updater").symlink_to(outside)
    machine.offer("0.4.0")
    done = machine.updater("self-update")
    assert done.returncode == 7, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "not a folder" in done.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["0.3.0"]
    assert managed_version(machine.root) == "0.3.0"


def test_a_python_environment_says_what_moves_it(tmp_path, builds):
    """A root whose bin/updater runs a Python environment's Greenlight is moved by its
    package manager: self-update says so (exit 15) and status names the kind."""
    repo = init_repository(tmp_path / "repo")
    with builtin_server(repo.path) as server:
        machine = Machine(tmp_path, repo, server, builds)
        publish(repo, "stable", "1.0", builds("1.0"))
        assert machine.run(BIN / "updater", "init", "--repo", server.url, "--trust",
                           str(repo.metadata_dir / "1.root.json")).returncode == 0
        (machine.path / "bin").mkdir()
        (machine.path / "bin" / "updater").write_text(
            f"#!/bin/sh\nexec {sys.executable} -m greenlight.updater.cli \"$@\"\n")
        (machine.path / "bin" / "updater").chmod(0o755)
        machine.offer("0.4.0")
        done = machine.updater("self-update", "--json")
        assert done.returncode == 15, done.stdout + done.stderr
        said = json.loads(done.stdout)
        assert said["outcome"] == "unmanaged" and "package manager" in said["note"]
        status = json.loads(machine.updater("status", "--json").stdout)
        assert status["greenlight"]["kind"] == "python"


def _recorded(machine: Machine, workload: str) -> tuple[cs.State, list[cs.Op]]:
    """`self-update` to 0.4.0 recorded; or, once 0.4.0 took over, its fall-back to 0.3.0."""
    machine.offer("0.4.0")
    args = ["self-update"]
    if workload == "fall-back":
        assert machine.updater("self-update").returncode == 0
        args += ["--fall-back", "its cycles failed", "--active", "0.4.0"]
    os.sync()
    base = cs.snapshot(machine.path)
    log = machine.tmp / "ops.pickle"
    done = subprocess.run(
        [sys.executable, str(HERE / "crashstates.py"), "record", str(log), str(machine.path),
         "--", *args, "--root", str(machine.path)], capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return base, cs.load(log)


def _one_updater(state: cs.State, at: Path, workload: str) -> str | None:
    cs.materialize(state, at)
    try:
        said = f"crash after op {state.crash_after}, losing {state.lost}"
        done = subprocess.run([str(at / "bin" / "updater"), "status", "--json", "--root",
                               str(at)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return f"{said}: status exit {done.returncode}: {done.stderr[-400:]}"
        root = InstallRoot(at)
        linked, record = managed_version(root), read_updaters(root)
        if record.pending is not None or record.active is None:
            return f"{said}: the record is left {record}"
        if linked != record.active.version or linked not in ("0.3.0", "0.4.0"):
            return f"{said}: bin/updater enters {linked}, the record says {record.active}"
        version = subprocess.run([str(at / "bin" / "updater"), "--version"],
                                 capture_output=True, text=True, timeout=60).stdout.split()
        if version != ["updater", linked]:
            return f"{said}: bin/updater says {version}, expected {linked}"
        if record.is_quarantined(linked) is not None:
            return f"{said}: the active {linked} is quarantined (a fall-back undone)"
        return None
    finally:
        import shutil

        shutil.rmtree(at, ignore_errors=True)


# `make test` checks a sample of a self-update's states; `make test-exhaustive` every state of
# both workloads (a fall-back's sample is left to it, to keep `make test` within its budget).
@pytest.mark.parametrize("workload, every", [
    ("self-update", False),
    pytest.param("self-update", True, marks=pytest.mark.exhaustive),
    pytest.param("fall-back", True, marks=pytest.mark.exhaustive)])
def test_every_crash_state_of_an_activation_leaves_one_working_updater(
        machine, workload, every, record_property):
    """`updater self-update`, and a fall-back, recorded (tests/crashstates.py); every state a
    power cut or a kill -9 could leave recovers, at the next command, to exactly one working
    updater: the record and bin/updater agree, on 0.3.0 or 0.4.0, and it runs; a fall-back
    that was under way is finished, never undone."""
    base, ops = _recorded(machine, workload)
    states = list(cs.crash_states(base, ops))
    chosen = states if every else states[::max(1, len(states) // 8)]
    found = [f for n, s in enumerate(chosen)
             if (f := _one_updater(s, machine.tmp / f"state-{n}", workload))]
    record_property("power_loss", f"{workload}: {len(ops)} operations recorded, "
                                  f"{len(states)} crash states, {len(chosen)} checked")
    assert not found, f"{len(found)} of {len(chosen)} states did not recover:\n" + \
        "\n".join(found[:5])
