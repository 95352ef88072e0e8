"""The dashboard's feedback view, in a real headless Chromium: what users wrote,
per release and cohort, beside the outcomes their machines reported, the latest texts with
the failing check's evidence, and a rollout its feedback rule paused; every text from a
machine shown as text, never run as markup."""

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_feedback_collector import REAL, feedback, post_feedback
from test_rollouts import _chromium

from greenlight.channels import FeedbackRule, HaltRule, RolloutPlan
from greenlight.release import current_channel_file, publish

from conftest import ADMIN, Collector, machine_id, post_report

SCRIPT = "<script>alert(1)</script> the panel is blank"
IMG = 'it says <img src=x onerror="alert(2)"> and nothing works'


def _report(key: str, outcome: str) -> dict:
    return {"schema": "greenlight.report/1", "at": datetime.now(UTC).isoformat(),
            "channel": "stable", "outcome": outcome, "release": key.split("@")[0],
            "release_key": key, "cohort": REAL,
            "failed_checks": [{"name": "ui-state", "summary": "HTTP 403: denying api access"}]
            if outcome != "upgraded" else []}


def test_the_dashboard_shows_feedback_beside_the_outcomes_as_text(tmp_path, published, builds):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (tests/ensure_packages.sh installs it as root)")
    prior = current_channel_file(published, "stable").identity.key
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(published.path), "--tick", "0.2")
    try:
        for name in ("c1", "c2", "c3"):  # known before the rollout began
            assert post_report(collector.url, name, _report(prior, "upgraded")).status_code \
                == 202
        cf = publish(published, "stable", "1.2", builds("1.2"), rollout_plan=RolloutPlan(
            steps=[5, 25, 100], soak=3600, started_at=datetime.now(UTC),
            halt=HaltRule(rollbacks=3, feedback=FeedbackRule(machines=2))))
        key = cf.identity.key
        for name, outcome in (("c1", "rolled-back"), ("c2", "rolled-back"),
                              ("c3", "upgraded")):
            assert post_report(collector.url, name, _report(key, outcome)).status_code == 202
        for name, text in (("c1", SCRIPT), ("c2", IMG)):
            answer = post_feedback(collector.url, name, feedback(
                name, text=text, release="1.2", release_key=key,
                incident={"at": datetime.now(UTC).isoformat(), "event": "rolled-back",
                          "release": key, "back_to": prior, "check": "ui-state",
                          "summary": "HTTP 403"}))
            assert answer.status_code == 202, answer.text

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
                 "--virtual-time-budget=10000", "--window-size=1400,1400"]
        url = f"{collector.url}#token={ADMIN}"
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True,
                             text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout

        # nothing a machine wrote became markup: no element, no handler, no script ran
        assert "<img" not in html and "<script>alert" not in html
        group = html.split(f'data-group="stable 1.2 {REAL}"')[1].split('class="feedback-group"')[0]
        assert (f"stable 1.2 · {REAL}: 2 of 3 machines failed ui-state, 2 users wrote in"
                in group), group
        assert "most failed check in the reports: ui-state (2): HTTP 403: denying api access" \
            in group
        assert "feedback filed under: ui-state (2)" in group
        assert "&lt;script&gt;alert(1)&lt;/script&gt; the panel is blank" in group
        assert "it says &lt;img src=x onerror=\"alert(2)\"&gt; and nothing works" in group
        assert 'ui-state: HTTP 403 — evidence: {"status": 403, "body": "denying api access"}' \
            in group
        assert f"machine {machine_id('c1')[:8]}" in group and "rolled back from 1.2@" in group

        row = html.split('<tr data-release="stable 1.2">')[1].split("</tr>")[0]
        assert ("PAUSED: 2 machines wrote in since the step began; halts stay automatic, "
                "advancing waits for a person") in row, row
        assert ">Resume</button>" in row and ">Halt</button>" in row

        shots = Path(__file__).parents[1] / "build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "collector-feedback.png"
        taken = subprocess.run([browser, *flags, f"--screenshot={shot}", url],
                               capture_output=True, text=True, timeout=120)
        assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        collector.stop()
