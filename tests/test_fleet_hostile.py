"""The collector against the attacks of the hostile review of issue 38, each sent for real on
loopback to a real collector (uvicorn on 127.0.0.1): vouched connections that lock the admin
out, a proxy's headers, a flood of new keys, a crafted cursor, an old-format replay after
pruning, unbounded metric labels, and a collector whose pages never end."""

import base64
import http.client
import json
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from test_fleet_abuse import ADMIN_HEADERS, _big, _closed, _idle, _release, _report, _signed

from greenlight.channels import FleetReport, public_key_text
from greenlight.release.fleet import Store
from greenlight.release.fleet._conns import Connections

from conftest import ADMIN, Collector, machine_id, machine_key, post_report


def _veteran(db: str, name: str, days: int = 7) -> None:
    """Make `name` a machine key the collector has known for `days` (by a real report)."""
    report = FleetReport.model_validate({**_report("1.0@" + "c" * 12, "upgraded",
                                                   channel="beta"),
                                         "installation": machine_id(name)})
    said = Store(db).accept(report, report.model_dump_json(by_alias=True),
                            datetime.now(UTC) - timedelta(days=days), 10,
                            public_key_text(machine_key(name)).strip())
    assert said == ("accepted", True)


def _send(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> int | None:
    """One request on a kept-alive connection: its status, or None when the collector closed
    it (cut, or busy)."""
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        answer.read()
        if answer.will_close:
            conn.close()
        return answer.status
    except (OSError, http.client.HTTPException):
        conn.close()
        return None


def test_a_fleet_token_holder_cannot_lock_the_admin_out_with_vouched_connections(tmp_path):
    """#1: the same signed report sent on every connection (answered 200, a duplicate), from a
    key known for a week and from one minted for the occasion, kept alive with cheap
    requests: a duplicate, a newcomer's report and a third connection of one key vouch for
    nothing, so the table still cuts the attacker's idle connections and the admin gets in."""
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    _veteran(db, "stolen")
    collector = Collector(tmp_path, db, None, "--max-connections", "64")
    held: list[http.client.HTTPConnection] = []
    try:
        key = "1.1@" + "a" * 12
        for name in ("stolen", "minted"):
            body, headers = _signed(name, _report(key, channel="beta", id="d" * 32,
                                                  sent=datetime.now(UTC).isoformat()))
            for _ in range(100):
                conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=30)
                status = _send(conn, "POST", "/v1/reports", body, headers)
                assert status in (200, 202, 503, None), status
                if conn.sock is not None:  # kept alive (http.client would open another)
                    held.append(conn)
        alive = [c for c in held if c.sock is not None
                 and _send(c, "GET", "/keep-alive") == 404]
        assert alive, "the attacker held no connection at all"
        admin = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=30)
        assert _send(admin, "GET", "/v1/rollouts", headers=ADMIN_HEADERS) == 200
        admin.close()
    finally:
        for conn in held:
            conn.close()
        collector.stop()


def test_behind_a_proxy_the_admins_connection_is_vouched_for_itself(tmp_path):
    """#3: a proxy's X-Forwarded-For rewrites the request's client (uvicorn trusts
    127.0.0.1), yet the vouch is the connection's own: the admin's kept-alive connection
    outlives a flood of idle ones that fill the table."""
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--max-connections", "64")
    held: list[socket.socket] = []
    try:
        proxied = {**ADMIN_HEADERS, "X-Forwarded-For": "203.0.113.9",
                   "X-Forwarded-Proto": "https"}
        admin = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=30)
        assert _send(admin, "GET", "/v1/rollouts", headers=proxied) == 200
        held += _idle("127.0.0.1", collector.port, 100)
        assert _closed(held, 100 + 1 - 64) >= 100 + 1 - 64  # the collector made room
        assert _send(admin, "GET", "/v1/rollouts", headers=proxied) == 200
        admin.close()
    finally:
        for s in held:
            s.close()
        collector.stop()


def test_a_loopback_collector_behind_a_proxy_holds_more_than_64_connections(tmp_path):
    """#3: every connection of a collector behind a proxy comes from one address: by
    default the collector does not bound it (the proxy bounds its clients), so 100
    kept-alive connections from 127.0.0.1 are all answered twice (404: nothing there)."""
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}")
    conns = [http.client.HTTPConnection("127.0.0.1", collector.port, timeout=30)
             for _ in range(100)]
    try:
        assert [_send(c, "GET", "/keep-alive") for c in conns] == [404] * 100
        assert [_send(c, "GET", "/keep-alive") for c in conns] == [404] * 100
    finally:
        for c in conns:
            c.close()
        collector.stop()


@pytest.mark.exhaustive  # a long run: make test-exhaustive
def test_a_flood_of_new_keys_never_locks_out_a_new_machine(tmp_path):
    """#4: one new key's reports stop at its own share of the newcomers' budget, and when
    minted keys have spent the whole budget, a new machine's first (small) report is still
    taken and its key enrolled; a new key's large first report is not."""
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--enrol-rate", "100000")
    try:
        alone = [post_report(collector.url, "greedy", _big(f"1.{i}@" + "e" * 12))
                 for i in range(10)]
        assert [a.status_code for a in alone[:7]] == [202] * 7, [a.text for a in alone]
        assert alone[-1].status_code == 429 and "KiB of reports" in alone[-1].text

        def flood(n: int) -> list[int]:
            return [post_report(collector.url, f"mint{n}", _big(f"2.{i}@" + "e" * 12)
                                ).status_code for i in range(8)]

        with ThreadPoolExecutor(8) as pool:
            codes = [c for batch in pool.map(flood, range(160)) for c in batch]
        assert 429 in codes
        late = post_report(collector.url, "late", _big("7.7@" + "e" * 12))
        assert late.status_code == 429 and "new machine keys" in late.text, late.text
        newbie = post_report(collector.url, "newbie", _report("7.7@" + "e" * 12,
                                                              channel="beta"))
        assert newbie.status_code == 202, newbie.text
        listed = httpx.get(collector.url + "v1/machines", headers=ADMIN_HEADERS).json()
        ids = {m["id"] for m in listed["machines"]}
        assert machine_id("newbie") in ids and machine_id("late") not in ids
    finally:
        collector.stop()


def test_a_crafted_cursor_is_refused_in_one_line(tmp_path):
    """#8: a cursor nested thousands deep, or long, is refused (422, one line), never a
    500."""
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}")
    try:
        deep = base64.urlsafe_b64encode(b"[" * 5000).decode()
        for path in ("v1/rollouts", "v1/machines"):
            for cursor in (deep, "A" * 5000):
                answer = httpx.get(collector.url + path, params={"cursor": cursor},
                                   headers=ADMIN_HEADERS)
                assert answer.status_code == 422, answer.text
                assert answer.json() == {"error": "not a cursor this collector gave"}
    finally:
        collector.stop()


def test_an_old_format_report_is_not_counted_again_once_its_first_copy_is_pruned(tmp_path):
    """#9: a report without `sent` is counted once by its body; once retention prunes its
    first copy, a replay is refused (its signed `at` is older than the retention), while a
    fresh one is still taken once."""
    db = tmp_path / "c.sqlite3"
    old = {**_report("1.0@" + "c" * 12, channel="beta",
                     at=(datetime.now(UTC) - timedelta(days=3)).isoformat()),
           "installation": machine_id("legacy")}
    report = FleetReport.model_validate(old)
    assert Store(f"sqlite:///{db}").accept(
        report, report.model_dump_json(by_alias=True), datetime.now(UTC) - timedelta(days=3),
        10, public_key_text(machine_key("legacy")).strip()) == ("accepted", True)
    collector = Collector(tmp_path, f"sqlite:///{db}", None, "--retention", "1d",
                          "--tick", "0.2")
    try:
        end = time.monotonic() + 30
        with sqlite3.connect(db) as c:
            while c.execute("select count(*) from reports").fetchone()[0]:
                assert time.monotonic() < end, "the collector did not prune"
                time.sleep(0.05)
        body, headers = _signed("legacy", old)  # the captured report, replayed
        answer = httpx.post(collector.url + "v1/reports", content=body, headers=headers)
        assert answer.status_code == 422 and "without `sent`" in answer.text, answer.text
        fresh = _signed("legacy", _report("1.0@" + "c" * 12, channel="beta"))
        assert [httpx.post(collector.url + "v1/reports", content=fresh[0],
                           headers=fresh[1]).status_code for _ in range(2)] == [202, 200]
    finally:
        collector.stop()


def test_the_report_metric_counts_established_keys_under_bounded_labels(tmp_path):
    """#9: `greenlight_reports` counts no report of a key minted for the occasion, and
    without --repo its (channel, release) labels stop at 64 pairs, the rest "other"."""
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    names = [f"old{i}" for i in range(8)]
    for name in names:
        _veteran(db, name)
    collector = Collector(tmp_path, db)
    try:
        assert post_report(collector.url, "minted", _report("5.5@" + "f" * 12,
                                                            channel="beta")).status_code == 202
        for i, name in enumerate(names):
            for j in range(9):
                answer = post_report(collector.url, name, _report(
                    f"6.{i}.{j}@" + "f" * 12, channel="beta"))
                assert answer.status_code == 202, answer.text
        text = httpx.get(collector.url + "metrics", headers=ADMIN_HEADERS).text
        lines = [line for line in text.splitlines()
                 if line.startswith("greenlight_reports_total{")]
        assert not any('release="5.5"' in line for line in lines)
        assert len(lines) == 65 and any('release="other"' in line for line in lines), lines
    finally:
        collector.stop()


def _pages(next_cursor: object) -> ThreadingHTTPServer:
    """A collector (a real HTTP server on loopback) whose `/v1/rollouts` pages never end."""
    served = [0]

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            served[0] += 1
            body = json.dumps({"schema": "greenlight.rollouts/1", "rollouts": [],
                               "next": next_cursor if isinstance(next_cursor, str)
                               else f"page{served[0]}",
                               "machines": {"enrolment": "open"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.exhaustive  # a long run: make test-exhaustive
def test_rollout_status_stops_when_a_collectors_pages_never_end(tmp_path):
    """#10: a collector that names the same page again, or names a new one forever, gets
    one line from `release rollout status` (exit 1 or so), never a loop."""
    token = tmp_path / "admin"
    token.write_text(ADMIN + "\n")
    for cursor in ("same", None):
        server = _pages(cursor)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            done = _release("rollout", "status", "--collector", url,
                            "--admin-token-file", str(token))
            assert done.returncode != 0 and "page cursor twice or over" in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        finally:
            server.shutdown()
            server.server_close()


class _Peer:
    """A connection as the table holds it: only what it needs (cut)."""

    def __init__(self) -> None:
        self.closed = False

    def cut(self) -> None:
        self.closed = True


def test_making_room_takes_the_oldest_idle_connection_without_a_scan():
    """#11: with the front of the table busy or vouched, each new connection cuts the oldest
    idle unproven one, which the table holds apart (its first in line): the busy and vouched
    ones are never in that line, so a cut never scans past them."""
    table = Connections(1024)
    busy = [_Peer() for _ in range(900)]
    for i, peer in enumerate(busy):
        assert table.admit(("127.0.0.1", i), peer)
        table.working(peer)
    vouched = [_Peer() for _ in range(4)]
    for i, peer in enumerate(vouched):
        assert table.admit(("127.0.0.2", i), peer)
        assert table.vouch(peer, "k" if i < 2 else "j") is True
    assert table.vouch(_Peer(), "k") is False  # not in the table
    extra = _Peer()
    assert table.admit(("127.0.0.2", 9), extra) and table.vouch(extra, "k") is False  # 2 a key
    idle = [_Peer() for _ in range(5000)]
    for i, peer in enumerate(idle):
        assert table.admit(("127.0.0.3", i), peer)
        assert sum(len(t) for t in table.tiers) + len(table.busy) == len(table.open)
    assert not any(p.closed for p in busy + vouched)
    assert extra.closed and [p.closed for p in idle] == [True] * (5000 - 120) + [False] * 120
    for peer in busy:  # answered: idle, and cut in their turn
        table.done(peer)
    assert table.admit(("127.0.0.4", 0), _Peer()) and idle[-120].closed
