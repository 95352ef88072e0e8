"""Evidence against the right release, on a real collector (uvicorn on 127.0.0.1) with
reports signed by real machine keys: when the release a machine leaves crashes on stop, the
machine reports `crashed-on-stop` against that release, naming the release it was upgrading
to (tests/test_e2e.py shows the report a real incident makes), and the release it went for is
counted only by its own outcome: in `/v1/rollouts`, in `release rollout status`, in the
dashboard, and in the halt rule and its reason."""

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from greenlight.channels import HaltRule, RolloutPlan
from greenlight.release import current_channel_file, publish
from greenlight.release.fleet import Guard, Store
from greenlight.release.repository._rollouts import current_state

from conftest import ADMIN, Collector, post_report, wait_state

BIN = Path(sys.executable).parent
COHORT = "linux-6/x86_64/default"
MACHINES = ["m1", "m2", "m3"]
MARKUP = "<img src=x onerror=alert(1)>"


def _report(key: str, outcome: str, before: str | None = None, check: str = "core-stop",
            summary: str = "exited with status 70", upgrading_to: str | None = None) -> dict:
    return {"schema": "greenlight.report/1", "at": datetime.now(UTC).isoformat(),
            "channel": "stable", "outcome": outcome, "release": key.split("@")[0],
            "release_key": key, "before": before, "after": key if outcome != "rolled-back"
            else before, "cohort": COHORT, "upgrading_to": upgrading_to,
            "failed_checks": [{"name": check, "summary": summary}]}


def _crashed_then_upgraded(tmp_path: Path, published, builds, summary: str = "exited with "
                           "status 70") -> tuple[Collector, str, str]:
    """A collector guarding stable; three machines known on its release (`prior`) before 1.2
    rolls out by plan (halt at 3 failed machines); each reports that `prior` crashed on stop
    during the upgrade to 1.2, and that the retry of 1.2 went through."""
    prior = current_channel_file(published, "stable").identity.key
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(published.path), "--tick", "0.2")
    for name in MACHINES:  # known before the rollout
        assert post_report(collector.url, name, _report(prior, "upgraded")).status_code == 202
    plan = RolloutPlan(steps=[5, 25, 100], soak=3600, started_at=datetime.now(UTC),
                       halt=HaltRule(rollbacks=3))
    key = publish(published, "stable", "1.2", builds("1.2"), rollout_plan=plan).identity.key
    for name in MACHINES:
        crashed = _report(prior, "crashed-on-stop", before=prior, summary=summary,
                          upgrading_to=key)
        assert post_report(collector.url, name, crashed).status_code == 202
        assert post_report(collector.url, name,
                           _report(key, "upgraded", before=prior)).status_code == 202
    return collector, prior, key


def _status(collector: Collector, tmp_path: Path) -> dict[str, list[str]]:
    """`release rollout status`, the vendor's view: each release's block of lines."""
    done = subprocess.run([str(BIN / "release"), "rollout", "status", "--collector",
                           collector.url, "--admin-token-file", str(tmp_path / "tokens" / "admin")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    blocks: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        if not line.startswith(" "):
            head = line.split(":")[0]
        blocks.setdefault(head, []).append(line)
    return blocks


def test_a_release_that_crashes_on_stop_is_counted_against_itself_not_its_successor(
        tmp_path, published, builds):
    collector, prior, key = _crashed_then_upgraded(tmp_path, published, builds)
    old_version = prior.split("@")[0]
    try:
        rows = collector.rollouts()
        new, old = rows[("stable", "1.2")], rows[("stable", old_version)]
        assert new["outcomes"] == {"upgraded": 3}, new
        assert new["failures"] == [] and new["checks"] == [], new
        assert old["outcomes"] == {"upgraded": 3, "crashed-on-stop": 3}, old
        assert old["failures"] == [{
            "outcome": "crashed-on-stop", "machines": 3, "release": old_version,
            "upgrading_to": "1.2",
            "text": f"{old_version} crashed on stop (upgrading to 1.2)"}], old
        assert [c["name"] for c in old["checks"]] == ["core-stop"]
        # The halt rule, as the collector judges it now: nothing against 1.2.
        assert Guard(published.path, None, Store(
            f"sqlite:///{tmp_path / 'c.sqlite3'}")).judge("stable") is None
        state = current_state(published, "stable")
        assert state is None or not state.halted, state
        assert new["plan"]["halted"] is False and new["plan"]["reason"] is None, new["plan"]

        blocks = _status(collector, tmp_path)
        assert blocks["stable 1.2"][0] == ("stable 1.2: 3 machines reporting; 3 upgraded, 0 "
                                           "rolled back, 0 dead ends, 0 pre-check blocked, "
                                           "0 held")
        assert not any("failed" in line or "HALTED" in line for line in blocks["stable 1.2"])
        assert blocks[f"stable {old_version}"][0].endswith("0 held, 3 crashed on stop")
        assert (f"  failed: 3 machine(s): {old_version} crashed on stop (upgrading to 1.2)"
                in blocks[f"stable {old_version}"])
    finally:
        collector.stop()


def test_a_halt_counts_and_names_only_the_release_s_own_failures(tmp_path, published, builds):
    """The release left crashed on stop on every machine; then 1.2 itself fails on the same
    three (two crash loops, one rollback): the halt says so, with 1.2's own failed check,
    and never counts the old release's deaths on stop."""
    collector, prior, key = _crashed_then_upgraded(tmp_path, published, builds)
    try:
        for name, outcome in zip(MACHINES, ["crash-loop", "crash-loop", "rolled-back"],
                                 strict=True):
            failed = _report(key, outcome, before=key if outcome == "crash-loop" else prior,
                             check="ui-session", summary="HTTP 403: denying api access")
            assert post_report(collector.url, name, failed).status_code == 202
        state = wait_state(published, lambda s: s.halted)
        assert state.reason == ("3 of 3 machines reporting on 1.2 failed (1 rolled back, 2 in "
                                "a crash loop); most failed check ui-session: HTTP 403: "
                                "denying api access"), state.reason
        rows = collector.rollouts()
        assert [(f["outcome"], f["machines"], f["text"])
                for f in rows[("stable", "1.2")]["failures"]] == [
            ("crash-loop", 2, "1.2 went into a crash loop"),
            ("rolled-back", 1, "1.2 failed and was rolled back")]
        old = rows[("stable", prior.split("@")[0])]
        assert [f["outcome"] for f in old["failures"]] == ["crashed-on-stop"]
        assert "HALTED by collector: 3 of 3 machines reporting on 1.2 failed (1 rolled " \
               "back, 2 in a crash loop)" in "\n".join(_status(collector, tmp_path)["stable 1.2"])
    finally:
        collector.stop()


def test_the_dashboard_shows_each_failure_against_its_own_release(tmp_path, published, builds):
    """In a real headless Chromium: the old release's row says it crashed on stop during the
    upgrade to 1.2, and its chart draws those as its failures; 1.2's row has none and is not
    halted; what the machines wrote stays text."""
    from test_rollouts import _chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (tests/ensure_packages.sh installs it as root)")
    collector, prior, key = _crashed_then_upgraded(tmp_path, published, builds,
                                                   summary=f"exited with status 70 {MARKUP}")
    old_version = prior.split("@")[0]
    try:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
                 "--virtual-time-budget=10000", "--window-size=1400,1000", "--dump-dom"]
        dom = subprocess.run([browser, *flags, f"{collector.url}#token={ADMIN}"],
                             capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout

        def row(release: str) -> list[str]:
            assert f'<tr data-release="stable {release}">' in html, html[-3000:]
            tr = html.split(f'<tr data-release="stable {release}">')[1].split("</tr>")[0]
            return [c.split(">", 1)[1] for c in tr.split("</td>")[:-1]]

        new = row("1.2")
        assert new[:8] == ["stable", "1.2", "3", "3", "0", "0", "0", "-"], new
        assert "HALTED" not in new[8] and "step 1 of 3 (5%)" in new[8], new[8]
        old = row(old_version)
        assert old[:7] == ["stable", old_version, "3", "3", "0", "0", "0"], old
        assert (f'<li class="failure" data-outcome="crashed-on-stop">3 machines: '
                f"{old_version} crashed on stop (upgrading to 1.2)</li>") in old[7], old[7]
        assert "exited with status 70 &lt;img src=x onerror=alert(1)&gt;" in old[9], old[9]
        assert "<img" not in html
        chart = html.split(f'class="chart" data-release="stable {old_version}">')[1].split(
            'class="chart"')[0]
        bars = re.findall(r'<title>[^<]*: (\d+) (upgraded|failed)</title>', chart)
        assert sum(int(n) for n, what in bars if what == "failed") == 3, bars
        assert 'data-release="stable 1.2">' in html  # its chart: upgrades only
        chart = html.split('class="chart" data-release="stable 1.2">')[1]
        assert " failed</title>" not in chart.split('class="chart"')[0]
    finally:
        collector.stop()


def test_a_halt_reason_says_how_the_machines_failed():
    """The pure rule's reason: "rolled back" when every failed machine did, else each way
    (a release's own crash on stop, when machines left it for an upgrade, among them)."""
    from greenlight.channels import SequentialRule
    from greenlight.release.fleet import Evidence, RolloutPosition, judge

    now = datetime.now(UTC)
    counted = HaltRule(rollbacks=3)
    position = RolloutPosition("1.3", (5, 100), 0, 3600, counted, False, now)
    mixed = Evidence(3, 10, ("core-stop", "exited with status 70"),
                     kinds=(("rolled-back", 1), ("crashed-on-stop", 2)))
    assert judge(position, mixed, now).reason == (
        "3 of 10 machines reporting on 1.3 failed (1 rolled back, 2 crashed on stop); most "
        "failed check core-stop: exited with status 70")
    rollbacks = Evidence(3, 10, kinds=(("rolled-back", 3),))
    assert judge(position, rollbacks, now).reason == "3 of 10 machines reporting on 1.3 rolled back"
    sequential = HaltRule(sequential=SequentialRule(false_halt=0.01))
    position = RolloutPosition("1.3", (5, 100), 0, 3600, sequential, False, now)
    reason = judge(position, Evidence(6, 10, kinds=(("dead-end", 2), ("crash-loop", 4))),
                   now).reason
    assert reason is not None and reason.startswith(
        "6 of 10 machines reporting on 1.3 failed (60.0%: 2 at a dead end, 4 in a crash loop), "
        "above the baseline's"), reason
