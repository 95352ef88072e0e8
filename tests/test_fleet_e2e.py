"""End to end: a fleet of 20 installation roots, a real collector guarding a planned rollout,
a bad release halted by itself and a fixed one rolled out step by step (its own file, so that
pytest-xdist runs it beside the other fleet tests)."""

import json
import time

import httpx
import pytest
from test_rollouts import _plan

from greenlight.channels import rollout_bucket
from greenlight.release import publish
from greenlight.release.repository._repository import FileRepository
from greenlight.release.repository._rollouts import current_state

from conftest import ADMIN, Collector, builtin_server, wait_state


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
