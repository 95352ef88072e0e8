"""The transaction engine, the pure policies and the halt judge, tested directly: no
processes, no network; the journal is a real file under a real root."""

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenlight.channels import HaltRule
from greenlight.release.fleet import Evidence, RolloutPosition, judge
from greenlight.updater.policy import AgentInput, agent_step
from greenlight.updater.store import InstallRoot, Journal, StepRecord
from greenlight.updater.transaction import Step, run_steps, undo_steps


@dataclass
class Ctx:
    root: InstallRoot
    journal: Journal
    timings: dict[str, float] = field(default_factory=dict)
    effects: list[str] = field(default_factory=list)
    """what is in place now: a step's name while its effect is there"""
    broken_undo: set[str] = field(default_factory=set)
    fail_at: str | None = None


def _steps(names: list[str]) -> list[Step[Ctx]]:
    def make(name: str) -> Step[Ctx]:
        def do(ctx: Ctx) -> None:
            if ctx.fail_at == name:
                raise RuntimeError(f"{name} failed")
            ctx.effects.append(name)

        def undo(ctx: Ctx) -> None:
            if name in ctx.broken_undo:
                raise OSError(f"cannot undo {name}")
            if name in ctx.effects:  # idempotent: undoing what is not there changes nothing
                ctx.effects.remove(name)

        return Step(name, do, undo)

    return [make(n) for n in names]


def _ctx(tmp_path, names: list[str]) -> Ctx:
    root = InstallRoot(tmp_path / "root")
    root.state.mkdir(parents=True, exist_ok=True)
    journal = Journal.model_validate({
        "kind": "upgrade", "channel": "stable", "from_release": None, "to_release": "1.0@ab",
        "started_at": datetime.now(UTC), "steps": [StepRecord(name=n) for n in names]})
    journal.save(root)
    return Ctx(root, journal)


def test_run_steps_journals_each_step_done(tmp_path):
    names = ["fetch", "stage", "switch"]
    ctx = _ctx(tmp_path, names)
    run_steps(_steps(names), ctx)
    on_disk = Journal.load(ctx.root)
    assert on_disk is not None and [s.state for s in on_disk.steps] == ["done"] * 3
    assert ctx.effects == names and set(ctx.timings) == set(names)


def test_a_failing_step_stays_doing_and_undo_reverses_in_order(tmp_path):
    names = ["a", "b", "c", "d"]
    ctx = _ctx(tmp_path, names)
    ctx.fail_at = "c"
    with pytest.raises(RuntimeError):
        run_steps(_steps(names), ctx)
    assert [ctx.journal.state_of(n) for n in names] == ["done", "done", "doing", "pending"]
    assert undo_steps(_steps(names), ctx, "c failed") == []
    assert ctx.effects == []
    assert [ctx.journal.state_of(n) for n in names] == ["undone", "undone", "undone", "pending"]


def test_an_undo_that_raises_is_recorded_as_failed_and_named(tmp_path):
    names = ["stop", "switch", "start"]
    ctx = _ctx(tmp_path, names)
    run_steps(_steps(names), ctx)
    ctx.broken_undo = {"switch"}
    errors = undo_steps(_steps(names), ctx, "post-check failed")
    assert errors == ["undo of step switch failed: cannot undo switch"]
    on_disk = Journal.load(ctx.root)
    assert on_disk is not None
    assert {s.name: s.state for s in on_disk.steps} == {
        "stop": "undone", "switch": "undo-failed", "start": "undone"}
    assert ctx.effects == ["switch"]  # the others were still undone
    ctx.broken_undo = set()  # the next recovery tries the failed one again
    assert undo_steps(_steps(names), ctx, "recovery") == []
    assert ctx.effects == [] and ctx.journal.state_of("switch") == "undone"


@settings(max_examples=150, deadline=None)
@given(count=st.integers(1, 7), fail=st.integers(0, 8), broken=st.sets(st.integers(0, 6)),
       repeats=st.integers(1, 3))
def test_undo_is_idempotent_and_recovery_converges(tmp_path_factory, count, fail, broken,
                                                   repeats):
    names = [f"s{i}" for i in range(count)]
    ctx = _ctx(tmp_path_factory.mktemp("engine"), names)
    ctx.fail_at = names[fail] if fail < count else None
    with contextlib.suppress(RuntimeError):
        run_steps(_steps(names), ctx)
    ctx.broken_undo = {names[i] for i in broken if i < count}
    errors = undo_steps(_steps(names), ctx, "first")
    failed = {n for n in names if ctx.journal.state_of(n) == "undo-failed"}
    assert failed == {e.split()[3] for e in errors}  # every failed undo is named, no other
    assert set(ctx.effects) <= failed  # what stayed is only what could not be undone
    ctx.broken_undo = set()
    for _ in range(repeats):  # recovery, once or again: the same end
        assert undo_steps(_steps(names), ctx, "recovery") == []
        assert ctx.effects == []
        assert all(ctx.journal.state_of(n) in ("undone", "pending") for n in names)


AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("given_", "action", "why"), [
    (dict(revoked=True, hold="freeze"), "leave-revoked", None),
    (dict(revoked=True, hold="freeze", leave_revoked_at_once=False), "wait-revoked",
     "on hold: freeze"),
    (dict(revoked=True, windows=("02:00-03:00",), leave_revoked_at_once=False), "wait-revoked",
     "outside the install windows 02:00-03:00"),
    (dict(held="quarantined here", update_available=True), "held", "quarantined here"),
    (dict(), "up-to-date", None),
    (dict(update_available=True, apply="notify"), "notify", None),
    (dict(update_available=True, apply="download"), "download", None),
    (dict(update_available=True, hold="freeze"), "download", "on hold: freeze"),
    (dict(update_available=True, windows=("02:00-03:00",)), "download",
     "outside the install windows 02:00-03:00"),
    (dict(update_available=True, windows=("11:00-13:00",)), "install", None),
    (dict(update_available=True), "install", None),
])
def test_the_agent_policy_rules_in_order(given_, action, why):
    base = dict(revoked=False, held=None, update_available=False, apply="auto", windows=(),
                local=AT, hold=None)
    step = agent_step(AgentInput(**{**base, **given_}))
    assert (step.action, step.why) == (action, why)


def _position(**changes):
    base = dict(version="1.2", steps=(5, 25, 100), step=0, soak=3600.0,
                rule=HaltRule(rollbacks=3, failure_ratio=0.05, min_reports=20), halted=False,
                step_began=AT)
    return RolloutPosition(**{**base, **changes})


@pytest.mark.parametrize(("position", "evidence", "now", "verdict"), [
    (_position(), Evidence(3, 4, ("ui-session", "HTTP 403")), AT, "halt"),
    (_position(), Evidence(2, 19), AT, "none"),  # under both parts of the rule
    (_position(), Evidence(2, 20), AT, "halt"),  # 10% of 20 > 5%
    (_position(), Evidence(1, 20), AT, "none"),  # exactly 5%: not more than the ratio
    (_position(halted=True), Evidence(9, 9), AT, "none"),  # already halted: left alone
    (_position(), Evidence(0, 50), AT + timedelta(hours=1), "advance"),
    (_position(), Evidence(0, 50), AT + timedelta(minutes=59), "none"),
    (_position(step=2), Evidence(0, 50), AT + timedelta(days=9), "none"),  # the last step
])
def test_the_halt_judge(position, evidence, now, verdict):
    got = judge(position, evidence, now)
    assert got.action == verdict
    if verdict == "halt":
        assert got.reason is not None and got.reason.startswith(
            f"{evidence.failed} of {evidence.total} machines reporting on 1.2 rolled back")
        assert len(got.reason) <= 400
    if verdict == "advance":
        assert got.step == position.step + 1
