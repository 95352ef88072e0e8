"""User feedback at the collector: a real collector (uvicorn on
127.0.0.1) takes `greenlight.feedback/1` signed by real machine keys, once per key and id,
refuses what is hostile in one line, bounds floods without losing honest feedback, prunes by
its retention, imports an air-gapped machine's export line by line, and lists and exports
what it kept, escaped for a terminal and neutralised for a spreadsheet."""

import csv
import io
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from greenlight.channels import FEEDBACK_MAX_BYTES, public_key_text, sign_body
from greenlight.release.fleet import Store

from conftest import ADMIN, FLEET, Collector, machine_id, machine_key

BIN = Path(sys.executable).parent
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
REAL = "linux-6/x86_64/default"
KEY = "1.2@" + "a" * 12


def feedback(name: str, text: str = "the panel says: denying api access", **fields: object
             ) -> dict:
    """A feedback as machine `name`'s Greenlight sends it: its own fresh id, signed `sent`,
    the evidence of a failing check."""
    now = datetime.now(UTC).isoformat()
    return {"schema": "greenlight.feedback/1", "id": uuid.uuid4().hex,
            "installation": machine_id(name), "at": now, "sent": now, "source": "inbox",
            "text": text, "channel": "stable", "release": KEY.split("@")[0],
            "release_key": KEY, "cohort": REAL, "greenlight": "0.3.0",
            "greenlight_kind": "python",
            "checks": [{"name": "ui-state", "ok": False, "summary": "HTTP 403",
                        "evidence": '{"status": 403, "body": "denying api access"}'},
                       {"name": "core-api", "ok": True, "summary": "HTTP 200"}],
            **fields}


def signed(name: str, doc: dict | bytes, token: str = FLEET) -> tuple[bytes, dict[str, str]]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                  **sign_body(machine_key(name), body)}


def post_feedback(url: str, name: str, doc: dict | bytes, token: str = FLEET
                  ) -> httpx.Response:
    body, headers = signed(name, doc, token)
    return httpx.post(url + "v1/feedback", content=body, headers=headers, timeout=30)


def export_line(name: str, doc: dict) -> str:
    """One line of an air-gapped machine's export file."""
    body = json.dumps(doc)
    headers = sign_body(machine_key(name), body.encode())
    return json.dumps({"schema": "greenlight.feedback-export/1", "body": body,
                       "key": headers["Greenlight-Key"],
                       "signature": headers["Greenlight-Signature"]})


def load(url: str, *names: str) -> None:
    """Keys the operator loaded: established from the start."""
    answer = httpx.post(url + "v1/machines/load", headers=ADMIN_HEADERS, json={
        "keys": [public_key_text(machine_key(n)).strip() for n in names]})
    assert answer.status_code == 200, answer.text


def listed(url: str, **query: str) -> list[dict]:
    answer = httpx.get(url + "v1/feedback", params=query, headers=ADMIN_HEADERS, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["feedback"]


def release_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "release"), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def collector(tmp_path):
    c = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}")
    yield c
    c.stop()


def _one_line(answer: httpx.Response, status: int, *said: str) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    error = answer.json()["error"]
    assert "\n" not in error and error.isprintable(), error
    for piece in said:
        assert piece in error, error
    return error


def test_feedback_is_stored_once_and_hostile_feedback_refused_in_one_line(collector):
    url = collector.url
    doc = feedback("honest")
    assert post_feedback(url, "honest", doc).status_code == 202
    again = post_feedback(url, "honest", doc)  # a resend, or a replay of a captured one
    assert again.status_code == 200 and again.json() == {"accepted": True, "duplicate": True}
    assert len(listed(url)) == 1

    # too big: refused while it is read, before anything parses it
    big = post_feedback(url, "honest", feedback("honest", text="x" * FEEDBACK_MAX_BYTES))
    _one_line(big, 413, str(FEEDBACK_MAX_BYTES))
    # not UTF-8, not JSON: 400, one line
    raw = json.dumps(feedback("honest", text="é"), ensure_ascii=False).encode().replace(
        "é".encode(), b"\xff\xfe")
    assert b"\xff\xfe" in raw
    _one_line(post_feedback(url, "honest", raw), 400, "not UTF-8")
    _one_line(post_feedback(url, "honest", b'{"schema": "greenlight.feedback/1", '), 400,
              "not JSON")
    # outside the wire format, or not its key's: 422
    _one_line(post_feedback(url, "honest", feedback("honest", channel="Stable!")), 422,
              "channel")
    _one_line(post_feedback(url, "honest", {k: v for k, v in feedback("honest").items()
                                            if k != "text"}), 422, "text")
    _one_line(post_feedback(url, "honest", feedback("someone-else")), 422,
              "is not the id of the key that signed it")
    _one_line(post_feedback(url, "honest", feedback(
        "honest", logs=[{"name": "core", "tail": "secret=1"}])), 422, "consent")
    stale = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    _one_line(post_feedback(url, "honest", feedback("honest", sent=stale)), 422, "24 hours")
    # the tokens and the signature
    _one_line(post_feedback(url, "honest", feedback("honest"), token="x" * 24), 401,
              "fleet token")
    body, headers = signed("honest", feedback("honest"))
    forged = httpx.post(url + "v1/feedback", content=body.replace(b"denying", b"DENYING"),
                        headers=headers)
    _one_line(forged, 401, "does not verify")

    # Control characters are stored escaped: never a terminal sequence, a forged log line,
    # or a reversed text; the person's own line breaks are kept.
    hostile = feedback("honest", text="line one\nline two \x1b[2J\x1b]0;pwned\x07\r\u202ecba",
                       checks=[{"name": "ui-state", "ok": False,
                                "summary": "HTTP 403\nupdater: forged", "evidence": "\x1b[31m"}])
    assert post_feedback(url, "honest", hostile).status_code == 202
    entry = httpx.get(url + f"v1/feedback/{hostile['id']}", headers=ADMIN_HEADERS).json()
    assert entry["text"] == "line one\nline two \\x1b[2J\\x1b]0;pwned\\x07\\r\\u202ecba"
    check = entry["document"]["checks"][0]
    assert check["summary"] == "HTTP 403\\nupdater: forged" and check["evidence"] == "\\x1b[31m"
    assert entry["check"] == "ui-state" and entry["machine"] == machine_id("honest")

    metrics = httpx.get(url + "metrics", headers=ADMIN_HEADERS).text
    for reason in ("size", "encoding", "json", "schema", "identity", "consent", "stale",
                   "token", "signature"):
        assert f'greenlight_feedback_refused_total{{reason="{reason}"}}' in metrics, reason
    assert 'greenlight_feedback_total{result="accepted",via="post"} 2.0' in metrics
    assert 'greenlight_feedback_total{result="duplicate",via="post"} 1.0' in metrics
    assert "greenlight_reports_refused_total{" not in metrics  # the reports' own count

    api = httpx.get(url + "openapi.json").json()
    assert set(api["paths"]["/v1/feedback"]) == {"post", "get"}
    assert {"/v1/feedback/import", "/v1/feedback/groups", "/v1/feedback/{id}"} <= set(
        api["paths"])
    assert set(api["paths"]["/v1/feedback"]["post"]["responses"]) == {
        "200", "202", "400", "401", "403", "413", "422", "429", "503"}
    assert "FeedbackReport" in api["components"]["schemas"]
    assert "FleetReport" in api["components"]["schemas"]


def test_a_flood_from_one_machine_stops_at_its_rate_and_the_honest_machine_is_heard(tmp_path):
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--feedback-rate", "3")
    try:
        url = collector.url
        load(url, "flooder", "honest")
        answers = [post_feedback(url, "flooder", feedback("flooder", text=f"spam {i}"))
                   for i in range(6)]
        assert [a.status_code for a in answers] == [202, 202, 202, 429, 429, 429]
        _one_line(answers[3], 429, "3 feedback of the day")
        assert post_feedback(url, "honest", feedback("honest")).status_code == 202
        assert sum(r["machine"] == machine_id("honest") for r in listed(url)) == 1
    finally:
        collector.stop()


def test_a_flood_of_fresh_keys_is_bounded_and_established_machines_are_heard(tmp_path):
    """Keys minted by a holder of the fleet token count for nothing yet: together they get
    `--feedback-newcomers` a day, each at most 3, and never the last quarter of the table;
    a machine the collector knows is heard all along."""
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--feedback-newcomers", "8", "--enrol-rate", "10000")
    try:
        url = collector.url
        load(url, "known")
        one = [post_feedback(url, "minted-0", feedback("minted-0", text=f"{i}"))
               for i in range(4)]
        assert [a.status_code for a in one] == [202, 202, 202, 429]
        _one_line(one[3], 429, "until it is established")
        many = [post_feedback(url, f"minted-{i}", feedback(f"minted-{i}"))
                for i in range(1, 10)]
        assert [a.status_code for a in many] == [202] * 5 + [429] * 4, [
            (a.status_code, a.text) for a in many]
        _one_line(many[-1], 429, "new machine keys is full")
        for _ in range(3):  # the established machine is not counted in the newcomers' room
            assert post_feedback(url, "known", feedback("known")).status_code == 202
        assert len(listed(url)) == 8 + 3
    finally:
        collector.stop()


def test_the_table_keeps_its_last_quarter_for_established_machines(tmp_path):
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--feedback-max", "100", "--feedback-newcomers", "1000",
                          "--enrol-rate", "10000")
    try:
        url = collector.url
        load(url, *(f"known-{i}" for i in range(3)))
        statuses = [post_feedback(url, f"fresh-{i}", feedback(f"fresh-{i}")).status_code
                    for i in range(78)]
        assert statuses == [202] * 75 + [503] * 3
        refused = post_feedback(url, "fresh-x", feedback("fresh-x"))
        _one_line(refused, 503, "keeps all the feedback it may")
        for i in range(3):
            assert post_feedback(url, f"known-{i}", feedback(f"known-{i}")).status_code == 202
    finally:
        collector.stop()


def test_feedback_past_its_retention_is_pruned(tmp_path):
    """The collector's timer prunes feedback received over `--feedback-retention` ago (here
    written into the database as if received 91 days ago); the rest stays."""
    from greenlight.channels import FeedbackReport
    from greenlight.release.fleet import FeedbackLimits

    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    store = Store(db)
    old = FeedbackReport.model_validate(feedback("old"))
    key = public_key_text(machine_key("old")).strip()
    long_ago = datetime.now(UTC) - timedelta(days=91)
    assert store.feedback.admit(old, long_ago, key, "open", 120, FeedbackLimits())[0] == \
        "accepted"
    store.engine.dispose()
    collector = Collector(tmp_path, db, None, "--tick", "0.2", "--feedback-retention", "90d")
    try:
        url = collector.url
        assert post_feedback(url, "new", feedback("new")).status_code == 202
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while any(r["id"] == old.id for r in listed(url)):
            assert datetime.now(UTC) < deadline, "the collector did not prune it"
            time.sleep(0.05)
        assert [r["machine"] for r in listed(url)] == [machine_id("new")]
    finally:
        collector.stop()
    assert "pruned 1 feedback received over 90 day(s) ago" in collector.proc.stdout.read()


def test_an_export_file_is_imported_line_by_line(any_collector, tmp_path):
    """An air-gapped machine's export: each line verified with its own key and signature as
    if the machine had posted it. A tampered line, a line that is not one and a line
    written before the retention are refused, each in one line; the rest are stored, once."""
    url = any_collector.url
    docs = [feedback("air-1", text="written offline, day 1", sent=None),
            feedback("air-1", text="written offline, day 9", sent=None),
            feedback("air-2", text="the dns check keeps failing", sent=None)]
    lines = [export_line(n, d) for n, d in zip(("air-1", "air-1", "air-2"), docs, strict=True)]
    tampered = json.loads(lines[1])
    tampered["body"] = tampered["body"].replace("day 9", "day 6")
    lines[1] = json.dumps(tampered)
    old = feedback("air-2", sent=None, at=(datetime.now(UTC) - timedelta(days=120)).isoformat())
    lines += ["not a line of an export", export_line("air-2", old)]
    file = tmp_path / "feedback-export.jsonl"
    file.write_text("\n".join(lines) + "\n")
    admin = ["--collector", url, "--admin-token-file", str(tmp_path / "tokens" / "admin")]

    done = release_cli("feedback", "import", *admin, str(file))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "line 2: refused: the signature does not verify" in done.stdout, done.stdout
    assert "line 4: refused: not a greenlight.feedback-export/1 line" in done.stdout
    assert "line 5: refused: written at" in done.stdout and "retention (90 days)" in done.stdout
    assert f"imported {file}: 2 accepted, 0 already there, 3 refused" in done.stdout
    assert done.stderr.strip() == f"release: error: 3 line(s) of {file} refused (said above)"
    texts = sorted(r["text"] for r in listed(url))
    assert texts == ["the dns check keeps failing", "written offline, day 1"]

    again = httpx.post(url + "v1/feedback/import", content=file.read_bytes(),
                       headers=ADMIN_HEADERS).json()
    assert (again["accepted"], again["duplicate"], again["refused"]) == (0, 2, 3)
    assert [line["result"] for line in again["lines"]] == [
        "duplicate", "refused", "duplicate", "refused", "refused"]
    assert httpx.post(url + "v1/feedback/import", content=b"x").status_code == 401
    metrics = httpx.get(url + "metrics", headers=ADMIN_HEADERS).text
    assert 'greenlight_feedback_total{result="accepted",via="import"} 2.0' in metrics


def test_the_list_filters_and_the_csv_export_is_neutralised(any_collector, tmp_path):
    """On SQLite and PostgreSQL: the filters, the pages, the dashboard's groups beside the
    reports' outcomes, and the exports."""
    url = any_collector.url
    other = "1.3@" + "b" * 12
    posted = [
        ("m1", feedback("m1", text="=HYPERLINK(\"http://evil.example\",\"click\")")),
        ("m2", feedback("m2", text="+1 from me", channel="beta", release="1.3",
                        release_key=other)),
        ("m3", feedback("m3", text="-2 stars", cohort="linux-6/aarch64/legacy")),
        ("m4", feedback("m4", text="@SUM(A1) and a \x1b[2J clear", checks=[
            {"name": "dns", "ok": False, "summary": "NXDOMAIN"}])),
    ]
    for name, doc in posted:
        assert post_feedback(url, name, doc).status_code == 202
    ids = {name: doc["id"] for name, doc in posted}
    assert [r["id"] for r in listed(url)] == [ids[n] for n in ("m4", "m3", "m2", "m1")]
    assert [r["id"] for r in listed(url, release="1.3")] == [ids["m2"]]
    assert [r["id"] for r in listed(url, channel="beta")] == [ids["m2"]]
    assert [r["id"] for r in listed(url, cohort="linux-6/aarch64/legacy")] == [ids["m3"]]
    assert [r["id"] for r in listed(url, check="dns")] == [ids["m4"]]
    assert len(listed(url, check="ui-state", channel="stable")) == 2
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert listed(url, since=future) == []
    for bad in ({"channel": "Beta!"}, {"since": "yesterday"}, {"limit": "0"},
                {"cursor": "x"}, {"format": "xls"}, {"check": "a b"}):
        answer = httpx.get(url + "v1/feedback", params=bad, headers=ADMIN_HEADERS)
        assert answer.status_code == 422, (bad, answer.text)
    first = httpx.get(url + "v1/feedback", params={"limit": 3}, headers=ADMIN_HEADERS).json()
    rest = httpx.get(url + "v1/feedback", params={"limit": 3, "cursor": first["next"]},
                     headers=ADMIN_HEADERS).json()
    assert [r["id"] for r in first["feedback"] + rest["feedback"]] == [
        ids[n] for n in ("m4", "m3", "m2", "m1")] and rest["next"] is None
    assert httpx.get(url + "v1/feedback").status_code == 401
    assert httpx.get(url + "v1/feedback", headers={**ADMIN_HEADERS, "Host": "evil.example"}
                     ).status_code == 421
    assert httpx.get(url + "v1/feedback/" + "0" * 32, headers=ADMIN_HEADERS).status_code == 404

    # the dashboard's groups, beside what the same machines reported
    from conftest import post_report

    assert post_report(url, "m1", {
        "schema": "greenlight.report/1", "at": datetime.now(UTC).isoformat(),
        "channel": "stable", "outcome": "rolled-back", "release": "1.2", "release_key": KEY,
        "cohort": REAL, "failed_checks": [{"name": "ui-state", "summary": "HTTP 403"}]}
    ).status_code == 202
    groups = httpx.get(url + "v1/feedback/groups", headers=ADMIN_HEADERS).json()["groups"]
    by = {(g["channel"], g["release"], g["cohort"]): g for g in groups}
    assert set(by) == {("stable", "1.2", REAL), ("beta", "1.3", REAL),
                       ("stable", "1.2", "linux-6/aarch64/legacy")}
    mine = by[("stable", "1.2", REAL)]
    assert (mine["feedback"], mine["machines"]) == (2, 2)
    assert sorted((c["name"], c["feedback"]) for c in mine["checks"]) == [
        ("dns", 1), ("ui-state", 1)]
    assert mine["outcomes"] == {"machines": 1, "failed": 1, "checks": [
        {"name": "ui-state", "reports": 1, "example": "HTTP 403"}]}
    assert [f["id"] for f in mine["latest"]] == [ids["m4"], ids["m1"]]
    assert mine["latest"][1]["evidence"]["evidence"] == \
        '{"status": 403, "body": "denying api access"}'

    admin = ["--collector", url, "--admin-token-file", str(tmp_path / "tokens" / "admin")]
    out = tmp_path / "feedback.csv"
    done = release_cli("feedback", "export", *admin, "--format", "csv", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported 4 feedback to {out} (csv)"
    assert out.stat().st_mode & 0o777 == 0o600
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    texts = {r["machine"]: r["text"] for r in rows}
    assert texts[machine_id("m1")] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert texts[machine_id("m2")] == "'+1 from me"
    assert texts[machine_id("m3")] == "'-2 stars"
    assert texts[machine_id("m4")] == "'@SUM(A1) and a \\x1b[2J clear"
    assert all(not cell.lstrip().startswith(("=", "+", "-", "@")) for r in rows
               for cell in r.values()), rows
    served = httpx.get(url + "v1/feedback", params={"format": "csv"}, headers=ADMIN_HEADERS)
    assert served.headers["content-type"].startswith("text/csv")
    assert "'=HYPERLINK" in served.text

    whole = tmp_path / "feedback.json"
    done = release_cli("feedback", "export", *admin, "--release", "1.2", "-o", str(whole))
    assert done.returncode == 0, done.stderr
    exported = json.loads(whole.read_text())["feedback"]
    assert len(exported) == 3 and all(e["document"]["checks"] for e in exported)

    shown = release_cli("feedback", "list", *admin, "--check", "dns")
    assert shown.returncode == 0, shown.stderr
    assert f"{ids['m4']} ({machine_id('m4')[:8]}): @SUM(A1) and a \\x1b[2J clear" in \
        shown.stdout and "\x1b" not in shown.stdout
    one = release_cli("feedback", "show", *admin, ids["m1"])
    assert one.returncode == 0, one.stderr
    assert "FAILED ui-state: HTTP 403" in one.stdout
    assert 'evidence: {"status": 403, "body": "denying api access"}' in one.stdout
    assert "filed under check: ui-state" in one.stdout
    bad = release_cli("feedback", "list", *admin, "--channel", "Bad\x1b[2J!")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "\x1b" not in bad.stderr
    down = release_cli("feedback", "list", "--collector", "http://127.0.0.1:9/",
                       "--admin-token-file", str(tmp_path / "tokens" / "admin"))
    assert down.returncode == 8 and down.stderr.startswith("release: error: cannot reach")
    missing = release_cli("feedback", "show", *admin, "f" * 32)
    assert missing.returncode == 8 and missing.stderr.count("\n") == 1
    assert "answered 404: no such feedback" in missing.stderr


def test_with_a_repository_feedback_is_kept_for_any_release_it_carried(tmp_path, builds):
    """With `--repo`, feedback naming a channel or release the repository never carried is
    not stored (202, stored false); but what a real machine sends is always kept: the
    release it runs on its channel, a release of another channel it runs after a fallback,
    and the failed release its last incident is about, which it is then filed under."""
    from greenlight.release import init_repository, publish

    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    publish(repo, "beta", "1.1", builds("1.1"))
    running = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                        "--repo", str(repo.path))
    try:
        load(running.url, "m1")
        one, other = "1.0@" + "b" * 12, "1.1@" + "c" * 12
        incident = {"at": datetime.now(UTC).isoformat(), "event": "rolled-back",
                    "channel": "beta", "release": other, "back_to": one,
                    "check": "ui-state", "summary": "HTTP 403"}
        cases = [({"release": "1.0", "release_key": one}, True, "1.0"),
                 ({"release": "1.1", "release_key": other}, True, "1.1"),  # after a fallback
                 ({"release": "1.0", "release_key": one, "incident": incident}, True, "1.1"),
                 ({"release": "9.9", "release_key": "9.9@" + "d" * 12}, False, None),
                 ({"channel": "nightly"}, False, None)]
        for fields, stored, about in cases:
            doc = feedback("m1", **fields)
            answer = post_feedback(running.url, "m1", doc)
            assert answer.status_code == 202, answer.text
            assert answer.json().get("stored", True) is stored, (fields, answer.text)
            if stored:
                kept = next(f for f in listed(running.url) if f["id"] == doc["id"])
                assert kept["about"] == about, kept
        assert {f["about"] for f in listed(running.url, release="1.1")} == {"1.1"}
    finally:
        running.stop()
