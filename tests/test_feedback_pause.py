"""A feedback rule is a signal, not a verdict: when enough machines' users wrote in
about a release within a step, the collector does not advance it to the next step until a
person resumes it; halts stay automatic, and feedback never halts or rolls back anything.
The pure judge by a table, then a real collector guarding a real repository."""

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from test_feedback_collector import feedback, post_feedback

from greenlight.channels import (
    ChannelFile,
    ComponentArtifact,
    FeedbackRule,
    HaltRule,
    Rollout,
    RolloutPlan,
    required_version,
)
from greenlight.release import publish
from greenlight.release.fleet._judge import Evidence, RolloutPosition, judge
from greenlight.release.repository._repository import FileRepository
from greenlight.release.repository._rollouts import current_state

from conftest import ADMIN, Collector, post_report, wait_state

BIN = Path(sys.executable).parent
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _position(feedback_rule: int | None, step: int = 0, soaked: bool = True,
              halted: bool = False, steps: tuple[int, ...] = (5, 25, 100)) -> RolloutPosition:
    rule = HaltRule(rollbacks=3, feedback=None if feedback_rule is None
                    else FeedbackRule(machines=feedback_rule))
    return RolloutPosition("1.6.11", steps, step, 3600.0, rule, halted,
                           NOW - (2 * HOUR if soaked else HOUR / 2))


@pytest.mark.parametrize(("rule", "step", "soaked", "halted", "failed", "wrote", "action",
                          "reason"), [
    (None, 0, True, False, 0, 50, "advance", None),          # no rule: feedback is not asked
    (12, 0, True, False, 0, 11, "advance", None),            # below the rule
    (12, 0, True, False, 0, 12, "pause", "12 machines wrote in since the step began"),
    (1, 1, True, False, 0, 1, "pause", "1 machine wrote in since the step began"),
    (12, 0, True, False, 2, 40, "pause", "40 machines wrote in since the step began"),
    (12, 0, False, False, 0, 40, "none", None),              # still soaking: nothing to hold
    (12, 2, True, False, 0, 40, "none", None),               # the last step: nothing to hold
    (12, 0, True, True, 3, 40, "none", None),                # halted already: left alone
    (12, 0, True, False, 3, 40, "halt", "3 of 3 machines"),   # halts stay automatic
    (12, 0, False, False, 3, 0, "halt", "3 of 3 machines"),
])
def test_the_judge_pauses_the_advance_and_never_halts_by_feedback(
        rule, step, soaked, halted, failed, wrote, action, reason):
    verdict = judge(_position(rule, step, soaked, halted),
                    Evidence(failed, max(failed, 3), feedback=wrote), NOW)
    assert verdict.action == action, verdict
    if reason is not None:
        assert verdict.reason is not None and verdict.reason.startswith(reason), verdict
    if action == "pause":
        assert verdict.step is None  # it moves nothing


@pytest.mark.parametrize("wrote", [0, 1, 5, 10_000])
def test_feedback_alone_never_halts(wrote):
    for rule in (None, 1, 5):
        for step in (0, 1, 2):
            verdict = judge(_position(rule, step), Evidence(0, 100, feedback=wrote), NOW)
            assert verdict.action in ("advance", "pause", "none"), verdict


def test_the_rule_is_signed_into_the_plan_and_informs_the_machines_only():
    with pytest.raises(ValidationError):
        FeedbackRule(machines=0)
    plan = RolloutPlan(steps=[5, 100], soak=60, started_at=NOW,
                       halt=HaltRule(feedback=FeedbackRule(machines=12)))
    entry = ChannelFile(
        channel="beta", release="9.9", published_at=NOW,
        components={"core": ComponentArtifact(version="9.9", target="artifacts/core/9.9/c",
                                              sha256="a" * 64, length=1)},
        rollout=Rollout(percent=5, plan=plan))
    with_rule = ChannelFile.from_json(entry.to_json()).model_dump(mode="json",
                                                                  exclude_none=True)
    assert with_rule["rollout"]["plan"]["halt"]["feedback"] == {"machines": 12}
    without = ChannelFile.from_json(entry.model_copy(update={"rollout": Rollout(
        percent=5, plan=plan.model_copy(update={"halt": HaltRule()}))}).to_json()
    ).model_dump(mode="json", exclude_none=True)
    # informational: the entry needs no newer Greenlight than it would without the rule
    # (past 0.1.0, which refuses any field it does not know)
    assert required_version(with_rule) == (required_version(without) or "0.2.0")
    from greenlight.release.cli._common import rollout_line
    from greenlight.release.cli._repository import plan_of

    made = plan_of("5,25,100", "1h", 3, 0.05, 20, feedback=12)
    assert made.halt.feedback == FeedbackRule(machines=12)
    assert "pausing the advance once 12 machines' users wrote in within a step" in \
        rollout_line(entry)


class _Output(list[str]):
    """The collector's output, read as it comes by a thread of its own; `said` waits for a
    line, woken by each line that arrives (no polling)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__()
        self.arrived = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            with self.arrived:
                self.append(line.rstrip("\n"))
                self.arrived.notify_all()

    def said(self, piece: str, deadline: float = 30) -> str:
        """The first line holding `piece`, once the collector said it."""
        with self.arrived:
            found = self.arrived.wait_for(lambda: any(piece in line for line in self),
                                          timeout=deadline)
            assert found, f"the collector never said {piece!r}: {list(self)}"
            return next(line for line in self if piece in line)


def _plan(rule: int, soak: float) -> RolloutPlan:
    return RolloutPlan(steps=[5, 25, 100], soak=soak, started_at=datetime.now(UTC),
                       halt=HaltRule(rollbacks=3, feedback=FeedbackRule(machines=rule)))


def test_feedback_pauses_a_rollout_until_a_person_resumes_it(tmp_path, published, builds):
    from greenlight.release import current_channel_file

    prior = current_channel_file(published, "stable").identity.key
    db = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    collector = Collector(tmp_path, db, None, "--repo", str(published.path), "--tick", "0.2")
    lines = _Output(collector.proc)
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def plan_row() -> dict:
        rows = httpx.get(collector.url + "v1/rollouts", headers=admin).json()["rollouts"]
        return next(r["plan"] for r in rows if r["release"] == "1.2")

    try:
        for name in ("c1", "c2"):  # machines the collector knew before the rollout began
            answer = post_report(collector.url, name, {
                "schema": "greenlight.report/1", "at": datetime.now(UTC).isoformat(),
                "channel": "stable", "outcome": "upgraded", "release": prior.split("@")[0],
                "release_key": prior})
            assert answer.status_code == 202, answer.text
        cf = publish(published, "stable", "1.2", builds("1.2"), rollout_plan=_plan(2, 3))
        key = cf.identity.key

        def wrote(name: str) -> None:
            answer = post_feedback(collector.url, name, feedback(
                name, release="1.2", release_key=key, text="the panel says 403"))
            assert answer.status_code == 202, answer.text

        wrote("c1")  # all within the step's soak, which the rule is judged at the end of
        wrote("minted")
        wrote("c2")
        # three wrote in; a key made for the occasion counts for nothing
        assert plan_row()["feedback"] == {"rule": 2, "machines": 2, "paused": True}
        said = lines.said("paused stable 1.2")
        assert said == ("paused stable 1.2 at 5%: 2 machines wrote in since the step began; "
                        "halts stay automatic, advancing waits for a person")
        state = current_state(FileRepository(published.path), "stable")
        assert state is None or (state.step == 0 and not state.halted)  # not moved, not halted

        # A person looks, and lifts the pause (the dashboard's Resume): only feedback after
        # the resume counts, and the step, soaked, advances.
        done = httpx.post(collector.url + "v1/rollouts/resume",
                          json={"channel": "stable", "release": "1.2"}, headers=admin)
        assert done.status_code == 200, done.text
        stepped = wait_state(published, lambda s: s.step == 1)
        assert plan_row()["feedback"]["machines"] == 0
        # The resume is signed to the second: feedback received within that second may be
        # what the person saw, so the count starts at its end (as the halt rule's does).
        while datetime.now(UTC) < stepped.counted_since + timedelta(seconds=1):
            time.sleep(0.02)

        wrote("c1")
        wrote("c2")
        lines.said("paused stable 1.2 at 25%")
        shown = subprocess.run(
            [str(BIN / "release"), "rollout", "status", "--collector", collector.url,
             "--admin-token-file", str(tmp_path / "tokens" / "admin")],
            capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert ("PAUSED: 2 machines wrote in since the step began; advancing waits for a "
                "person") in shown.stdout, shown.stdout
        resumed = subprocess.run(
            [str(BIN / "release"), "rollout", str(published.path), "--channel", "stable",
             "--resume"], capture_output=True, text=True, timeout=60)
        assert resumed.returncode == 0, resumed.stderr
        last = wait_state(published, lambda s: s.step == 2)
        assert not last.halted and last.counted_since is not None
    finally:
        collector.stop()
    lines.said("advanced stable 1.2 to step 3", 10)
    # said once each time, however many ticks looked at the paused step
    assert sum("paused stable 1.2 at 5%" in line for line in lines) == 1, lines
    assert sum("paused stable 1.2 at 25%" in line for line in lines) == 1, lines
    assert not any(line.startswith("halted") for line in lines), lines
