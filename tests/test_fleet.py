"""Fleet reports: machines queue a report per transaction and send it to a real collector
(uvicorn on 127.0.0.1, SQLite or a real PostgreSQL started here), which counts distinct
machines per release and outcome."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from greenlight.release import init_repository, publish

from conftest import (
    ADMIN,
    FLEET,
    MARKER_PRODUCT,
    Collector,
    builtin_server,
    free_port,
    machine_id,
    post_report,
    wait_state,
)

BIN = Path(sys.executable).parent


class Machine:
    def __init__(self, tmp: Path, name: str, repo, server, collector_url: str,
                 queue_max: int = 200, label: str | None = None) -> None:
        self.path = tmp / name
        done = self.updater("init", "--repo", server.url, "--trust",
                            str(repo.metadata_dir / "1.root.json"))
        assert done.returncode == 0, done.stderr
        (self.path / "data").mkdir()
        (self.path / "data" / "fleet-token").write_text(FLEET + "\n")
        with (self.path / "greenlight.toml").open("a") as f:
            f.write(MARKER_PRODUCT + f'\n[report]\nurl = "{collector_url}"\n'
                                     f'queue_max = {queue_max}\n'
                                     + (f'cohort_label = "{label}"\n' if label else ""))

    def updater(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updater"), *args, "--root", str(self.path)],
                              capture_output=True, text=True, timeout=120)

    def queued(self) -> list[Path]:
        return sorted((self.path / "state" / "reports").glob("*.json"))


@pytest.fixture
def fleet(tmp_path, builds):
    repo = init_repository(tmp_path / "repo")
    with builtin_server(repo.path) as server:
        yield tmp_path, repo, server, builds


def test_machines_report_and_the_collector_counts_distinct_machines(fleet):
    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'collector.sqlite3'}")
    try:
        machines = [Machine(tmp, f"m{i}", repo, server, collector.url) for i in range(3)]
        publish(repo, "stable", "1.0", builds("1.0"))
        for m in machines:
            assert m.updater("upgrade").returncode == 0
        publish(repo, "stable", "1.1", builds("1.1", "refuse-ui-token"))
        for m in machines[:2]:
            assert m.updater("upgrade").returncode == 20
        assert all(not m.queued() for m in machines)  # every report was delivered
        seen = collector.rollouts()
        assert seen[("stable", "1.0")]["outcomes"] == {"upgraded": 3}
        bad = seen[("stable", "1.1")]
        assert bad["machines"] == 2 and bad["outcomes"] == {"rolled-back": 2}
        assert bad["checks"][0]["name"] == "marker" and bad["checks"][0]["reports"] == 2
        assert "exited 1" in bad["checks"][0]["example"]

        # The dashboard's page holds no data: it asks the admin endpoint, which needs the
        # admin token; reports need the fleet's.
        page = httpx.get(collector.url)
        assert page.status_code == 200 and "marker" not in page.text
        assert httpx.get(collector.url + "v1/rollouts").status_code == 401
        assert httpx.get(collector.url + "v1/rollouts",
                         headers={"Authorization": f"Bearer {FLEET}"}).status_code == 401
        body = json.dumps({"schema": "greenlight.report/1"}).encode()
        assert post_report(collector.url, "x", body, token=ADMIN).status_code == 401
        refused = post_report(collector.url, "x", body)
        assert refused.status_code == 422 and "greenlight.report/1" in refused.text
    finally:
        collector.stop()


def test_reports_from_one_installation_are_rate_limited(fleet):
    tmp, repo, server, builds = fleet
    from greenlight.release.fleet import RATE

    collector = Collector(tmp, f"sqlite:///{tmp / 'collector.sqlite3'}")
    try:
        report = {"schema": "greenlight.report/1",
                  "at": "2026-11-22T10:00:00Z", "channel": "beta", "outcome": "rolled-back",
                  "release": "9.9"}
        codes = [post_report(collector.url, "rated", {**report, "id": f"{i:032x}"}).status_code
                 for i in range(RATE + 2)]
        assert codes == [202] * RATE + [429, 429]
        assert collector.rollouts()[("beta", "9.9")]["machines"] == 1  # one machine, not 10
    finally:
        collector.stop()


def test_reports_queue_while_the_collector_is_down_and_never_block(fleet):
    tmp, repo, server, builds = fleet
    port = free_port()
    m = Machine(tmp, "m", repo, server, f"http://127.0.0.1:{port}/", queue_max=2)
    publish(repo, "stable", "1.0", builds("1.0"))
    assert m.updater("upgrade").returncode == 0  # nobody listens: the upgrade goes through
    assert len(m.queued()) == 1
    for version in ("1.1", "1.2"):
        publish(repo, "stable", version, builds(version))
        assert m.updater("upgrade").returncode == 0
    assert len(m.queued()) == 2  # bounded: the oldest went first
    assert json.loads(m.queued()[-1].read_text())["release"] == "1.2"

    backoff = m.path / "state" / "reports" / ".backoff"
    assert json.loads(backoff.read_text())["delay"] >= 5  # the failures set a back-off
    collector = Collector(tmp, f"sqlite:///{tmp / 'collector.sqlite3'}", port)
    try:
        backoff.write_text(json.dumps({"delay": 5, "next": time.time() + 3600}))
        assert m.updater("upgrade").returncode == 0
        assert len(m.queued()) == 2  # still inside the back-off: nothing is tried
        backoff.write_text(json.dumps({"delay": 5, "next": 0}))  # the back-off has passed
        assert m.updater("status").returncode == 0
        assert len(m.queued()) == 2  # a read-only command never touches the network
        assert m.updater("upgrade").returncode == 0  # up to date, and it sends the outbox
        assert m.queued() == []
        assert set(collector.rollouts()) == {("stable", "1.1"), ("stable", "1.2")}
    finally:
        collector.stop()


def test_two_collectors_share_one_postgresql(fleet, postgres):
    tmp, repo, server, builds = fleet
    first, second = Collector(tmp, postgres), Collector(tmp, postgres)
    try:
        publish(repo, "stable", "1.0", builds("1.0"))
        machines = [Machine(tmp, f"m{i}", repo, server, c.url)
                    for i, c in enumerate((first, second, first, second))]
        for m in machines:
            assert m.updater("upgrade").returncode == 0
            assert m.queued() == []
        for collector in (first, second):  # either answers for all: nothing lives in one
            seen = collector.rollouts()
            assert seen[("stable", "1.0")]["machines"] == 4
            assert seen[("stable", "1.0")]["outcomes"] == {"upgraded": 4}
    finally:
        first.stop()
        second.stop()


def test_a_refused_token_is_said_everywhere_and_the_report_waits(fleet):
    """A wrong fleet token: the report stays queued, the refusal is in status.json's
    last_error and in `updater status`, and it goes once the token is right."""
    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'collector.sqlite3'}", free_port())
    try:
        m = Machine(tmp, "m", repo, server, collector.url)
        (m.path / "data" / "fleet-token").write_text("wrong-token\n")
        publish(repo, "stable", "1.0", builds("1.0"))
        done = m.updater("upgrade")
        assert done.returncode == 0, done.stderr  # the upgrade itself went through
        assert len(m.queued()) == 1  # not dropped
        status = json.loads((m.path / "state" / "status.json").read_text())
        assert "the collector refused the fleet token (HTTP 401" in status["last_error"]
        assert "wrong-token" not in status["last_error"]
        shown = m.updater("status")
        assert "fleet reports" in shown.stdout and "refused the fleet token" in shown.stdout
        assert collector.rollouts() == {}
        (m.path / "data" / "fleet-token").write_text(FLEET + "\n")
        (m.path / "state" / "reports" / ".backoff").unlink()  # the back-off has passed
        publish(repo, "stable", "1.1", builds("1.1"))
        assert m.updater("upgrade").returncode == 0
        assert m.queued() == []
        assert set(collector.rollouts()) == {("stable", "1.0"), ("stable", "1.1")}
        status = json.loads((m.path / "state" / "status.json").read_text())
        assert status["last_error"] is None
    finally:
        collector.stop()


HOSTILE = "x\x1b[2J\x1b[H\x1b]0;pwned\x07"


def _report(**fields: object) -> dict:
    return {"schema": "greenlight.report/1", "installation": "1" * 32,
            "at": "2026-11-22T10:00:00Z", "channel": "beta", "outcome": "rolled-back",
            "release": "9.9", **fields}


def test_what_a_machine_writes_cannot_be_weaponised(fleet):
    """Report text reaches a database, a signed halt reason, terminals and pages: every field
    is bounded, names come from a narrow set, free text is one escaped line, a body is cut
    while it is read, and what the release engineer's terminal shows holds no control
    character."""
    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'collector.sqlite3'}")
    def post(report: dict) -> int:
        return post_report(collector.url, "writer", report).status_code

    def raw(content: object) -> int:
        return httpx.post(collector.url + "v1/reports", content=content, timeout=30,
                          headers={"Authorization": f"Bearer {FLEET}"}).status_code

    try:
        forged = "\nupdater: stable: up to date at 9.9" + HOSTILE
        assert post(_report(failed_checks=[{"name": "ui", "summary": forged}])) == 202
        assert post(_report(failed_checks=[{"name": HOSTILE, "summary": "s"}])) == 422
        assert post(_report(channel="c" * 70)) == 422  # a 500 on PostgreSQL once
        assert post(_report(release_key="9.9@" + "a" * 200)) == 422
        assert post(_report(failed_checks=[{"name": "a", "summary": "s"}] * 51)) == 422
        assert raw(b"{" + b" " * 70_000 + b"}") == 413

        def chunks():  # no Content-Length: cut while it is read
            for _ in range(100):
                yield b" " * 4096

        assert raw(chunks()) == 413
        stored = collector.rollouts()[("beta", "9.9")]["checks"][0]["example"]
        assert "\x1b" not in stored and "\n" not in stored and "\\x1b[2J" in stored
        shown = subprocess.run([str(BIN / "release"), "rollout", "status", "--collector",
                                collector.url, "--admin-token-file", str(tmp / "tokens" / "admin")],
                               capture_output=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert b"\x1b" not in shown.stdout and b"\x07" not in shown.stdout
        assert not any(line.lstrip().startswith(b"updater:")
                       for line in shown.stdout.splitlines())
    finally:
        collector.stop()


def test_a_signed_halt_reason_is_one_escaped_line_everywhere():
    """The collector builds the reason it signs from an escaped excerpt, and a machine that
    reads a halted state says it as one escaped line, whoever signed it."""
    from datetime import UTC, datetime

    from greenlight.channels import (
        ChannelFile,
        ComponentArtifact,
        HaltRule,
        Rollout,
        RolloutPlan,
        RolloutState,
        effective_rollout,
    )
    from greenlight.release.fleet._judge import Evidence, RolloutPosition, judge

    now = datetime(2026, 11, 22, tzinfo=UTC)
    position = RolloutPosition("9.9", (5, 100), 0, 3600.0, HaltRule(rollbacks=2), False, now)
    verdict = judge(position, Evidence(5, 5, (HOSTILE, "\nupdater: forged" + HOSTILE)), now)
    assert verdict.action == "halt" and verdict.reason is not None
    assert verdict.reason.isprintable(), verdict.reason
    plan = RolloutPlan(steps=[5, 100], soak=3600, started_at=now)
    carried = ChannelFile(
        channel="beta", release="9.9", published_at=now,
        components={"core": ComponentArtifact(version="9.9", target="artifacts/core/9.9/c",
                                              sha256="a" * 64, length=1)},
        rollout=Rollout(percent=5, plan=plan))
    state = RolloutState(channel="beta", release=carried.identity.key, step=0, halted=True,
                         reason="\nupdater: forged" + HOSTILE, by="collector", at=now)
    said = effective_rollout(carried, state, now)
    assert said is not None and said.halted and said.reason is not None
    assert said.reason.isprintable() and "\\x1b[2J" in said.reason, said.reason


def test_every_line_written_is_escaped_once():
    from greenlight.channels import terminal_lines

    assert terminal_lines(HOSTILE) == "x\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07"
    assert terminal_lines("a\nb\r") == "a\nb\\r"
    assert terminal_lines("a\nb", one_line=True) == "a\\nb"
    assert terminal_lines('{"body": "unreadable\\n"}') == '{"body": "unreadable\\n"}'


def test_the_collector_documents_its_api_and_exports_metrics(fleet):
    """`/openapi.json` describes the report API from the wire format's own model, and
    `/metrics` (the admin token) counts reports by outcome and refusals by status, in
    Prometheus's text format."""
    import jsonschema

    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'collector.sqlite3'}")
    try:
        api = httpx.get(collector.url + "openapi.json", timeout=10).json()
        assert api["openapi"].startswith("3.1")
        post = api["paths"]["/v1/reports"]["post"]
        assert set(post["responses"]) == {"200", "202", "401", "403", "413", "422", "429",
                                          "503"}
        schemas = api["components"]["schemas"]
        # The documented schema accepts a real report and refuses a hostile name.
        resolver = {"$ref": "#/components/schemas/FleetReport", "components": api["components"]}
        good = _report(failed_checks=[{"name": "ui", "summary": "s"}])
        good["installation"] = machine_id("documented")
        jsonschema.validate(good, resolver)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(_report(failed_checks=[{"name": HOSTILE, "summary": "s"}]),
                                resolver)
        assert "ReportedCheck" in schemas

        # counted in the metric: a key the operator loaded (a newcomer's report is not)
        from greenlight.channels import public_key_text

        from conftest import machine_key

        loaded = httpx.post(collector.url + "v1/machines/load", json={"keys": [
            public_key_text(machine_key("documented")).strip()]},
            headers={"Authorization": f"Bearer {ADMIN}"})
        assert loaded.status_code == 200, loaded.text
        assert post_report(collector.url, "newcomer", {
            **good, "installation": machine_id("newcomer")}).status_code == 202
        assert post_report(collector.url, "documented", good).status_code == 202
        assert post_report(collector.url, "documented", _report(channel="c" * 70)
                           ).status_code == 422
        assert httpx.get(collector.url + "metrics").status_code == 401
        text = httpx.get(collector.url + "metrics",
                         headers={"Authorization": f"Bearer {ADMIN}"}).text
        assert ('greenlight_reports_total{channel="beta",outcome="rolled-back",release="9.9"} '
                '1.0') in text
        assert 'greenlight_reports_refused_total{status="422"} 1.0' in text
        assert "greenlight_request_seconds_bucket" in text
        assert FLEET not in text and ADMIN not in text
    finally:
        collector.stop()


def _machines(collector: Collector, state: str | None = None) -> dict:
    answer = httpx.get(collector.url + "v1/machines" + (f"?state={state}" if state else ""),
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "release"), *args], capture_output=True, text=True,
                          timeout=60)


def test_a_machine_is_known_by_its_own_key(fleet):
    """`updater init` makes the machine's key pair (the private key 0600 in state/); its
    reports are signed with it and counted under the key's id. A body claiming another
    machine's id, an unsigned body, and a body changed after signing are refused."""
    import stat

    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'collector.sqlite3'}")
    try:
        m = Machine(tmp, "m", repo, server, collector.url)
        key = m.path / "state" / "machine-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        identity = json.loads(m.updater("identity", "--json").stdout)
        assert m.updater("identity", "--key").stdout.strip() == identity["key"]
        publish(repo, "stable", "1.0", builds("1.0"))
        assert m.updater("upgrade").returncode == 0 and m.queued() == []
        listed = _machines(collector)["machines"]
        assert [(x["id"], x["state"], x["source"]) for x in listed] == [
            (identity["id"], "active", "open")]
        assert collector.rollouts()[("stable", "1.0")]["machines"] == 1

        claimed = json.dumps({**_report(), "installation": identity["id"]}).encode()
        refused = post_report(collector.url, "thief", claimed)  # signed by another key
        assert refused.status_code == 422 and "is not the id of the key" in refused.text
        unsigned = httpx.post(collector.url + "v1/reports", content=claimed,
                              headers={"Authorization": f"Bearer {FLEET}"})
        assert unsigned.status_code == 401 and "unsigned" in unsigned.text
        from greenlight.channels import sign_body

        from conftest import machine_key

        headers = sign_body(machine_key("thief"), b"{}")  # a signature of another body
        changed = httpx.post(collector.url + "v1/reports", content=claimed,
                             headers={"Authorization": f"Bearer {FLEET}", **headers})
        assert changed.status_code == 401 and "does not verify" in changed.text
        assert collector.rollouts()[("stable", "1.0")]["machines"] == 1
    finally:
        collector.stop()


def test_enrolment_by_approval_by_loaded_keys_and_revocation(fleet):
    """approved: a new key's reports are kept but count for nothing until an admin approves
    it; preauthorized: only the keys the operator loaded may report; a revoked key is
    refused and what it sent stops counting. Through `release machines`."""
    from greenlight.channels import public_key_text
    from greenlight.release.fleet import Store

    from conftest import machine_key

    tmp, repo, server, builds = fleet
    db = f"sqlite:///{tmp / 'approved.sqlite3'}"
    admin = ["--admin-token-file", str(tmp / "tokens" / "admin")]
    collector = Collector(tmp, db, None, "--enrolment", "approved")
    key = "9.9@" + "a" * 12
    try:
        answer = post_report(collector.url, "newcomer", _report(release_key=key))
        assert answer.status_code == 202 and answer.json()["machine"] == "pending"
        assert Store(db).judged("beta", key, None).total == 0
        ident = machine_id("newcomer")
        listed = _release("machines", "list", "--collector", collector.url, *admin,
                          "--state", "pending")
        assert listed.returncode == 0 and ident in listed.stdout, listed.stderr
        assert "1 pending" in listed.stdout
        done = _release("machines", "approve", "--collector", collector.url, *admin, ident)
        assert done.returncode == 0 and "approved 1 of 1" in done.stdout, done.stderr
        assert Store(db).judged("beta", key, None).total == 1  # its report counts now
        done = _release("machines", "revoke", "--collector", collector.url, *admin, ident)
        assert done.returncode == 0 and "revoked 1 of 1" in done.stdout, done.stderr
        answer = post_report(collector.url, "newcomer", _report(release_key=key))
        assert answer.status_code == 403 and "revoked" in answer.text
        assert Store(db).judged("beta", key, None).total == 0
        bad = _release("machines", "approve", "--collector", collector.url, *admin, "nope")
        assert bad.returncode != 0 and "422" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        collector.stop()

    collector = Collector(tmp, f"sqlite:///{tmp / 'loaded.sqlite3'}", None,
                          "--enrolment", "preauthorized")
    try:
        answer = post_report(collector.url, "stranger", _report())
        assert answer.status_code == 403 and "not enrolled" in answer.text
        keys = tmp / "keys.txt"
        keys.write_text(f"# from the provisioning\n{public_key_text(machine_key('loaded'))}"
                        "  # rack 4\n")
        done = _release("machines", "load", "--collector", collector.url, *admin, str(keys))
        assert done.returncode == 0 and "loaded 1 machine key" in done.stdout, done.stderr
        assert post_report(collector.url, "loaded", _report()).status_code == 202
        assert post_report(collector.url, "stranger", _report()).status_code == 403
        assert [x["source"] for x in _machines(collector)["machines"]] == ["preauthorized"]
    finally:
        collector.stop()


def test_new_keys_are_rate_limited(fleet):
    """Minting keys is bounded by --enrol-rate for the whole collector; known machines go on
    reporting."""
    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'c.sqlite3'}", None, "--enrol-rate", "5")
    try:
        codes = [post_report(collector.url, f"mint{i}", _report()).status_code
                 for i in range(8)]
        assert codes == [202] * 5 + [429] * 3
        assert post_report(collector.url, "mint0", _report(id="1" * 32)).status_code == 202
        counts = _machines(collector)["counts"]
        assert counts["active"] == 5 and counts["last_hour"] == 5 and not counts["spike"]
    finally:
        collector.stop()


def test_pruning_keeps_what_the_rules_count(tmp_path):
    """Reports older than the retention go, except those of a rollout under way; machines'
    enrolments stay, so the history a key needs to count survives the pruning. A spike of
    new keys is flagged against the week before."""
    from datetime import UTC, datetime, timedelta

    from greenlight.channels import FleetReport, public_key_text
    from greenlight.release.fleet import Store

    from conftest import machine_key

    store = Store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    old, live = "1.0@" + "a" * 12, "2.0@" + "b" * 12

    def accept(name: str, key: str, at: datetime, outcome: str = "rolled-back") -> None:
        report = FleetReport.model_validate({
            **_report(release_key=key, release=key.split("@")[0], outcome=outcome),
            "installation": machine_id(name), "channel": "stable"})
        said = store.accept(report, report.model_dump_json(by_alias=True), at, 10,
                            public_key_text(machine_key(name)).strip())
        assert said[0] == "accepted", said

    for i in range(3):
        accept(f"p{i}", old, t0, "upgraded")
    started = t0 + timedelta(days=40)
    for i in range(3):
        accept(f"p{i}", live, started + timedelta(days=1))
    accept("minted", live, started + timedelta(days=2))  # enrolled after the rollout began
    assert store.prune(t0 + timedelta(days=50), {("stable", live)}) == 3  # 1.0's reports
    judged = store.judged("stable", live, None, established_before=started)
    assert (judged.failed, judged.total) == (3, 3)  # p0-p2 still count; minted does not
    assert store.prune(t0 + timedelta(days=50), set()) == 4
    assert len(store.machine_list()) == 4
    # Keys enrolled by the fleet token alone and silent for the retention go; a revoked
    # key stays revoked, and a key an operator loaded stays.
    store.set_state([machine_id("p0")], "revoked")
    store.preauthorize({machine_id("loaded"): public_key_text(machine_key("loaded")).strip()},
                       t0)
    assert store.prune_machines(t0 + timedelta(days=50)) == 3
    assert {m["id"] for m in store.machine_list()} == {machine_id("p0"), machine_id("loaded")}

    now = t0 + timedelta(days=60)
    for i in range(25):
        accept(f"spike{i}", live, now - timedelta(minutes=30) + timedelta(seconds=3 * i))
    counts = store.enrolment(now)
    assert counts["last_hour"] == 25 and counts["spike"] is True


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.exhaustive
def test_the_collector_holds_under_abuse(fleet):
    """1,000 half-sent requests do not stop the admin's, and each is cut off once its time
    is up; headers past HEAD_MAX are refused; a 1 GiB body, declared or streamed, is
    refused with the collector's memory flat."""
    import socket

    from greenlight.release.fleet._server import REQUEST_TIMEOUT

    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'c.sqlite3'}")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    half: list[socket.socket] = []
    try:
        before = _rss(collector.proc.pid)
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", collector.port))
            s.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            half.append(s)
        answer = httpx.get(collector.url + "v1/rollouts", headers=admin, timeout=10)
        assert answer.status_code == 200
        half[-1].settimeout(REQUEST_TIMEOUT + 30)
        assert half[-1].recv(1) == b""  # closed by the collector, not by us
        assert httpx.get(collector.url + "v1/rollouts", headers=admin).status_code == 200

        # Headers past HEAD_MAX: many small ones, then one without end.
        s = socket.create_connection(("127.0.0.1", collector.port))
        s.sendall(b"GET /v1/rollouts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  + b"".join(b"X-%d: a\r\n" % i for i in range(5000)) + b"\r\n")
        s.settimeout(30)
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
        s.close()
        s = socket.create_connection(("127.0.0.1", collector.port))
        s.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ")
        with pytest.raises(OSError):  # refused and closed long before 1 GiB
            for _ in range(1 << 18):
                s.sendall(b"a" * 4096)
        s.close()

        # A declared 1 GiB (by hand: httpx sets Content-Length itself), then a streamed one.
        s = socket.create_connection(("127.0.0.1", collector.port))
        s.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                  + FLEET.encode() + b"\r\nContent-Length: " + str(1 << 30).encode()
                  + b"\r\n\r\n")
        s.settimeout(30)
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
        s.close()

        s = socket.create_connection(("127.0.0.1", collector.port))
        s.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                  + FLEET.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
        sent = 0
        try:
            while sent < 1 << 30:
                s.sendall(chunk)
                sent += 1 << 20
        except OSError:  # the collector answered and closed while we were still sending
            pass
        s.settimeout(30)
        try:
            said = s.recv(4096)
        except OSError:
            said = b""
        assert said.startswith(b"HTTP/1.1 413") or sent < 1 << 30, said[:80]
        s.close()
        grown = _rss(collector.proc.pid) - before
        print(f"collector memory: {before >> 20} MiB before, grew {grown >> 20} MiB")
        assert grown < 64 << 20, grown
        assert httpx.get(collector.url + "v1/rollouts", headers=admin).status_code == 200
    finally:
        for s in half:
            s.close()
        collector.stop()


# Five real machines and a guarding collector: kept out of `make test`'s time budget; CI runs
# it in `make test-exhaustive`.
@pytest.mark.exhaustive
def test_a_fault_in_one_cohort_holds_that_cohort_only(fleet):
    """Real machines of two kinds (their vendor's cohort_label) report to a collector that
    guards a planned rollout. The release fails on every "legacy" machine that tries it and
    on no "modern" one: the collector holds the legacy cohort only, signed; a legacy machine
    that had not tried yet stays where it is, saying why, while the modern ones take it."""
    import platform

    from greenlight.channels import HaltRule, RolloutPlan, cohort_of, now

    tmp, repo, server, builds = fleet
    collector = Collector(tmp, f"sqlite:///{tmp / 'c.sqlite3'}", None, "--repo",
                          str(repo.path), "--tick", "0.2")
    try:
        publish(repo, "stable", "1.0", builds("1.0"))
        legacy = [Machine(tmp, f"legacy{i}", repo, server, collector.url, label="legacy")
                  for i in range(3)]
        modern = [Machine(tmp, f"modern{i}", repo, server, collector.url, label="modern")
                  for i in range(2)]
        for m in legacy + modern:  # each known to the collector before the rollout
            assert m.updater("upgrade").returncode == 0 and m.queued() == []
        for m in legacy:  # 1.1 fails on this kind of machine
            (m.path / "data" / "broken-1.1").write_text("")
        publish(repo, "stable", "1.1", builds("1.1"), rollout_plan=RolloutPlan(
            steps=[100], soak=0, started_at=now(), halt=HaltRule(rollbacks=2)))
        assert legacy[0].updater("upgrade").returncode == 20
        assert legacy[1].updater("upgrade").returncode == 20
        held = cohort_of(platform.system(), platform.release(), platform.machine(), "legacy")
        state = wait_state(repo, lambda s: s.held_cohorts)
        assert state.held_cohorts == [held] and not state.halted, state
        assert state.reason.startswith(f"cohort {held}: 2 of 2 machines reporting on 1.1")

        waiting = legacy[2].updater("upgrade")
        assert waiting.returncode == 15, waiting.stdout + waiting.stderr
        assert f"held for this machine's cohort {held}" in waiting.stdout
        for m in modern:
            done = m.updater("upgrade")
            assert done.returncode == 0, done.stdout + done.stderr
            assert json.loads(m.updater("status", "--json").stdout)["installed"] == "1.1"
        shown = _release("rollout", "status", "--collector", collector.url,
                         "--admin-token-file", str(tmp / "tokens" / "admin"))
        assert f"cohort(s) {held} HELD by collector" in shown.stdout, shown.stdout
        assert ("stable 1.1: 5 machines reporting; 2 upgraded, 2 rolled back, 0 dead ends, "
                "0 pre-check blocked, 1 held") in shown.stdout
    finally:
        collector.stop()


def test_a_batch_is_judged_report_by_report(tmp_path):
    """Reports stored together (one transaction) are admitted as if each came alone, after
    those before it: a machine's rate and the enrolment rate count the batch's own."""
    from datetime import UTC, datetime

    from greenlight.channels import FleetReport, public_key_text
    from greenlight.release.fleet import Store

    from conftest import machine_key

    store = Store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    at = datetime(2026, 6, 1, tzinfo=UTC)

    def item(name: str, n: int = 0) -> tuple:
        report = FleetReport.model_validate({**_report(id=f"{n:032x}"),
                                             "installation": machine_id(name)})
        return (report, report.model_dump_json(by_alias=True), at,
                public_key_text(machine_key(name)).strip())

    said = store.accept_many([item("busy", n) for n in range(12)]
                             + [item("n1"), item("n2"), item("n3")],
                             rate=10, mode="open", enrol_rate=3)
    assert said == ([("accepted", True)] + [("accepted", False)] * 9 + [("rate", False)] * 2
                    + [("accepted", True), ("accepted", True), ("enrol-rate", False)])
    assert store.accept_many([item("n4")], rate=10, mode="preauthorized") == [
        ("unknown", False)]
    assert store.accept_many([item("n1", 1)], rate=10, mode="approved") == [
        ("accepted", False)]
    assert store.accept_many([item("n1", 1)], rate=10) == [("duplicate", False)]
    assert {m["id"] for m in store.machine_list()} == {machine_id(n) for n in
                                                      ("busy", "n1", "n2")}
    assert store.judged("beta", "9.9", None).total == 0  # no release key: counted nowhere


def test_a_store_that_fails_answers_503_in_one_line(tmp_path):
    """When the database cannot take a report, the machine hears 503 (it keeps the report
    queued and sends it again) and the operator reads one line, never a traceback or the
    statement's parameters."""
    import sqlite3

    db = tmp_path / "c.sqlite3"
    collector = Collector(tmp_path, f"sqlite:///{db}")
    try:
        assert post_report(collector.url, "m", _report()).status_code == 202
        with sqlite3.connect(db) as c:
            c.execute("DROP TABLE reports")
        answer = post_report(collector.url, "m", _report(outcome="upgraded"))
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"error": "the collector cannot store reports now; try later"}
    finally:
        collector.stop()
    said = collector.proc.stdout.read()
    assert "cannot store reports: OperationalError: " in said, said
    assert "Traceback" not in said and "upgraded" not in said, said
