"""The transaction engine, the pure policies and the halt judge, tested directly: no
processes, no network; the journal is a real file under a real root."""

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from greenlight.channels import (
    ChannelFile,
    ComponentArtifact,
    HaltRule,
    PreviousRelease,
    ReleaseId,
    RevokedRelease,
    Rollout,
)
from greenlight.release.fleet import Evidence, RolloutPosition, judge
from greenlight.updater.policy import AgentInput, agent_step, decide
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



class _Killed(BaseException):
    """The process dies here: nothing after this line of the engine runs, and what is in
    memory is gone; the world (the effects) and the journal on disk stay as they were."""


_NAMES = ["fetch", "stage", "stop", "switch", "start"]


class JournalMachine(RuleBasedStateMachine):
    """Transactions over the real journal, killed anywhere in a step or an undo, with undos
    that break and get repaired, and recovery run by a "new process" that knows only the
    journal on disk. Recovery always converges: once nothing is broken, one recovery leaves
    no effect in place and no transaction open, and a second changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="journal-machine-"))
        self.root = InstallRoot(self.tmp / "root")
        self.root.state.mkdir(parents=True)
        self.world: set[str] = set()  # effects in place, as on a disk
        self.broken: set[str] = set()
        self.kill: tuple[str, str] | None = None  # (step, "do" or "undo"), after its effect
        self.journal: Journal | None = None

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _ctx(self, journal: Journal) -> Ctx:
        return Ctx(self.root, journal)

    def _steps(self, ctx: Ctx) -> list[Step[Ctx]]:
        def make(name: str) -> Step[Ctx]:
            def do(c: Ctx) -> None:
                if c.fail_at == name:
                    raise RuntimeError(f"{name} failed")
                self.world.add(name)
                if self.kill == (name, "do"):
                    self.kill = None
                    raise _Killed

            def undo(c: Ctx) -> None:
                if name in self.broken:
                    raise OSError(f"cannot undo {name}")
                self.world.discard(name)
                if self.kill == (name, "undo"):
                    self.kill = None
                    raise _Killed

            return Step(name, do, undo)

        return [make(n) for n in _NAMES]

    def _crashed(self) -> None:
        self.journal = Journal.load(self.root)  # a new process reads what is on disk

    @precondition(lambda self: Journal.load(self.root) is None)
    @rule(fail=st.sampled_from([None, *_NAMES]))
    def begin(self, fail: str | None) -> None:
        journal = Journal.model_validate({
            "kind": "upgrade", "channel": "stable", "from_release": None,
            "to_release": "1.0@ab", "started_at": datetime.now(UTC),
            "steps": [StepRecord(name=n) for n in _NAMES]})
        journal.save(self.root)
        ctx = self._ctx(journal)
        ctx.fail_at = fail
        try:
            run_steps(self._steps(ctx), ctx)
        except RuntimeError:
            try:
                errors = undo_steps(self._steps(ctx), ctx, f"{fail} failed")
            except _Killed:
                self._crashed()
                return
            if not errors:
                assert not self.world
                ctx.journal.finish(self.root)
        except _Killed:
            self._crashed()
            return
        else:  # committed: its effects are the new baseline, not the transaction's any more
            ctx.journal.finish(self.root)
            self.world.clear()
        self.journal = Journal.load(self.root)

    @rule(step=st.sampled_from(_NAMES), when=st.sampled_from(["do", "undo"]))
    def arm_kill(self, step: str, when: str) -> None:
        self.kill = (step, when)

    @rule(step=st.sampled_from(_NAMES))
    def break_undo(self, step: str) -> None:
        self.broken.add(step)

    @rule()
    def repair(self) -> None:
        self.broken.clear()

    @precondition(lambda self: Journal.load(self.root) is not None)
    @rule()
    def recover(self) -> None:
        journal = Journal.load(self.root)
        assert journal is not None
        ctx = self._ctx(journal)
        try:
            errors = undo_steps(self._steps(ctx), ctx, "recovery")
        except _Killed:
            self._crashed()
            return
        failed = {n for n in _NAMES if journal.state_of(n) == "undo-failed"}
        assert failed == {e.split()[3] for e in errors} and failed <= self.broken
        if not errors:
            assert not self.world, "recovery left an effect in place"
            # Idempotent: undoing again, as a recovery killed after its undo would, changes
            # nothing.
            assert undo_steps(self._steps(ctx), ctx, "recovery again") == []
            assert not self.world
            journal.finish(self.root)
        self.journal = Journal.load(self.root)

    @invariant()
    def the_journal_on_disk_tells_what_is_in_place(self) -> None:
        journal = Journal.load(self.root)
        if journal is None:
            return
        for name in _NAMES:
            state = journal.state_of(name)
            if state in ("pending", "undone"):
                assert name not in self.world, (name, state)
            elif state == "done":
                assert name in self.world, (name, state)
            # doing, undoing, undo-failed: either, and recovery deals with it

def test_recovery_converges_whatever_the_kills_and_broken_undos():
    """Run the machine, then prove convergence from wherever it stopped."""
    run_state_machine_as_test(JournalMachine, settings=settings(
        max_examples=60, stateful_step_count=25, deadline=None))


class _Converging(JournalMachine):
    @rule()
    def repaired_recovery_converges(self) -> None:
        self.broken.clear()
        self.kill = None
        if Journal.load(self.root) is not None:
            self.recover()
            assert Journal.load(self.root) is None and not self.world


def test_once_repaired_one_recovery_ends_every_transaction():
    run_state_machine_as_test(_Converging, settings=settings(
        max_examples=60, stateful_step_count=25, deadline=None))


@pytest.mark.exhaustive
@pytest.mark.parametrize("machine", [JournalMachine, _Converging])
def test_recovery_converges_over_a_thousand_transactions(machine):
    run_state_machine_as_test(machine, settings=settings(
        max_examples=1000, stateful_step_count=40, deadline=None))



# The plan's rules, in their order (policy/_channel.py): the first that applies decides.
_PLAN_RULES = [("revoked", "leave-yanked"), ("same", "up-to-date"), ("pinned", "held"),
               ("quarantined", "held"), ("outside-rollout", "held"), ("older", "held")]


def _plan_case(conditions: frozenset[str]) -> tuple[ChannelFile, ReleaseId | None,
                                                   dict[ReleaseId, str], str | None]:
    def artifact(version: str, digest: str) -> ComponentArtifact:
        return ComponentArtifact(version=version, target=f"artifacts/core/{version}/c.tar",
                                 sha256=digest * 64, length=1)

    installed_version = ("1.2" if "same" in conditions else
                         "1.3" if "older" in conditions else "1.1")
    channel = ChannelFile(
        channel="stable", release="1.2", published_at=AT,
        components={"core": artifact("1.2", "a")},
        revoked=[RevokedRelease(version=installed_version, reason="bad", revoked_at=AT)]
        if "revoked" in conditions else [],
        rollout=Rollout(percent=0) if "outside-rollout" in conditions else None)
    if "same" in conditions:
        installed = channel.identity
    else:
        installed = ChannelFile(channel="stable", release=installed_version, published_at=AT,
                                components={"core": artifact(installed_version, "b")}).identity
    quarantined = {channel.identity: "failed here"} if "quarantined" in conditions else {}
    pin = "1.0" if "pinned" in conditions else None
    return channel, installed, quarantined, pin


@pytest.mark.parametrize("conditions", [
    frozenset(c for i, (c, _) in enumerate(_PLAN_RULES) if mask >> i & 1)
    for mask in range(2 ** len(_PLAN_RULES))], ids=lambda c: "+".join(sorted(c)) or "none")
def test_the_plan_rules_apply_in_their_order(conditions):
    """Every combination of the conditions: the first rule that applies decides, and with
    none, the channel's release installs."""
    channel, installed, quarantined, pin = _plan_case(conditions)
    plan = decide(channel, installed, quarantined, "installation-1", pin)
    expected = next((action for c, action in _PLAN_RULES if c in conditions), "install")
    if "revoked" in conditions and conditions & {"quarantined", "outside-rollout"}:
        # Leaving a yanked release, never for one that failed here, nor into a rollout that
        # leaves this installation out (without a release before it: wait).
        expected = "held"
    assert plan.action == expected
    first = next((c for c, _ in _PLAN_RULES if c in conditions), None)
    if first in ("pinned", "quarantined", "outside-rollout", "older"):
        assert plan.note is not None and {"pinned": "pinned to 1.0", "quarantined":
                                          "quarantined here", "outside-rollout":
                                          "staged rollout", "older":
                                          "no automatic downgrade"}[first] in plan.note
    assert plan.changes_something == (expected in ("install", "leave-yanked"))
    assert plan.downgrade == ("older" in conditions and "same" not in conditions)


@pytest.mark.parametrize("why", ["down", "quarantined-installed", "asked"])
def test_an_older_release_installs_only_for_a_reason(why):
    """No automatic downgrade, except away from a release that is down or quarantined here,
    or when a person asks; and then it is a downgrade, never called an upgrade."""
    channel, installed, quarantined, pin = _plan_case(frozenset({"older"}))
    assert installed is not None
    held = decide(channel, installed, quarantined, "installation-1", pin)
    assert held.action == "held" and held.downgrade
    if why == "quarantined-installed":
        quarantined = {installed: "failed here"}
    plan = decide(channel, installed, quarantined, "installation-1", pin,
                  installed_down=why == "down", allow_downgrade=why == "asked")
    assert plan.action == "install" and plan.downgrade


def test_a_fresh_installation_outside_a_halted_rollout_gets_the_release_before_it():
    def artifact(version: str, digest: str) -> ComponentArtifact:
        return ComponentArtifact(version=version, target=f"artifacts/core/{version}/c.tar",
                                 sha256=digest * 64, length=1)

    previous = PreviousRelease(release="1.1", components={"core": artifact("1.1", "b")})
    channel = ChannelFile(channel="stable", release="1.2", published_at=AT,
                          components={"core": artifact("1.2", "a")},
                          rollout=Rollout(percent=0, halted=True, previous=previous))
    fresh = decide(channel, None, {}, "installation-1")
    assert fresh.action == "install" and fresh.target == "1.1"
    assert fresh.release_file.release == "1.1" and fresh.release_file.rollout is None
    assert fresh.note is not None and "staged rollout is HALTED" in fresh.note
    # A machine that has a release keeps it: the halt holds it where it is.
    old = decide(fresh.release_file, None, {}, "x").target_id
    assert decide(channel, old, {}, "installation-1").action == "held"
    # The release before the rollout failed here too: nothing to install, held.
    assert decide(channel, None, {old: "failed"}, "installation-1").action == "held"


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
