"""Evidence against the right release, on a real collector (uvicorn on 127.0.0.1) with
reports signed by real machine keys: when the release a machine leaves crashes on stop, the
machine reports `crashed-on-stop` against that release (tests/test_e2e.py shows the report a
real incident makes), and the release it went for is counted only by its own outcome."""

from datetime import UTC, datetime

from greenlight.channels import HaltRule, RolloutPlan
from greenlight.release import current_channel_file, publish
from greenlight.release.repository._rollouts import current_state

from conftest import Collector, post_report

COHORT = "linux-6/x86_64/default"


def _report(key: str, outcome: str, before: str | None = None) -> dict:
    return {"schema": "greenlight.report/1", "at": datetime.now(UTC).isoformat(),
            "channel": "stable", "outcome": outcome, "release": key.split("@")[0],
            "release_key": key, "before": before, "after": key if outcome != "rolled-back"
            else before, "cohort": COHORT,
            "failed_checks": [{"name": "core-stop", "summary": "exited with status 70"}]}


def test_a_release_that_crashes_on_stop_is_counted_against_itself_not_its_successor(
        tmp_path, published, builds):
    prior = current_channel_file(published, "stable").identity.key
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(published.path), "--tick", "0.2")
    try:
        machines = ["m1", "m2", "m3"]
        for name in machines:  # known before the rollout
            assert post_report(collector.url, name,
                               _report(prior, "upgraded")).status_code == 202
        plan = RolloutPlan(steps=[5, 25, 100], soak=3600, started_at=datetime.now(UTC),
                           halt=HaltRule(rollbacks=3))
        key = publish(published, "stable", "1.2", builds("1.2"), rollout_plan=plan).identity.key
        for name in machines:  # the old release died on stop; the retry of 1.2 went through
            crashed = _report(prior, "crashed-on-stop", before=prior)
            assert post_report(collector.url, name, crashed).status_code == 202
            assert post_report(collector.url, name,
                               _report(key, "upgraded", before=prior)).status_code == 202
        rows = collector.rollouts()
        new, old = rows[("stable", "1.2")], rows[("stable", prior.split("@")[0])]
        assert new["outcomes"] == {"upgraded": 3}, new
        assert old["outcomes"].get("crashed-on-stop") == 3, old
        state = current_state(published, "stable")  # none published: nothing halted
        assert state is None or not state.halted, state
    finally:
        collector.stop()
