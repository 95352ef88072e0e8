"""End to end: a fleet of 20 installation roots, a real collector guarding a planned rollout,
a bad release halted by itself and a fixed one rolled out step by step; and machines of the
demo product whose old release dies when the upgrade stops it, which is counted against that
release and never halts the good one (its own file, so that pytest-xdist runs it beside the
other fleet tests)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from test_fleet_evidence import _status
from test_rollouts import _plan

from greenlight.channels import HaltRule, RolloutPlan, rollout_bucket
from greenlight.release import publish
from greenlight.release.fleet import Guard, Store
from greenlight.release.repository._repository import FileRepository
from greenlight.release.repository._rollouts import current_state

from conftest import ADMIN, FLEET, Collector, builtin_server, free_port, wait_state
from examples.demo.config import configure

BIN = Path(sys.executable).parent


# Twenty real machines: kept out of `make test`'s time budget; CI runs it in
# `make test-exhaustive`.
@pytest.mark.slow
@pytest.mark.exhaustive
def test_twenty_machines_a_bad_release_halted_and_a_fixed_one_rolled_out_step_by_step(
        tmp_path, builds):
    """20 installation roots follow beta. A release that refuses the UI's token rolls out by
    plan: the first machines in the bucket range roll back and report, the collector halts the
    rollout, and no machine that checks after the halt installs it. A fixed release then
    rolls out step by step, by the collector's timer, to all 20."""
    from test_fleet import Machine

    from greenlight.release import init_repository

    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(repo.path), "--tick", "0.2")
    # Ids chosen so that 3 fall in the bad release's first step (10%) and 17 after it, and so
    # that the fixed release's every step has machines: the test sees each case every time.
    def pick(b11: tuple[int, int], b12: tuple[int, int], n: int) -> list[str]:
        found = (f"{i:032x}" for i in range(200_000))
        return [c for c in found if b11[0] <= rollout_bucket(c, "beta", "1.1") < b11[1]
                and b12[0] <= rollout_bucket(c, "beta", "1.2") < b12[1]][:n]

    first = pick((0, 10), (0, 10), 1) + pick((0, 10), (10, 50), 1) + pick((0, 10), (50, 100), 1)
    rest = pick((10, 100), (0, 10), 2) + pick((10, 100), (10, 50), 7) + pick(
        (10, 100), (50, 100), 8)
    try:
        with builtin_server(repo.path) as server:
            machines = []
            for n, ident in enumerate(first + rest):
                m = Machine(tmp_path, f"m{n:02}", repo, server, collector.url)
                (m.path / "state" / "installation-id").write_text(ident + "\n")
                assert m.updater("upgrade").returncode == 0
                machines.append(m)
            bad = publish(repo, "beta", "1.1", builds("1.1", "refuse-ui-token"),
                          fallback="stable",
                          rollout_plan=_plan([10, 50, 100], soak=3600, rollbacks=2))
            for m in machines:
                assert m.updater("channel", "beta").returncode == 0

            # The first two in the bucket range roll back, and their reports halt it.
            for m in machines[:2]:
                done = m.updater("upgrade")
                assert done.returncode == 20, done.stdout + done.stderr
            state = wait_state(repo, lambda s: s.halted, channel="beta")
            assert state.release == bad.identity.key and state.by == "collector"
            # Nobody who checks after the halt takes it: not the third in range, nor the rest.
            for m in machines[2:]:
                done = m.updater("upgrade", "--json")
                assert done.returncode == 15, done.stdout + done.stderr
                assert json.loads(done.stdout)["installed"] == "1.0"
            seen = {r["release"]: r for r in httpx.get(
                collector.url + "v1/rollouts",
                headers={"Authorization": f"Bearer {ADMIN}"}).json()["rollouts"]}
            # Held machines say so once each (a second check while held sends nothing more).
            assert seen["1.1"]["outcomes"] == {"rolled-back": 2, "held": 18}
            def held_rows() -> int:
                import sqlite3

                with sqlite3.connect(tmp_path / "c.sqlite3") as db:
                    return db.execute("select count(*) from reports where outcome = 'held'"
                                      ).fetchone()[0]

            assert held_rows() == 18
            assert machines[5].updater("upgrade").returncode == 15
            assert held_rows() == 18
            assert seen["1.1"]["plan"]["halted"] and seen["1.1"]["plan"]["by"] == "collector"

            # The fixed release, 4 s a step; the two that fell back follow beta again.
            fixed = publish(repo, "beta", "1.2", builds("1.2"), fallback="stable",
                            rollout_plan=_plan([10, 50, 100], soak=4, rollbacks=2))
            for m in machines[:2]:
                assert m.updater("channel", "beta").returncode == 0
            buckets = {m.path.name: rollout_bucket(m.path.joinpath(
                "state", "installation-id").read_text().strip(), "beta", "1.2")
                for m in machines}
            waiting, steps_seen = list(machines), set()
            installed_at: dict[int, int] = {}  # the percent in force -> machines that took it
            deadline = time.monotonic() + 120
            while waiting:
                assert time.monotonic() < deadline, f"{len(waiting)} machines never got 1.2"
                before = _step(repo, fixed.identity.key)
                for m in list(waiting):
                    low = [10, 50, 100][_step(repo, fixed.identity.key)]
                    done = m.updater("upgrade", "--json")
                    high = [10, 50, 100][_step(repo, fixed.identity.key)]
                    outcome = json.loads(done.stdout)["outcome"]
                    if outcome == "upgraded":  # inside the percent the signed state allowed
                        assert buckets[m.path.name] < high, (m.path.name, buckets, high)
                        waiting.remove(m)
                        steps_seen.add(high)
                        installed_at[high] = installed_at.get(high, 0) + 1
                    else:
                        assert outcome == "held" and buckets[m.path.name] >= low, done.stdout
                if waiting:  # wait for the collector's next step, not for a fixed time
                    wait_state(repo, lambda s, b=before: s.step > b, channel="beta")
            print(f"installed at each percent in force: {installed_at}")
            assert len(steps_seen) >= 2, installed_at  # step by step, not all at once
            assert _step(repo, fixed.identity.key) == 2
            for m in machines:
                status = json.loads(m.updater("status", "--json").stdout)
                assert status["installed"] == "1.2", m.path.name
    finally:
        collector.stop()


def _step(repo: FileRepository, key: str) -> int:
    state = current_state(FileRepository(repo.path), "beta")
    return 0 if state is None or state.release != key else state.step


class ProductMachine:
    """An installation root of the demo product (its core and UI run as real processes, on
    ports of their own) that reports to the collector."""

    def __init__(self, tmp: Path, name: str, repo: FileRepository, server,
                 collector_url: str) -> None:
        self.path = tmp / name
        done = self.updater("init", "--repo", server.url, "--trust",
                            str(repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        configure(self.path, free_port(), free_port(), soak=0.2)
        (self.path / "data" / "fleet-token").write_text(FLEET + "\n")
        with (self.path / "greenlight.toml").open("a") as f:
            f.write(f'\n[report]\nurl = "{collector_url}"\n')

    def updater(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updater"), *args, "--root", str(self.path)],
                              capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        from greenlight.updater.product import ProcessBackend
        from greenlight.updater.store import InstallRoot

        backend = ProcessBackend(InstallRoot(self.path))
        for name in ("ui", "core"):
            pid = backend.pid(name)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def _upgrade_twice(m: ProductMachine) -> tuple[subprocess.CompletedProcess[str], ...]:
    """The upgrade that the old core's death on stop rolls back, and its retry."""
    return m.updater("upgrade"), m.updater("upgrade", "--json")


@pytest.mark.slow
def test_an_old_release_that_dies_on_stop_is_counted_against_itself_and_never_halts_a_good_one(
        tmp_path, builds):
    """Three machines run 1.0, whose core crashes (exit 70) the first time it is stopped. 1.1,
    a good release, rolls out by a plan that halts at the first failed machine. Each upgrade
    is rolled back when the old core dies on stop (1.1 is not to blame, nor quarantined) and
    goes through when retried. The collector counts `crashed-on-stop` against 1.0, naming
    1.1 as what the machines were upgrading to; 1.1 has upgrades only, and its rollout is
    not halted, by the collector's own judgement and as `release rollout status` shows."""
    from greenlight.release import init_repository

    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0", "crash-on-first-stop"))
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    collector = Collector(tmp_path, db, None, "--repo", str(repo.path), "--tick", "0.2")
    machines: list[ProductMachine] = []
    try:
        with builtin_server(repo.path) as server, ThreadPoolExecutor(3) as pool:
            machines.extend(ProductMachine(tmp_path, f"m{i}", repo, server, collector.url)
                            for i in range(3))
            for done in pool.map(lambda m: m.updater("upgrade"), machines):
                assert done.returncode == 0, done.stdout + done.stderr
            plan = RolloutPlan(steps=[100], soak=3600, started_at=datetime.now(UTC),
                               halt=HaltRule(rollbacks=1))
            good = publish(repo, "stable", "1.1", builds("1.1"), rollout_plan=plan)
            for m, (first, retry) in zip(machines, pool.map(_upgrade_twice, machines),
                                         strict=True):
                assert first.returncode == 20, first.stdout + first.stderr
                assert "crashed when stopped (exit status 70)" in first.stdout, first.stdout
                assert "1.1 not quarantined" in first.stdout, first.stdout
                assert retry.returncode == 0, retry.stdout + retry.stderr
                assert json.loads(retry.stdout)["outcome"] == "upgraded"
                status = json.loads(m.updater("status", "--json").stdout)
                assert status["installed"] == "1.1" and status["quarantined"] == {}, status
                assert not list((m.path / "state" / "reports").glob("*.json"))  # all sent

        rows = collector.rollouts()
        old, new = rows[("stable", "1.0")], rows[("stable", "1.1")]
        assert old["outcomes"] == {"upgraded": 3, "crashed-on-stop": 3}, old
        assert old["failures"] == [{
            "outcome": "crashed-on-stop", "machines": 3, "release": "1.0",
            "upgrading_to": "1.1", "text": "1.0 crashed on stop (upgrading to 1.1)"}], old
        assert old["checks"][0]["name"] == "core-stop" and "70" in old["checks"][0]["example"]
        assert new["outcomes"] == {"upgraded": 3} and new["failures"] == [], new
        assert new["plan"]["halted"] is False, new["plan"]
        # The rule, judged now over every report (a halt would be signed here): not met.
        assert Guard(repo.path, None, Store(db)).judge("stable") is None
        state = current_state(FileRepository(repo.path), "stable")
        assert state is None or (state.release == good.identity.key and not state.halted)
        blocks = _status(collector, tmp_path)
        assert blocks["stable 1.1"][0].startswith(
            "stable 1.1: 3 machines reporting; 3 upgraded, 0 rolled back, 0 dead ends")
        assert not any("HALTED" in line or "failed" in line for line in blocks["stable 1.1"])
        assert "  failed: 3 machine(s): 1.0 crashed on stop (upgrading to 1.1)" in blocks[
            "stable 1.0"]
    finally:
        for m in machines:
            m.stop()
        collector.stop()
