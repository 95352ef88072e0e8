"""Rehearsals on the collector's dashboard: `GET /v1/rehearsals` (the admin token) answers
the rehearsals kept in the repository the collector guards (`--repo`) and the changes started
without one, as data; the page sets every part of them as text (its escaping of hostile text
in a real browser is tests/test_fleet_evidence.py's)."""

from datetime import timedelta

import httpx
from test_rehearsal_status import STARTED, override, path, record

from conftest import ADMIN, FLEET, Collector

AUTH = {"Authorization": f"Bearer {ADMIN}"}
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def test_the_collector_serves_the_repositorys_rehearsals(tmp_path, published):
    repo = published.path
    older = record(repo, "stable", "1.1", [path("1.0", "1.1")],
                   started=STARTED - timedelta(days=1))
    newer = record(repo, "beta", "1.2", [
        path("1.0", "1.2", "failed", checks=[("ui", HOSTILE)], seconds=3.5,
             bytes_fetched=4096, delta=True),
        path(None, "1.2")])
    override(repo, "beta", "1.2", f"ship it {HOSTILE}")
    override(repo, "stable", "1.1", "the second", by="bob")
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(repo))
    try:
        answer = httpx.get(collector.url + "v1/rehearsals", headers=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["schema"] == "greenlight.rehearsals/1" and "note" not in data
        # Newest first, each as it is kept (greenlight.rehearsal/1).
        assert data["rehearsals"] == [newer.model_dump(mode="json", by_alias=True),
                                      older.model_dump(mode="json", by_alias=True)]
        first = data["rehearsals"][0]
        assert first["schema"] == "greenlight.rehearsal/1" and first["passed"] is False
        assert first["paths"][0]["failed_checks"] == [{"name": "ui", "summary": HOSTILE}]
        assert (first["paths"][0]["bytes_fetched"], first["paths"][0]["delta"]) == (4096, True)
        # The overrides, newest first, with what the gate records.
        assert [(o["channel"], o["release"], o["by"]) for o in data["overrides"]] == [
            ("stable", "1.1", "bob"), ("beta", "1.2", "alice")]
        assert data["overrides"][1] == {
            "at": "2026-12-07T16:00:12+00:00", "action": "promote", "channel": "beta",
            "release": "1.2", "by": "alice", "refusal": "1.2 was never rehearsed on beta",
            "reason": f"ship it {HOSTILE}"}
        assert answer.headers["content-type"] == "application/json"  # data, never a page

        # The admin's: not without its token, nor with the fleet's, nor under another name.
        assert httpx.get(collector.url + "v1/rehearsals").status_code == 401
        assert httpx.get(collector.url + "v1/rehearsals",
                         headers={"Authorization": f"Bearer {FLEET}"}).status_code == 401
        assert httpx.get(collector.url + "v1/rehearsals",
                         headers={**AUTH, "Host": "evil.example"}).status_code == 421
        assert "/v1/rehearsals" in httpx.get(collector.url + "openapi.json").json()["paths"]

        # The page draws them, each text set as text (the page's `el`), never as markup.
        page = httpx.get(collector.url).text
        assert '<div id="rehearsals" hidden><h2>Rehearsals</h2>' in page
        assert "Started without a rehearsal" in page
        assert 'call("GET", "/v1/rehearsals")' in page
        assert "innerHTML" not in page and "insertAdjacentHTML" not in page
        assert "outerHTML" not in page and "document.write" not in page
    finally:
        collector.stop()


def test_without_a_repository_the_collector_says_so(tmp_path):
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}")
    try:
        answer = httpx.get(collector.url + "v1/rehearsals", headers=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"schema": "greenlight.rehearsals/1", "rehearsals": [],
                                 "overrides": [],
                                 "note": "this collector guards no repository (--repo)"}
        assert httpx.get(collector.url + "v1/rehearsals").status_code == 401
    finally:
        collector.stop()


def test_at_most_fifty_of_each(tmp_path, published):
    repo = published.path
    for n in range(55):
        record(repo, "stable", f"1.{n}", [path("1.0", f"1.{n}")],
               started=STARTED + timedelta(minutes=n))
        override(repo, "stable", f"1.{n}", f"reason {n}")
    (repo / "rehearsals" / "stable" / "2.0.json").write_text("{not a record")  # skipped
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(repo))
    try:
        data = httpx.get(collector.url + "v1/rehearsals", headers=AUTH, timeout=10).json()
        assert [r["version"] for r in data["rehearsals"]] == [f"1.{n}"
                                                              for n in range(54, 4, -1)]
        assert [o["reason"] for o in data["overrides"]] == [f"reason {n}"
                                                            for n in range(54, 4, -1)]
    finally:
        collector.stop()
