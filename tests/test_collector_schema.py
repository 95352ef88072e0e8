"""The collector's schema is versioned (Alembic): a database an earlier collector made is
migrated by `release collector migrate` with its reports intact, and until then the
collector refuses it in one line; a newer schema is served only when it says this
collector's revision may still serve it."""

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from oldtrees import old_tree

from conftest import ADMIN, FLEET, Collector, free_port, machine_id, post_report, until, wait_http

RELEASE = str(Path(sys.executable).parent / "release")
PREVIOUS_ROUND = "6ebc7a9"
"""the last collector before machine keys, cohorts and feedback: its reports table alone"""
UNVERSIONED = "5274522"
"""the last collector before the schema was versioned: keys, cohorts, feedback"""


def _rows(url: str, columns: str = "id, installation, channel, release, release_key, "
                                   "outcome, body") -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(
                f"SELECT {columns} FROM reports ORDER BY id"))]
    finally:
        engine.dispose()


def _machines(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            if not sa.inspect(c).has_table("machines"):
                return []
            return [tuple(r) for r in c.execute(sa.text(
                "SELECT id, public_key, state, source FROM machines ORDER BY enrolled, id"))]
    finally:
        engine.dispose()


def _old_collector(tmp: Path, env: dict[str, str], db: str,
                   port: int | None = None) -> subprocess.Popen:
    tokens = tmp / "tokens"
    tokens.mkdir(exist_ok=True)
    (tokens / "fleet").write_text(FLEET + "\n")
    (tokens / "admin").write_text(ADMIN + "\n")
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from greenlight.release.cli import main; main()", "collector",
         "--db", db, "--port", str(port), "--fleet-token-file", str(tokens / "fleet"),
         "--admin-token-file", str(tokens / "admin")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_http(f"http://127.0.0.1:{port}/v1/rollouts", proc, "the old collector")
    proc.url = f"http://127.0.0.1:{port}/"  # type: ignore[attr-defined]
    return proc


def _reports_of_the_previous_round(url: str, at: datetime) -> None:
    """Unsigned reports, as machines sent them before they had keys."""
    for i in range(12):
        report = {"schema": "greenlight.report/1", "installation": f"{i:032x}",
                  "at": at.isoformat(), "channel": "stable",
                  "outcome": "rolled-back" if i % 4 == 0 else "upgraded",
                  "release": "1.1", "release_key": "1.1@" + "ab" * 16,
                  "failed_checks": [{"name": "api-auth", "summary": "403"}] if i % 4 == 0
                  else []}
        answer = httpx.post(url + "v1/reports", content=json.dumps(report),
                            headers={"Authorization": f"Bearer {FLEET}"}, timeout=10)
        assert answer.status_code == 202, answer.text


def _signed_reports(url: str, at: datetime) -> None:
    """Signed reports with a cohort, each key enrolling itself (open enrolment)."""
    for i in range(12):
        report = {"schema": "greenlight.report/1", "installation": machine_id(f"m{i}"),
                  "at": at.isoformat(), "sent": at.isoformat(), "channel": "stable",
                  "outcome": "rolled-back" if i % 4 == 0 else "upgraded",
                  "release": "1.1", "release_key": "1.1@" + "ab" * 6,
                  "cohort": "debian-12/x86_64/acme", "id": f"{i:032x}",
                  "failed_checks": [{"name": "api-auth", "summary": "403"}] if i % 4 == 0
                  else []}
        answer = post_report(url, f"m{i}", report)
        assert answer.status_code == 202, answer.text


@pytest.mark.parametrize("commit", [PREVIOUS_ROUND, UNVERSIONED])
def test_an_earlier_collectors_database_is_migrated_with_its_reports_intact(
        tmp_path, database, commit):
    env = old_tree(commit, tmp_path)
    old = _old_collector(tmp_path, env, database)
    try:
        send = _reports_of_the_previous_round if commit == PREVIOUS_ROUND else _signed_reports
        send(old.url, datetime.now(UTC) - timedelta(minutes=5))  # type: ignore[attr-defined]
    finally:
        old.terminate()
        old.wait(timeout=20)
    before = _rows(database)
    assert len(before) == 12

    tokens = ["--fleet-token-file", str(tmp_path / "tokens" / "fleet"),
              "--admin-token-file", str(tmp_path / "tokens" / "admin")]
    refused = subprocess.run([RELEASE, "collector", "--db", database, *tokens],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 5, refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "before the schema was versioned" in refused.stderr
    assert "release collector migrate --db" in refused.stderr

    migrated = subprocess.run([RELEASE, "collector", "migrate", "--db", database],
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    again = subprocess.run([RELEASE, "collector", "migrate", "--db", database],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "the collector's schema is at "\
        "0003", again.stdout
    assert _rows(database) == before  # every report, as it was
    keys = _machines(database)
    assert len(keys) == (0 if commit == PREVIOUS_ROUND else 12)

    collector = Collector(tmp_path, database)
    try:
        if commit == UNVERSIONED:  # its machines and their reports count as they did
            row = collector.rollouts()[("stable", "1.1")]
            assert row["machines"] == 12, row
            assert row["outcomes"] == {"upgraded": 9, "rolled-back": 3}, row
        fresh = datetime.now(UTC)
        report = {"schema": "greenlight.report/1", "installation": machine_id("new"),
                  "at": fresh.isoformat(), "sent": fresh.isoformat(), "channel": "stable",
                  "outcome": "upgraded", "release": "1.2", "id": "f" * 32}
        assert post_report(collector.url, "new", report).status_code == 202
    finally:
        collector.stop()
    assert _rows(database)[:12] == before and len(_rows(database)) == 13
    assert _machines(database)[:len(keys)] == keys


def test_a_newer_schema_is_served_only_when_it_says_this_collector_may(tmp_path):
    db = tmp_path / "c.sqlite3"
    url = f"sqlite:///{db}"
    made = subprocess.run([RELEASE, "collector", "migrate", "--db", url], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0 and "(the database was empty)" in made.stdout, made.stdout
    engine = sa.create_engine(url)
    with engine.begin() as c:  # a later collector's additive revision
        c.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    collector = Collector(tmp_path, url)
    collector.stop()
    said = collector.proc.stdout.read()
    assert "newer than this collector's 0003, which it still serves" in said, said

    engine = sa.create_engine(url)
    with engine.begin() as c:  # one that drops what this collector reads
        c.execute(sa.text("UPDATE schema_readers SET oldest = '0099'"))
    engine.dispose()
    tokens = ["--fleet-token-file", str(tmp_path / "tokens" / "fleet"),
              "--admin-token-file", str(tmp_path / "tokens" / "admin")]
    refused = subprocess.run([RELEASE, "collector", "--db", url, *tokens],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 5 and refused.stderr.count("\n") == 1, refused.stderr
    assert "upgrade this collector" in refused.stderr
    migrate = subprocess.run([RELEASE, "collector", "migrate", "--db", url],
                             capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 5 and "newer than this collector knows" in migrate.stderr


@pytest.mark.exhaustive  # `make test-exhaustive`, which CI runs too: make test's budget
def test_a_rolling_upgrade_answers_every_report_throughout(tmp_path, postgres):
    """Two replicas of the last unversioned collector behind nginx on PostgreSQL, machines
    reporting all along: the database is migrated under them, then each replica is replaced
    by today's collector, one at a time. Every report is answered 2xx and kept."""
    from bench.balancer import balancer

    database = postgres
    env = old_tree(UNVERSIONED, tmp_path)
    ports = [free_port(), free_port()]
    running = {p: _old_collector(tmp_path, env, database, p) for p in ports}
    answers: list[tuple[str, str, int]] = []
    stop = threading.Event()

    def machines(url: str) -> None:
        n = 0
        while not stop.is_set() or n < 20:
            name, now = f"m{n % 100}", datetime.now(UTC).isoformat()
            report = {"schema": "greenlight.report/1", "at": now, "sent": now,
                      "channel": "stable", "outcome": "upgraded", "release": "1.1",
                      "id": f"{n:032x}"}
            answers.append((machine_id(name), report["id"],
                            post_report(url, name, report).status_code))
            n += 1

    def ten_more() -> None:  # reports answered, ten more than now
        n = len(answers) + 10
        until(lambda: len(answers) >= n, 60, "reports answered")

    try:
        with balancer(ports, tmp_path / "nginx") as url:
            sender = threading.Thread(target=machines, args=(url,))
            sender.start()
            until(lambda: len(answers) >= 20, 60, "reports answered")
            migrated = subprocess.run([RELEASE, "collector", "migrate", "--db", database],
                                      capture_output=True, text=True, timeout=60)
            assert migrated.returncode == 0, migrated.stderr
            for port in ports:  # one at a time: the other answers meanwhile
                ten_more()
                old = running.pop(port)
                old.terminate()
                old.wait(timeout=20)
                running[port] = Collector(tmp_path, database, port).proc
                ten_more()
            stop.set()
            sender.join(timeout=60)
    finally:
        stop.set()
        for proc in running.values():
            proc.terminate()
            proc.wait(timeout=20)
        stored = {(m, r) for m, r, *_ in _rows(database, "installation, report_id")}
    assert len(answers) > 40
    assert {status for _, _, status in answers} <= {200, 202}, answers
    assert {(m, r) for m, r, _ in answers} <= stored

