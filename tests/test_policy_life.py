"""A long life of one unattended machine, as a property: months of injected time driven
through the pure policy (`decide`, `follow_plan`, `agent_step`), with good, bad and yanked
releases on two channels, halted rollouts, crashes, holds, pins and a person switching
channels. The transaction's outcome is simulated the way the rollback policy acts (a bad
release is rolled back, quarantined, and the machine falls back from the channel it was on,
which stays chosen); everything that decides is the product's own code.

Invariants after every cycle:
- never an automatic downgrade: a move to an older release leaves a release that was
  revoked, quarantined here or down;
- never a quarantined, revoked or halted release installed;
- a release allowed here on the chosen channel is reached within two cycles;
- a dead release never blocks a newer allowed one;
- the machine is never stuck while a release it could take is allowed.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from greenlight.channels import (
    ChannelFile,
    ComponentArtifact,
    PreviousRelease,
    ReleaseId,
    RevokedRelease,
    Rollout,
    parse_version,
)
from greenlight.updater.policy import AgentInput, Plan, agent_step, decide, follow_plan

START = datetime(2027, 1, 1, 3, 0, tzinfo=UTC)
CHANNELS = ("stable", "beta")
FALLBACK = {"beta": "stable", "stable": None}
ID = "installation-7"


def _artifact(version: str) -> ComponentArtifact:
    digest = f"{int(version.split('.')[1]):064x}"
    return ComponentArtifact(version=version, target=f"artifacts/core/{version}/c.tar",
                             sha256=digest, length=1)


@dataclass
class Channel:
    name: str
    history: list[str] = field(default_factory=list)
    """releases carried, oldest first; the last is the current one"""
    revoked: dict[str, str] = field(default_factory=dict)
    halted: bool = False
    """the current release's rollout is halted, with this machine outside it"""

    def file(self, at: datetime) -> ChannelFile | None:
        good = [v for v in self.history if v not in self.revoked]
        if not good:
            return None
        current = good[-1]
        rollout = None
        if self.halted:
            before = good[:-1]
            previous = (PreviousRelease(release=before[-1],
                                        components={"core": _artifact(before[-1])})
                        if before else None)
            rollout = Rollout(percent=0, halted=True, previous=previous)
        return ChannelFile(
            channel=self.name, release=current, components={"core": _artifact(current)},
            fallback=FALLBACK[self.name], published_at=at, rollout=rollout,
            revoked=[RevokedRelease(version=v, reason=why, revoked_at=at)
                     for v, why in self.revoked.items()])


def _id(version: str) -> ReleaseId:
    return ReleaseId.of(version, {"core": _artifact(version)})


def event(what: str) -> None:
    """Count what a life went through (shown with --hypothesis-show-statistics)."""
    if currently_in_test_context():
        hypothesis_event(what)


def _older(a: str, b: str) -> bool:
    return parse_version(a) < parse_version(b)


class MachineLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.at = START
        self.next_minor = 1
        self.bad: set[str] = set()
        self.channels = {name: Channel(name) for name in CHANNELS}
        self.installed: str | None = None
        self.quarantine: dict[ReleaseId, str] = {}
        self.active, self.chosen = "beta", "beta"
        self.pin: str | None = None
        self.hold: str | None = None
        self.down = False
        self.cycles = 0
        self.allowed_since: dict[str, int] = {}  # release -> the cycle count it was allowed at

    @initialize(beta_first=st.booleans())
    def installed_from_beta(self, beta_first: bool) -> None:
        """Most lives start where the incident did: on beta, with stable behind it."""
        self.publish("stable", good=True, halted=False)
        self.publish("beta", good=True, halted=False)
        if beta_first:
            self.cycle(1)

    # --- the vendor ----------------------------------------------------------------------
    @rule(channel=st.sampled_from(CHANNELS), good=st.booleans(), halted=st.booleans())
    def publish(self, channel: str, good: bool, halted: bool) -> None:
        version = f"1.{self.next_minor}"
        self.next_minor += 1
        if not good:
            self.bad.add(version)
        self.channels[channel].history.append(version)
        self.channels[channel].halted = halted

    @rule()
    def publish_a_fix(self) -> None:
        """A good release, everywhere at once, on the channel the person chose."""
        self.publish(self.chosen, good=True, halted=False)

    @rule(channel=st.sampled_from(CHANNELS))
    def resume(self, channel: str) -> None:
        self.channels[channel].halted = False

    @rule(channel=st.sampled_from(CHANNELS))
    def yank(self, channel: str) -> None:
        c = self.channels[channel]
        good = [v for v in c.history if v not in c.revoked]
        if len(good) > 1:  # the pipeline refuses to yank a channel's only good release
            c.revoked[good[-1]] = "bad after the fact"
            c.halted = False

    # --- the machine and its person ------------------------------------------------------
    @rule()
    def crash(self) -> None:
        if self.installed is not None:
            self.down = True

    @rule(channel=st.sampled_from(CHANNELS))
    def person_switches(self, channel: str) -> None:
        if self.channels[channel].file(self.at) is not None:
            self.active = self.chosen = channel

    @rule(pin=st.sampled_from([None, "1.1", "1.3"]))
    def person_pins(self, pin: str | None) -> None:
        self.pin = pin

    @rule(hold=st.sampled_from([None, "freeze"]))
    def person_holds(self, hold: str | None) -> None:
        self.hold = hold

    # --- one agent cycle, days apart -----------------------------------------------------
    def _plan(self, channel: str) -> Plan | None:
        cf = self.channels[channel].file(self.at)
        if cf is None:
            return None
        return decide(cf, None if self.installed is None else _id(self.installed),
                      self.quarantine, ID, self.pin, None, self.at, self.down)

    @rule(days=st.integers(1, 20))
    def cycle(self, days: int) -> None:
        self.at += timedelta(days=days)
        self.cycles += 1
        active = self._plan(self.active)
        chosen = self._plan(self.chosen) if self.chosen != self.active else None
        if active is None and chosen is None:
            return  # nothing published that this machine follows yet
        plan, back = follow_plan(active, chosen)
        step = agent_step(AgentInput(
            revoked=plan.action == "leave-yanked",
            held=plan.note if plan.action == "held" else None,
            update_available=plan.changes_something, apply="auto", windows=(),
            local=self.at, hold=self.hold))
        if step.action not in ("install", "leave-revoked"):
            return
        if back:
            event("back to the chosen channel")
            self.active = self.chosen
        self._install(plan)

    @rule(count=st.integers(2, 4), days=st.integers(1, 5))
    def weeks_pass(self, count: int, days: int) -> None:
        for _ in range(count):
            self.cycle(days)

    def _install(self, plan: Plan) -> None:
        before, target = self.installed, plan.target
        installed_id = None if before is None else _id(before)
        # What the policy may move to, whatever happens next:
        assert plan.target_id not in self.quarantine, "a quarantined release was installed"
        assert not plan.release_file.is_revoked(target), "a revoked release was installed"
        rollout = plan.release_file.rollout
        assert rollout is None or not rollout.halted, "a halted release was installed"
        if before is not None and _older(target, before):
            assert (plan.action == "leave-yanked" or self.down
                    or installed_id in self.quarantine), (
                f"automatic downgrade {before} -> {target}")
        if plan.action == "leave-yanked" and installed_id is not None:
            self.quarantine[installed_id] = "yanked"
        event("downgrade" if before is not None and _older(target, before) else "install")
        if target in self.bad:  # its post-check fails: rolled back, quarantined, fallback
            event("rolled back")
            self.quarantine[plan.target_id] = "failed core-api"
            fallback = plan.release_file.fallback
            if fallback is not None and self.channels[fallback].file(self.at) is not None:
                self.active = fallback  # the chosen channel stays chosen
            self.down = False  # the previous release was restarted
            return
        self.installed, self.down = target, False

    # --- what must always hold -----------------------------------------------------------
    def _allowed_on_chosen(self) -> str | None:
        """A release the chosen channel carries that this machine may take now."""
        cf = self.channels[self.chosen].file(self.at)
        if cf is None or self.hold is not None or cf.rollout is not None:
            return None
        target = cf.identity
        if target in self.quarantine or (self.pin is not None and self.pin != cf.release):
            return None
        if self.installed is not None and not _older(self.installed, cf.release):
            return None  # not newer: nothing to reach
        return cf.release

    @invariant()
    def a_release_allowed_on_the_chosen_channel_is_reached_within_two_cycles(self) -> None:
        allowed = self._allowed_on_chosen()
        if allowed is None:
            self.allowed_since.clear()
            return
        since = self.allowed_since.setdefault(allowed, self.cycles)
        assert self.cycles - since <= 2 or allowed in self.bad, (
            f"{allowed} allowed on {self.chosen} since cycle {since}, now {self.cycles}; "
            f"installed {self.installed}, on {self.active}")

    @invariant()
    def never_on_a_quarantined_release_by_choice(self) -> None:
        if self.installed is not None and _id(self.installed) in self.quarantine:
            # Only a yank quarantines what is installed; the next cycle leaves it.
            assert any(self.channels[c].revoked.get(self.installed) for c in CHANNELS)


TestMachineLife = MachineLife.TestCase
TestMachineLife.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)

# Thousands of lives, longer ones, in `make test-exhaustive`.
TestMachineLives = pytest.mark.exhaustive(MachineLife.TestCase)
TestMachineLives.settings = settings(max_examples=3000, stateful_step_count=100, deadline=None)


def test_the_bad_beta_story():
    """The incident, step by step: on beta at 1.3, a bad 1.4 falls back to stable, which
    carries the older 1.2; the machine stays on 1.3 (no downgrade) and returns to beta for
    the fixed 1.5."""
    life = MachineLife()
    life.channels["stable"].history = ["1.2"]
    life.channels["beta"].history = ["1.3"]
    life.next_minor = 4
    life.cycle(1)
    assert (life.installed, life.active) == ("1.3", "beta")
    life.publish("beta", good=False, halted=False)  # 1.4, bad
    life.cycle(1)
    assert (life.installed, life.active, life.chosen) == ("1.3", "stable", "beta")
    life.cycle(1)
    assert life.installed == "1.3", "stable's older 1.2 is not an upgrade"
    life.publish("beta", good=True, halted=False)  # 1.5, the fix
    life.cycle(1)
    assert (life.installed, life.active) == ("1.5", "beta")
