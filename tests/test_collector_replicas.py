"""Collector replicas behind nginx on one PostgreSQL: machines report through the load
balancer during a planned rollout of a bad release; the leader is killed with kill -9 just
before it would sign the halt; another replica takes the lease and signs the halt, once; the
signed versions only ever increase; every report answered 2xx is in the database, and the
machines saw nothing but answers (nginx sends what the dead replica did not answer to the
next)."""

import concurrent.futures
import time
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from greenlight.channels import HaltRule, RolloutPlan, rollout_role
from greenlight.release import current_channel_file, publish
from greenlight.release.repository._rollouts import current_state

from bench.balancer import balancer
from conftest import ADMIN, Collector, machine_id, post_report, until, wait_state

MACHINES = 40


def _report(key: str, outcome: str, n: int) -> dict:
    now = datetime.now(UTC).isoformat()
    return {"schema": "greenlight.report/1", "at": now, "sent": now, "channel": "stable",
            "outcome": outcome, "release": key.split("@")[0], "release_key": key,
            "id": f"{n:032x}",
            "failed_checks": [{"name": "ui-session", "summary": "HTTP 403: denying api access"}]
            if outcome == "rolled-back" else []}


def _leader(collector: Collector) -> dict:
    answer = httpx.get(collector.url + "v1/rollouts", timeout=10,
                       headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["leader"]


def test_the_leader_killed_before_it_signs_a_halt_is_replaced_and_the_halt_signed_once(
        tmp_path, published, builds, postgres):
    prior = current_channel_file(published, "stable").identity.key
    repo = ["--repo", str(published.path), "--tick", "0.5"]
    # the first leader dies for real (SIGKILL) the moment it would sign a halt
    first = Collector(tmp_path, postgres, None, *repo, env={"GREENLIGHT_KILL_AT": "sign:halt"})
    until(lambda: _leader(first)["this"], waiting_for="the first replica to lead")
    others = [Collector(tmp_path, postgres, None, *repo) for _ in range(2)]
    replicas = [first, *others]
    answers: list[tuple[str, str, int]] = []  # (machine id, report id, status)

    def send(name: str, report: dict) -> None:
        answer = post_report(url, name, report)
        answers.append((machine_id(name), report["id"], answer.status_code))

    try:
        with balancer([c.port for c in replicas], tmp_path / "nginx") as url:
            names = [f"machine-{i}" for i in range(MACHINES)]
            for i, name in enumerate(names):  # known to the collectors before the rollout
                send(name, _report(prior, "upgraded", i))
            cf = publish(published, "stable", "1.1", builds("1.1"), rollout_plan=RolloutPlan(
                steps=[50, 100], soak=3600, started_at=datetime.now(UTC),
                halt=HaltRule(rollbacks=3, failure_ratio=0.05, min_reports=20)))
            key = cf.identity.key
            # every fourth machine's core refuses its UI after the upgrade
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: send(names[i], _report(
                    key, "rolled-back" if i % 4 == 0 else "upgraded", 1000 + i)),
                    range(MACHINES)))
            assert first.proc.wait(timeout=60) == -9  # killed where it would have signed
            killed = time.monotonic()
            state = wait_state(published, lambda s: s.halted, deadline=60)
            print(f"halt signed {time.monotonic() - killed:.2f} s after the leader's kill")
            assert state.by == "collector" and "rolled back" in state.reason
            # the survivors lead one at a time; reports keep coming through the balancer
            for i, name in enumerate(names[:8]):
                send(name, _report(key, "upgraded", 2000 + i))
    finally:
        for c in replicas:
            c.stop()

    said = [c.proc.stdout.read() for c in replicas]
    assert "leads:" in said[0] and "halted" not in said[0], said[0]
    halts = [line for text in said[1:] for line in text.splitlines()
             if line.startswith("halted stable 1.1")]
    assert len(halts) == 1, said  # signed once, by one survivor

    engine = sa.create_engine(postgres)
    with engine.connect() as c:
        signed = [tuple(r) for r in c.execute(sa.text(
            "SELECT version, epoch, what FROM signed WHERE role = :role ORDER BY version"),
            {"role": rollout_role("stable")})]
        stored = {tuple(r) for r in c.execute(sa.text(
            "SELECT installation, report_id FROM reports"))}
    engine.dispose()
    assert [what.split()[0] for _, _, what in signed] == ["halted"]
    assert signed[0][1] >= 2  # under the second leader's epoch, at least
    assert signed[-1][0] == published.open(rollout_role("stable")).signed.version
    assert current_state(published, "stable").halted

    assert len(answers) == 2 * MACHINES + 8
    assert {status for _, _, status in answers} <= {200, 202}, answers  # never an error
    assert {(m, r) for m, r, status in answers} <= stored  # every answered report is kept


def test_one_sources_idle_connections_at_the_balancer_leave_everyone_served(tmp_path):
    """Behind nginx the replicas hold only nginx's connections: 4,200 idle connections from
    one address (more than one collector's whole table) wait in nginx, and a machine the
    collectors never saw, the admin and a known machine from other addresses are answered."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 6000:
        pytest.skip(f"this process may hold {hard} files, not the 6,000 the test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 6000), hard))
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    replicas = [Collector(tmp_path, db, None, "--allowed-host", "fleet.test") for _ in range(2)]
    held: list[socket.socket] = []
    try:
        with balancer([c.port for c in replicas], tmp_path / "nginx") as url:
            port = int(url.rsplit(":", 1)[1].strip("/"))
            now = datetime.now(UTC).isoformat()
            report = {"schema": "greenlight.report/1", "at": now, "sent": now,
                      "channel": "stable", "outcome": "upgraded", "release": "1.0",
                      "id": "1" * 32}
            assert post_report(url, "known", report).status_code == 202
            for _ in range(4200):
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", port))
                held.append(s)
            with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
                assert client.get(url + "v1/rollouts", timeout=10, headers={
                    "Authorization": f"Bearer {ADMIN}",
                    "Host": "fleet.test"}).status_code == 200
            assert post_report(url, "stranger", {**report, "id": "2" * 32}).status_code == 202
            assert post_report(url, "known", {**report, "id": "3" * 32}).status_code == 202
    finally:
        for s in held:
            s.close()
        for c in replicas:
            c.stop()
