"""The collector against a holder of the fleet token, or anyone, on loopback: a real
collector (uvicorn on 127.0.0.1) and real reports signed with real machine keys. Keys minted
for the occasion change no judgement, a replayed report counts once, a revoked key leaves
every count, what the repository lacks is not stored, the admin views come a bounded page at
a time, and idle connections never lock out the admin or the machines the collector counts."""

import json
import select
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from greenlight.channels import FleetReport, HaltRule, RolloutPlan, public_key_text, sign_body
from greenlight.release import current_channel_file, publish
from greenlight.release.fleet import Guard, Store
from greenlight.release.repository._repository import FileRepository
from greenlight.release.repository._rollouts import current_state

from conftest import ADMIN, FLEET, Collector, machine_id, machine_key, post_report, wait_state

BIN = Path(sys.executable).parent
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
REAL = "linux-6/x86_64/default"


def _report(key: str, outcome: str = "rolled-back", channel: str = "stable",
            **fields: object) -> dict:
    return {"schema": "greenlight.report/1", "at": datetime.now(UTC).isoformat(),
            "channel": channel, "outcome": outcome, "release": key.split("@")[0],
            "release_key": key,
            "failed_checks": [{"name": "ui-session", "summary": "HTTP 403"}], **fields}


def _signed(name: str, report: dict) -> tuple[bytes, dict[str, str]]:
    """A report as machine `name` sends it: its body and headers, as one could capture them."""
    body = json.dumps({**report, "installation": machine_id(name)}).encode()
    return body, {"Authorization": f"Bearer {FLEET}", "Content-Type": "application/json",
                  **sign_body(machine_key(name), body)}


def _release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "release"), *args], capture_output=True, text=True,
                          timeout=60)


def _plan(rollbacks: int) -> RolloutPlan:
    return RolloutPlan(steps=[5, 25, 100], soak=3600, started_at=datetime.now(UTC),
                       halt=HaltRule(rollbacks=rollbacks))


def test_keys_minted_for_the_occasion_cannot_turn_a_halt_into_a_cohort_hold(
        tmp_path, published, builds):
    """#2: every machine the rule counts is of one kind, and all three failed: a halt for
    everyone. A key minted during the rollout naming an invented cohort does not make that
    cohort known, so the halt is not narrowed to a hold of the real machines' cohort."""
    prior = current_channel_file(published, "stable").identity.key
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    collector = Collector(tmp_path, db, None, "--repo", str(published.path), "--tick", "0.2")
    try:
        counted = ["c1", "c2", "c3"]
        for name in counted:  # known before the rollout, all of one cohort
            answer = post_report(collector.url, name, _report(prior, "upgraded", cohort=REAL))
            assert answer.status_code == 202, answer.text
        cf = publish(published, "stable", "1.2", builds("1.2"), rollout_plan=_plan(3))
        key = cf.identity.key
        for i in range(3):  # the fleet token's holder, under keys made for the occasion
            answer = post_report(collector.url, f"minted{i}", _report(
                key, "upgraded", cohort=f"linux-6/x86_64/invented{i}"))
            assert answer.status_code == 202, answer.text
        for name in counted:
            assert post_report(collector.url, name, _report(key, cohort=REAL)).status_code == 202
        state = wait_state(published, lambda s: s.halted or s.held_cohorts)
        assert state.halted and not state.held_cohorts, state
        assert state.reason.startswith("3 of 3 machines reporting on 1.2 rolled back"), state
        store = Store(db)
        began = cf.rollout.plan.started_at + timedelta(seconds=1)
        assert store.cohorts("stable", began, key) == {REAL}  # the invented ones are unknown
    finally:
        collector.stop()


def test_a_revoked_keys_reports_leave_every_count(tmp_path):
    """#7: once a key is revoked, /v1/rollouts (the dashboard's data) and `release rollout
    status` count what it sent nowhere, as the halt rule does not."""
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}")
    key = "9.9@" + "a" * 12
    try:
        for name in ("r1", "r2", "thief"):
            answer = post_report(collector.url, name, _report(key, channel="beta", cohort=REAL))
            assert answer.status_code == 202, answer.text
        admin = ["--collector", collector.url, "--admin-token-file",
                 str(tmp_path / "tokens" / "admin")]
        done = _release("machines", "revoke", *admin, machine_id("thief"))
        assert done.returncode == 0, done.stderr
        row = collector.rollouts()[("beta", "9.9")]
        assert row["machines"] == 2 and row["outcomes"] == {"rolled-back": 2}, row
        assert row["cohorts"] == [{"cohort": REAL, "machines": 2, "failed": 2}], row
        assert row["checks"][0]["reports"] == 2, row
        assert sum(p["rolled-back"] for p in row["timeline"]) == 2, row
        shown = _release("rollout", "status", *admin)
        assert shown.returncode == 0, shown.stderr
        assert "beta 9.9: 2 machines reporting; 0 upgraded, 2 rolled back" in shown.stdout
        assert "   2 x ui-session: HTTP 403" in shown.stdout, shown.stdout
    finally:
        collector.stop()


def test_a_replayed_report_is_counted_once_and_a_stale_one_refused(tmp_path, published,
                                                                   builds):
    """#6: reports captured on the way and sent again with the fleet token alone are answered
    "already have it" (200) and never counted again, after a resume too; a report sent over
    a day ago, or ahead of the collector's clock, is refused; one from a machine that signs
    no id or time is counted once by its body."""
    prior = current_channel_file(published, "stable").identity.key
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    collector = Collector(tmp_path, db, None, "--repo", str(published.path), "--tick", "0.2")
    url = collector.url + "v1/reports"
    try:
        bad = ["b1", "b2", "b3"]
        for name in [*bad, "ok"]:
            assert post_report(collector.url, name, _report(prior, "upgraded")).status_code == 202
        cf = publish(published, "stable", "1.2", builds("1.2"), rollout_plan=_plan(3))
        key = cf.identity.key
        captured = []
        for i, name in enumerate(bad):
            body, headers = _signed(name, _report(
                key, id=f"{i + 1:032x}", sent=datetime.now(UTC).isoformat()))
            assert httpx.post(url, content=body, headers=headers).status_code == 202
            captured.append((body, headers))
        wait_state(published, lambda s: s.halted)
        resumed = _release("rollout", str(published.path), "--channel", "stable", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        for body, headers in captured * 3:  # replayed without the machines' keys
            answer = httpx.post(url, content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"accepted": True, "duplicate": True}
        assert Guard(published.path, None, Store(db)).judge("stable") is None
        assert not current_state(FileRepository(published.path), "stable").halted

        for sent in (datetime.now(UTC) - timedelta(hours=25),
                     datetime.now(UTC) + timedelta(minutes=10)):
            body, headers = _signed("ok", _report(key, "upgraded", id="e" * 32,
                                                  sent=sent.isoformat()))
            answer = httpx.post(url, content=body, headers=headers)
            assert answer.status_code == 422 and "within 24 hours" in answer.text, answer.text
        body, headers = _signed("ok", _report(key, "upgraded"))  # an older machine's report
        assert [httpx.post(url, content=body, headers=headers).status_code
                for _ in range(3)] == [202, 200, 200]
    finally:
        collector.stop()


def _big(key: str, channel: str = "beta") -> dict:
    """A report near the largest a machine may send."""
    return {**_report(key, channel=channel), "failed_checks": [
        {"name": f"check-{i}", "summary": "x" * 300} for i in range(50)],
        "note": "n" * 300}


@pytest.mark.exhaustive  # a long run: make test-exhaustive
def test_what_the_fleet_token_sends_is_bounded_in_store_and_views(tmp_path, published):
    """#4: with the repository known, reports about a channel or release it lacks are answered
    and counted in a metric, never stored; new keys' reports fill at most a day's budget (429
    past it) while a machine known for longer goes on; /v1/rollouts comes a bounded page at a
    time, and `release rollout status` follows the pages."""

    budget = 16 << 20  # a day's bytes from keys that count for nothing yet (NEWCOMER_BUDGET)

    db = tmp_path / "c.sqlite3"
    # a machine the collector has known for a week (its enrolment, by a real report)
    veteran = FleetReport.model_validate({**_report("1.0@" + "c" * 12, "upgraded",
                                                    channel="beta"),
                                          "installation": machine_id("veteran")})
    said = Store(f"sqlite:///{db}").accept(
        veteran, veteran.model_dump_json(by_alias=True), datetime.now(UTC) - timedelta(days=7),
        10, public_key_text(machine_key("veteran")).strip())
    assert said == ("accepted", True)

    collector = Collector(tmp_path, f"sqlite:///{db}", None, "--repo", str(published.path))
    stable = current_channel_file(published, "stable").identity.key
    try:
        for report, what in ((_report(stable, channel="invented"), "channel"),
                             (_report("9.9.9@" + "d" * 12), "release")):
            answer = post_report(collector.url, "m", report)
            assert answer.status_code == 202, answer.text
            assert answer.json()["stored"] is False and what in answer.json()["error"]
        assert post_report(collector.url, "m", _report(stable)).status_code == 202
        assert set(collector.rollouts()) == {("stable", "1.0"), ("beta", "1.0")}
        metrics = httpx.get(collector.url + "metrics", headers=ADMIN_HEADERS).text
        assert 'greenlight_reports_unknown_total{what="channel"} 1.0' in metrics
    finally:
        collector.stop()

    collector = Collector(tmp_path, f"sqlite:///{db}")  # no repository: every release
    try:
        before = db.stat().st_size + Path(f"{db}-wal").stat().st_size

        def flood(n: int) -> list[int]:
            return [post_report(collector.url, f"flood{n}", _big(f"{n}.{i}@" + "e" * 12)
                                ).status_code for i in range(8)]

        with ThreadPoolExecutor(8) as pool:  # each key stops at its share (NEWCOMER_KEY_BYTES)
            codes = [c for batch in pool.map(flood, range(160)) for c in batch]
        assert 202 in codes and 429 in codes, codes
        refused = post_report(collector.url, "late", _big("7.7@" + "e" * 12))
        assert refused.status_code == 429 and "new machine keys" in refused.text
        assert post_report(collector.url, "veteran", _big("7.7@" + "e" * 12)).status_code == 202
        grown = db.stat().st_size + Path(f"{db}-wal").stat().st_size - before
        assert grown < 2 * budget, grown

        page = httpx.get(collector.url + "v1/rollouts?limit=7", headers=ADMIN_HEADERS).json()
        assert len(page["rollouts"]) == 7 and page["next"]
        rows, cursor = list(page["rollouts"]), page["next"]
        while cursor:
            page = httpx.get(collector.url + "v1/rollouts", params={"limit": 50,
                             "cursor": cursor}, headers=ADMIN_HEADERS).json()
            rows += page["rollouts"]
            cursor = page["next"]
        keys = [(r["channel"], r["release"]) for r in rows]
        assert keys == sorted(set(keys)) and ("beta", "7.7") in keys
        # the flood, the veteran (twice) and the first collector's machine
        assert sum(r["machines"] for r in rows) == codes.count(202) + 3
        for bad in ("limit=0", "limit=201", "limit=x", "cursor=nope"):
            answer = httpx.get(collector.url + "v1/rollouts?" + bad, headers=ADMIN_HEADERS)
            assert answer.status_code == 422, (bad, answer.text)
        shown = _release("rollout", "status", "--collector", collector.url,
                         "--admin-token-file", str(tmp_path / "tokens" / "admin"))
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count(" machines reporting;") == len(rows)
    finally:
        collector.stop()


def _closed(sockets: list[socket.socket], want: int) -> int:
    """How many of `sockets` the collector closed, waiting (with a deadline) for `want`."""
    end, gone = time.monotonic() + 30, set()
    while len(gone) < want and time.monotonic() < end:
        ready, _, _ = select.select([s for s in sockets if s not in gone], [], [], 0.5)
        for s in ready:
            try:
                if s.recv(1) == b"":
                    gone.add(s)
            except OSError:
                gone.add(s)
    return len(gone)


def _idle(source: str, port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def test_idle_connections_never_lock_out_the_admin_or_counted_machines(tmp_path):
    """#3: one address holds at most its share of connections, the oldest idle ones cut as it
    opens more; and when many addresses fill the table, the admin and the machines the
    collector counts still get answers while others hear 503."""
    db = tmp_path / "c.sqlite3"
    # a machine the collector has known for a week (a newcomer's key is not counted)
    known = FleetReport.model_validate({**_report("1.0@" + "a" * 12, "upgraded",
                                                  channel="beta"),
                                        "installation": machine_id("known")})
    assert Store(f"sqlite:///{db}").accept(
        known, known.model_dump_json(by_alias=True), datetime.now(UTC) - timedelta(days=7),
        10, public_key_text(machine_key("known")).strip()) == ("accepted", True)
    collector = Collector(tmp_path, f"sqlite:///{db}", None,
                          "--max-connections", "128", "--max-connections-per-address", "16")
    held: list[socket.socket] = []
    try:
        one = _idle("127.0.0.1", collector.port, 200)
        held += one
        assert _closed(one, 200 - 16) >= 200 - 16  # cut by the collector, not by us
        assert httpx.get(collector.url + "v1/rollouts", headers=ADMIN_HEADERS).status_code == 200

        for host in range(2, 10):  # eight more addresses, 16 idle connections each
            held += _idle(f"127.0.0.{host}", collector.port, 16)
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            answer = client.get(collector.url + "v1/rollouts", headers=ADMIN_HEADERS)
            assert answer.status_code == 200, answer.text
            answer = post_report(collector.url, "known", _report("1.1@" + "a" * 12,
                                                                 channel="beta"))
            assert answer.status_code == 202, answer.text
            stranger = post_report(collector.url, "stranger", _report("1.1@" + "a" * 12,
                                                                      channel="beta"))
            assert stranger.status_code == 503 and "busy" in stranger.text
            assert client.get(collector.url + "openapi.json").status_code == 503
    finally:
        for s in held:
            s.close()
        collector.stop()
