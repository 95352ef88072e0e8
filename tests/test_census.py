"""The census of Greenlight versions across the fleet: reports name the Greenlight that made
them and how it is installed; a real collector (uvicorn on 127.0.0.1, SQLite) counts each
machine by its latest signed report; `release status --collector` shows it; `release publish`
raises `requires` on request and, with `--collector`, refuses a release the channel's
machines are too old for while no updater release that satisfies it is published."""

import json
import re
import sqlite3
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from greenlight.channels import GREENLIGHT_PATTERN, VERSION
from greenlight.release import current_channel_file, publish

from conftest import ADMIN, Collector, builtin_server, free_port, machine_id, post_report

BIN = Path(sys.executable).parent
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _report(channel: str = "stable", release: str = "1.0", n: int = 0,
            greenlight: str | None = None, kind: str | None = None) -> dict:
    report = {"schema": "greenlight.report/1", "at": datetime.now(UTC).isoformat(),
              "channel": channel, "outcome": "upgraded", "release": release,
              "id": f"{n:032x}"}
    if greenlight is not None:
        report["greenlight"] = greenlight
    if kind is not None:
        report["greenlight_kind"] = kind
    return report


def _census(collector: Collector, channel: str | None = None) -> dict:
    query = "" if channel is None else f"?channel={channel}"
    answer = httpx.get(collector.url + "v1/census" + query, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["schema"] == "greenlight.census/1"
    return answer.json()


def _release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "release"), *args], capture_output=True, text=True,
                          timeout=120)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    said = done.stderr.strip()
    assert len(said.splitlines()) == 1 and "Traceback" not in said, said
    return said


@pytest.fixture
def collector(tmp_path):
    running = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}")
    yield running
    running.stop()


def _fleet(collector: Collector) -> None:
    """Stable: m1 and m2 run 0.3.0 as an executable (m2 said so last about its updater,
    on greenlight-stable), m3 0.3.0rc1 from pip, m4 0.2.0 (its report names no Greenlight);
    m5 sent a 0.2.0 report first and its latest from 0.3.0. Beta: m6, an installer's copy."""
    for name, report in [
            ("m1", _report(greenlight="0.3.0", kind="exe")),
            ("m2", _report(n=1)),
            ("m2", _report("greenlight-stable", "0.3.0", n=2, greenlight="0.3.0", kind="exe")),
            ("m3", _report(greenlight="0.3.0rc1", kind="python")),
            ("m4", _report()),
            ("m5", _report(n=1)),
            ("m5", _report(release="1.1", n=2, greenlight="0.3.0", kind="exe")),
            ("m6", _report("beta", "1.1", greenlight="0.3.0", kind="copy"))]:
        answer = post_report(collector.url, name, report)
        assert answer.status_code == 202, answer.text


def test_reports_carry_greenlight_and_each_machine_counts_by_its_latest(collector):
    _fleet(collector)
    stable = _census(collector, "stable")
    assert stable == {"schema": "greenlight.census/1", "channel": "stable", "machines": 5,
                      "greenlight": {"0.3.0": {"exe": 3}, "0.3.0rc1": {"python": 1},
                                     "0.2.0": {"unknown": 1}},
                      "releases": {}, "cohorts": {}}  # no report says before, after, cohort
    everything = _census(collector)
    assert everything["more"] is False
    assert everything["channels"] == {
        "beta": {"machines": 1, "greenlight": {"0.3.0": {"copy": 1}}},
        "stable": {"machines": 5, "greenlight": stable["greenlight"]}}
    assert _census(collector, "nothing")["machines"] == 0

    # The views carry it: per release, what its machines run now; per channel; per machine.
    rows = collector.rollouts()
    assert rows[("stable", "1.0")]["greenlight"] == {
        "0.3.0": {"exe": 3}, "0.3.0rc1": {"python": 1}, "0.2.0": {"unknown": 1}}
    assert rows[("stable", "1.1")]["greenlight"] == {"0.3.0": {"exe": 1}}
    answer = httpx.get(collector.url + "v1/rollouts", headers=AUTH).json()
    assert answer["census"] == everything["channels"]
    machines = httpx.get(collector.url + "v1/machines", headers=AUTH).json()
    assert machines["census"] == everything["channels"]
    by_id = {m["id"]: (m["greenlight"], m["greenlight_kind"]) for m in machines["machines"]}
    assert by_id[machine_id("m4")] == ("0.2.0", "unknown")
    assert by_id[machine_id("m3")] == ("0.3.0rc1", "python")

    # Strict: a version that is not one, an unknown kind: 422, nothing stored.
    for bad in ({"greenlight": "0.3.0; rm -rf /"}, {"greenlight": "<b>1.0</b>"},
                {"greenlight": "1" * 65}, {"greenlight_kind": "rpm"}):
        refused = post_report(collector.url, "m1", {**_report(n=9), **bad})
        assert refused.status_code == 422 and "greenlight" in refused.text, refused.text
    assert _census(collector, "stable") == stable
    assert httpx.get(collector.url + "v1/census").status_code == 401
    refused = httpx.get(collector.url + "v1/census?channel=Not%20A%20Channel", headers=AUTH)
    assert refused.status_code == 422
    assert "/v1/census" in httpx.get(collector.url + "openapi.json").json()["paths"]
    assert re.match(GREENLIGHT_PATTERN, VERSION)  # this version can say itself


A, B = "linux-6/x86_64/a", "linux-6/x86_64/b"


def _keyed(channel: str, n: int, after: str | None = None, before: str | None = None,
           cohort: str | None = None, **extra: str) -> dict:
    report = {**_report(channel, (after or before or "1.0").partition("@")[0], n), **extra}
    for name, key in (("after", after), ("before", before)):
        if key is not None:
            report[name] = key
    if cohort is not None:
        report["cohort"] = cohort
    return report


def test_one_channel_census_says_the_releases_and_cohorts_its_machines_run(tmp_path,
                                                                           any_collector):
    """Each machine on `prod` by its latest report on `prod` itself: the version of its
    `after` key, else `before`, and its cohort; a report about its updater says neither."""
    from greenlight.release.fleet import fetch_census

    collector, one, two = any_collector, "1.0@" + "a" * 12, "1.1@" + "b" * 12
    for name, report in [
            ("a", _keyed("prod", 0, after=two, before=one, cohort=A)),
            ("b", _keyed("prod", 0, after=one, cohort=A)),
            ("b", _keyed("prod", 1, after=two, before=one, cohort=A)),  # its latest: 1.1
            ("c", _keyed("prod", 0, after=one, before=one, cohort=B, outcome="rolled-back")),
            ("d", _keyed("prod", 0, before=one, outcome="precheck-blocked")),  # no cohort
            ("e", _keyed("prod", 0, after=two, cohort=A)),
            # its latest is about its updater: its release and cohort come from the one above
            ("e", _keyed("greenlight-prod", 1, after="0.3.0@" + "c" * 12, cohort=B)),
            ("f", _keyed("prod", 0, after=one, cohort=B)),
            ("f", _keyed("beta", 1, after=two, cohort=B)),  # f is on beta now
            ("g", _keyed("prod", 0)),  # says no key: a machine, no release
            ("h", _keyed("prod", 0, after="V1.1@" + "d" * 12)),  # no release is named so
    ]:
        answer = post_report(collector.url, name, report)
        assert answer.status_code == 202, answer.text
    prod = _census(collector, "prod")
    assert prod["machines"] == 7
    assert prod["releases"] == {"1.1": 3, "1.0": 2}
    assert list(prod["releases"]) == ["1.1", "1.0"]  # newest first
    assert prod["cohorts"] == {A: 3, B: 1}
    assert _census(collector, "beta")["releases"] == {"1.1": 1}
    updater = _census(collector, "greenlight-prod")  # its machines are on prod
    assert (updater["machines"], updater["releases"], updater["cohorts"]) == (0, {}, {})
    assert _census(collector, "nothing") == {"schema": "greenlight.census/1",
                                             "channel": "nothing", "machines": 0,
                                             "greenlight": {}, "releases": {}, "cohorts": {}}
    assert "releases" not in _census(collector)["channels"]["prod"]  # one channel's only

    # The pipeline's client gets them, checked.
    row = fetch_census(collector.url, tmp_path / "tokens" / "admin", "prod")["prod"]
    assert (row["machines"], row["releases"], row["cohorts"]) == (7, prod["releases"],
                                                                  prod["cohorts"])
    everything = fetch_census(collector.url, tmp_path / "tokens" / "admin")
    assert everything["prod"]["releases"] == {} and everything["prod"]["cohorts"] == {}


def test_the_census_releases_and_cohorts_are_checked():
    from greenlight.release.fleet._census import checked_census

    base = {"schema": "greenlight.census/1", "channel": "prod", "machines": 2,
            "greenlight": {"0.3.0": {"exe": 2}}}
    older = checked_census(base, "prod")["prod"]  # a collector that says neither
    assert (older["releases"], older["cohorts"]) == ({}, {})
    good = checked_census({**base, "releases": {"1.1": 1, "1.0rc1": 1},
                           "cohorts": {A: 2}}, "prod")["prod"]
    assert (good["releases"], good["cohorts"]) == ({"1.1": 1, "1.0rc1": 1}, {A: 2})
    for bad in ({"releases": {"v1.0": 1}}, {"releases": {"1.0\x1b[2J": 1}},
                {"releases": {"1." + "0" * 70: 1}}, {"releases": {"1.0": -1}},
                {"releases": {"1.0": True}}, {"releases": {"1.0": "1"}}, {"releases": [1]},
                {"cohorts": {"<script>": 1}}, {"cohorts": {A + "\n": 1}},
                {"cohorts": {A: 1.5}}, {"cohorts": "a"}):
        with pytest.raises(ValueError):
            checked_census({**base, **bad}, "prod")


def test_a_real_machine_says_its_greenlight(tmp_path, repo, builds, collector):
    from test_fleet import Machine

    from greenlight.updater.store import InstallRoot, greenlight_kind

    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, "real", repo, server, collector.url)
        publish(repo, "stable", "1.0", builds("1.0"))
        done = m.updater("upgrade")
        assert done.returncode == 0, done.stderr
        assert m.queued() == []
    kind = greenlight_kind(InstallRoot(m.path))
    assert _census(collector, "stable")["greenlight"] == {VERSION: {kind: 1}}


def test_an_old_database_is_refused_until_migrated_and_old_reports_count_as_0_2_0(tmp_path):
    """A collector's database from before the census (and before the schema was versioned):
    its reports have no Greenlight. The collector refuses it in one line until `release
    collector migrate` adds the columns; its reports then count as 0.2.0."""
    db = tmp_path / "old.sqlite3"
    first = Collector(tmp_path, f"sqlite:///{db}")
    try:
        assert post_report(first.url, "old", _report()).status_code == 202
    finally:
        first.stop()
    with sqlite3.connect(db) as c:  # the table as a 0.2.0 collector made it
        for column in ("greenlight", "greenlight_kind"):
            c.execute(f"ALTER TABLE reports DROP COLUMN {column}")
        for table in ("alembic_version", "schema_readers", "leases", "signed"):
            c.execute(f"DROP TABLE {table}")
    release = str(Path(sys.executable).parent / "release")
    refused = subprocess.run([release, "collector", "--db", f"sqlite:///{db}",
                              "--fleet-token-file", str(tmp_path / "tokens" / "fleet"),
                              "--admin-token-file", str(tmp_path / "tokens" / "admin")],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 5, refused.stderr
    assert refused.stderr.count("\n") == 1 and "release collector migrate" in refused.stderr
    with sqlite3.connect(db) as c:
        assert "greenlight" not in {row[1] for row in c.execute("PRAGMA table_info(reports)")}
    migrated = subprocess.run([release, "collector", "migrate", "--db", f"sqlite:///{db}"],
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    assert "before the schema was versioned" in migrated.stdout
    again = Collector(tmp_path, f"sqlite:///{db}")
    try:
        with sqlite3.connect(db) as c:
            have = {row[1] for row in c.execute("PRAGMA table_info(reports)")}
        assert {"greenlight", "greenlight_kind"} <= have
        assert _census(again, "stable")["greenlight"] == {"0.2.0": {"unknown": 1}}
        report = _report(release="1.1", n=1, greenlight="0.3.0", kind="exe")
        assert post_report(again.url, "old", report).status_code == 202
        assert _census(again, "stable")["greenlight"] == {"0.3.0": {"exe": 1}}
    finally:
        again.stop()


def _updater_archive(tmp_path: Path) -> Path:
    exe = tmp_path / "updater"
    exe.write_text("#!/bin/sh\necho a stand-in updater\n")
    archive = tmp_path / "updater.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(exe, arcname="updater")
    return archive


def _publish_updater(published, tmp_path: Path, version: str = "0.3.0") -> None:
    done = _release("publish", str(published.path), "--channel", "greenlight-stable",
                    "--version", version, "--component",
                    f"updater-linux-x86_64={_updater_archive(tmp_path)}")
    assert done.returncode == 0, done.stderr


def test_release_status_shows_the_census(tmp_path, published, builds, collector):
    _fleet(collector)
    _publish_updater(published, tmp_path)
    publish(published, "stable", "1.2", builds("1.2"), requires="0.3.0")
    token = str(tmp_path / "tokens" / "admin")
    plain = _release("status", str(published.path))
    assert plain.returncode == 0, plain.stderr
    assert ("greenlight-stable carries Greenlight's updater for the machines on stable: its "
            "release 0.3.0 is the updater's Greenlight version") in plain.stdout
    assert "Greenlight on the machines" not in plain.stdout
    shown = _release("status", str(published.path), "--collector", collector.url,
                     "--admin-token-file", token)
    assert shown.returncode == 0, shown.stderr
    assert ("  stable: 5 machines: 0.3.0 on 3 (3 exe), 0.3.0rc1 on 1 (1 python (pip moves "
            "it)), 0.2.0 on 1 (1 kind not said); 2 run older than 0.3.0, which 1.2 requires"
            ) in shown.stdout, shown.stdout
    assert "  beta: 1 machine: 0.3.0 on 1 (1 copy (a newer offline installer moves it))" \
        in shown.stdout, shown.stdout
    as_json = json.loads(_release("status", str(published.path), "--collector", collector.url,
                                  "--admin-token-file", token, "--json").stdout)
    channels = {c["channel"]: c for c in as_json["channels"]}
    assert channels["stable"]["requires"] == "0.3.0"
    assert channels["stable"]["census"] == {
        "machines": 5, "older": 2, "greenlight": {"0.3.0": {"exe": 3},
                                                  "0.3.0rc1": {"python": 1},
                                                  "0.2.0": {"unknown": 1}}}
    assert channels["greenlight-stable"]["updater_for"] == "stable"
    assert channels["greenlight-stable"]["census"] is None
    assert channels["stable"]["updater_for"] is None
    lone = _release("status", str(published.path), "--collector", collector.url)
    assert lone.returncode == 2 and "--admin-token-file" in _one_line(lone)
    down = _release("status", str(published.path), "--collector",
                    f"http://127.0.0.1:{free_port()}/", "--admin-token-file", token)
    assert down.returncode == 8 and "cannot reach the collector" in _one_line(down)


def test_publish_requires_raises_and_never_lowers(tmp_path, published, builds):
    components = [f"--component={n}={p}" for n, p in builds("1.2").items()]
    before = (published.metadata_dir / "timestamp.json").read_bytes()
    for bad, why in (("banana", "invalid version"), ("v0.3.0", "not canonical"),
                     ("99.0.0", "newer than this release tool's Greenlight")):
        done = _release("publish", str(published.path), "--channel", "stable", "--version",
                        "1.2", *components, "--requires", bad)
        assert done.returncode == 2 and why in _one_line(done), done.stderr
    assert (published.metadata_dir / "timestamp.json").read_bytes() == before

    # A plain release needs nothing newer: it says nothing, unless the vendor raises it.
    plain = publish(published, "beta", "1.2", builds("1.2"))
    assert plain.requires is None
    assert "requires" not in json.loads(current_channel_file(published, "beta").to_json())
    raised = publish(published, "stable", "1.2", builds("1.2"), requires="0.3.0")
    assert raised.requires == "0.3.0"
    # Never lowered: a staged rollout over 1.2 needs 0.2.0 whatever is given.
    staged = publish(published, "stable", "1.3", builds("1.3"), rollout_percent=50,
                     requires="0.1.0")
    assert staged.requires == "0.2.0"
    done = _release("rollout", str(published.path), "--channel", "stable", "--percent", "100")
    assert done.returncode == 0, done.stderr
    assert current_channel_file(published, "stable").requires is None  # computed: it went
    # A raised one stays when the release is signed anew (a rollout finished, a yank back).
    publish(published, "stable", "1.4", builds("1.4"), rollout_percent=50, requires="0.3.0")
    done = _release("rollout", str(published.path), "--channel", "stable", "--percent", "100")
    assert done.returncode == 0, done.stderr
    assert current_channel_file(published, "stable").requires == "0.3.0"
    publish(published, "stable", "1.5", builds("1.5"))
    done = _release("yank", str(published.path), "--channel", "stable", "--version", "1.5",
                    "--reason", "bad")
    assert done.returncode == 0, done.stderr
    back = current_channel_file(published, "stable")
    assert (back.release, back.requires) == ("1.4", "0.3.0")


def _publish_cmd(published, builds, version: str, collector: Collector, tmp_path: Path,
                 *extra: str) -> subprocess.CompletedProcess[str]:
    components = [f"--component={n}={p}" for n, p in builds(version).items()]
    return _release("publish", str(published.path), "--channel", "stable", "--version",
                    version, *components, "--requires", "0.3.0", "--collector", collector.url,
                    "--admin-token-file", str(tmp_path / "tokens" / "admin"), *extra)


def test_publish_refuses_a_release_the_machines_are_too_old_for(tmp_path, published, builds,
                                                                collector):
    _fleet(collector)
    before = (published.metadata_dir / "timestamp.json").read_bytes()
    refused = _publish_cmd(published, builds, "1.2", collector, tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert _one_line(refused) == (
        "release: error: stable 1.2 needs Greenlight >= 0.3.0, and 2 of the 5 machines "
        "reporting on stable run older (0.3.0rc1 on 1, 0.2.0 on 1; by kind: 1 python (pip "
        "moves it), 1 kind not said), while greenlight-stable carries no updater >= 0.3.0: "
        "publish one there first (release publish-updater), or pass --force REASON to "
        "publish anyway (recorded)")
    assert (published.metadata_dir / "timestamp.json").read_bytes() == before  # nothing signed
    assert current_channel_file(published, "stable").release == "1.0"
    assert not (published.path / "publish-overrides.jsonl").exists()

    down = tmp_path / "down"
    down.mkdir()
    (down / "tokens").mkdir()
    (down / "tokens" / "admin").write_text(ADMIN + "\n")
    unreachable = _release("publish", str(published.path), "--channel", "stable", "--version",
                           "1.2", *[f"--component={n}={p}" for n, p in builds("1.2").items()],
                           "--collector", f"http://127.0.0.1:{free_port()}/",
                           "--admin-token-file", str(down / "tokens" / "admin"))
    assert unreachable.returncode == 8 and "cannot reach the collector" in _one_line(unreachable)
    assert (published.metadata_dir / "timestamp.json").read_bytes() == before

    # An updater release older than it needs does not do; one that satisfies it does.
    _publish_updater(published, tmp_path, "0.3.0rc2")
    assert _publish_cmd(published, builds, "1.2", collector, tmp_path).returncode == 1
    _publish_updater(published, tmp_path, "0.3.0")
    done = _publish_cmd(published, builds, "1.2", collector, tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("Greenlight on stable: 5 machines: 0.3.0 on 3 (3 exe), 0.3.0rc1 on 1 (1 python "
            "(pip moves it)), 0.2.0 on 1 (1 kind not said)") in done.stdout, done.stdout
    entry = current_channel_file(published, "stable")
    assert (entry.release, entry.requires) == ("1.2", "0.3.0")
    # Machines that all run what a release needs: nothing to refuse.
    plain = _publish_cmd(published, builds, "1.3", collector, tmp_path, "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["census"]["older"] == 2  # shown; the updater is there


def test_force_publishes_over_the_census_and_records_it(tmp_path, published, builds,
                                                        collector):
    _fleet(collector)
    assert _release("publish", str(published.path), "--channel", "stable", "--version", "1.2",
                    *[f"--component={n}={p}" for n, p in builds("1.2").items()], "--force",
                    "x").returncode == 2  # --force goes with --collector
    done = _publish_cmd(published, builds, "1.2", collector, tmp_path, "--force",
                        "a security fix; the two old machines are being replaced")
    assert done.returncode == 0, done.stderr
    assert "published over the census (--force): stable 1.2 needs Greenlight >= 0.3.0, " \
           "and 2 of the 5 machines" in done.stdout, done.stdout
    assert "reason: a security fix; the two old machines are being replaced" in done.stdout
    assert current_channel_file(published, "stable").release == "1.2"
    log = published.path / "publish-overrides.jsonl"
    [line] = log.read_text().splitlines()
    record = json.loads(line)
    assert {k: record[k] for k in ("channel", "release", "requires", "reason")} == {
        "channel": "stable", "release": "1.2", "requires": "0.3.0",
        "reason": "a security fix; the two old machines are being replaced"}
    assert record["census"] == {"machines": 5, "older": 2,
                                "versions": {"0.3.0rc1": 1, "0.2.0": 1},
                                "kinds": {"python": 1, "unknown": 1}}
    assert datetime.fromisoformat(record["at"])
    assert ADMIN not in log.read_text() and collector.url not in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    done = _publish_cmd(published, builds, "1.3", collector, tmp_path, "--force", "again",
                        "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["override"]["reason"] == "again"
    assert [json.loads(x)["release"] for x in log.read_text().splitlines()] == ["1.2", "1.3"]
    empty = _publish_cmd(published, builds, "1.4", collector, tmp_path, "--force", " ")
    assert empty.returncode == 2 and "say why" in _one_line(empty)


def test_the_dashboard_shows_the_census(tmp_path, collector):
    """In a real headless Chromium: a Greenlight column per release and the census per
    channel, all set as text."""
    from test_rollouts import _chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (tests/ensure_packages.sh installs it as root)")
    _fleet(collector)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-sync",
             "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000", "--window-size=1400,1000", "--dump-dom"]
    dom = subprocess.run([browser, *flags, f"{collector.url}#token={ADMIN}"],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert ('<tr data-channel="stable"><td>stable</td><td>5</td><td>0.3.0 on 3 (3 exe); '
            "0.3.0rc1 on 1 (1 python); 0.2.0 on 1 (1 kind not said)</td></tr>") in html, \
        html[-3000:]
    assert '<tr data-channel="beta"><td>beta</td><td>1</td><td>0.3.0 on 1 (1 copy)</td>' in html
    row = html.split('<tr data-release="stable 1.1">')[1].split("</tr>")[0]
    assert '<td class="greenlight">0.3.0 on 1 (1 exe)</td>' in row, row
