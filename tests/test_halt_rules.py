"""The sequential halt rule: an anytime-valid test of a release's failure rate against its
baseline's, pure (release/fleet/_judge.py), and carried in the signed plan."""

import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from greenlight.channels import HaltRule, SequentialRule
from greenlight.release.fleet._judge import (
    Evidence,
    RolloutPosition,
    baseline_rate,
    judge,
    sequential_e,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _binomial(n: int, k: int, p: float) -> float:
    return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + k * math.log(p) + (n - k) * math.log(1 - p))


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("p", [0.01, 0.005, 0.1])
def test_the_e_value_is_at_most_one_on_average_under_the_null(n, p):
    """For every count of reports, E[e] under a failure rate at or below the baseline's is
    at most 1 (exactly 1 at it, until the e-value's cap of e^700 cuts the far tail): what
    makes the rule safe to look at after every report."""
    p0 = max(p, 0.01)
    mean = sum(_binomial(n, k, p) * sequential_e(k, n, p0) for k in range(n + 1))
    assert mean <= 1 + 1e-9
    if p == p0 and n <= 100:
        assert mean == pytest.approx(1.0, rel=1e-6)


def _position(rule: HaltRule) -> RolloutPosition:
    return RolloutPosition("2.0", (10, 100), 0, 3600.0, rule, False, NOW)


def test_the_sequential_rule_halts_a_bad_release_and_spares_a_good_one():
    rule = HaltRule(sequential=SequentialRule(false_halt=0.01, min_failures=3))
    baseline = (100, 10_000)  # the previous release: 1% of the fleet failed
    bad = judge(_position(rule), Evidence(12, 100, ("ui", "HTTP 403"), baseline), NOW)
    assert bad.action == "halt"
    assert bad.reason.startswith("12 of 100 machines reporting on 2.0 rolled back (12.0%)")
    assert "sequential rule" in bad.reason and "ui: HTTP 403" in bad.reason
    # as many failures as the count rule halts at, on a fleet failing at the baseline's rate
    assert judge(_position(rule), Evidence(3, 300, None, baseline), NOW).action == "none"
    assert judge(_position(HaltRule()), Evidence(3, 300, None, baseline), NOW).action == "halt"
    # a release failing everywhere, but fewer failures than the least asked: not yet
    assert judge(_position(rule), Evidence(2, 2, None, baseline), NOW).action == "none"
    assert judge(_position(rule), Evidence(3, 3, None, baseline), NOW).action == "halt"


def test_a_thin_baseline_is_held_to_its_upper_estimate_and_the_floor():
    assert baseline_rate(None, 0.01) == 0.01
    assert baseline_rate((0, 10_000), 0.01) == 0.01
    thin = baseline_rate((1, 20), 0.01)
    assert 1 / 20 < thin <= 0.5  # one failure in 20 machines: held to more than 5%
    assert baseline_rate((100, 10_000), 0.01) == pytest.approx(0.0121, abs=5e-4)


@pytest.mark.exhaustive  # two publishes through the CLI: outside `make test`'s time budget
def test_publish_signs_the_sequential_rule_into_the_plan(tmp_path, builds):
    from greenlight.release import current_channel_file, init_repository, publish

    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    bin_ = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_ / "release"), "publish", str(repo.path), "--channel", "stable", "--version",
         "1.1", *[f"--component={k}={v}" for k, v in builds("1.1").items()],
         "--rollout-plan", "10,100", "--halt-sequential", "0.01", "--halt-min-failures", "5",
         "--without-rehearsal", "a test of the halt rule's options"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "halting by the sequential rule (false-halt probability 0.01, at least 5 failed)" \
        in done.stdout
    plan = current_channel_file(repo, "stable").rollout.plan
    assert plan.halt.sequential == SequentialRule(false_halt=0.01, min_failures=5)
    refused = subprocess.run(
        [str(bin_ / "release"), "publish", str(repo.path), "--channel", "stable", "--version",
         "1.2", *[f"--component={k}={v}" for k, v in builds("1.2").items()],
         "--rollout-plan", "10,100", "--halt-sequential", "0.5"],
        capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, \
        refused.stderr


def test_a_failure_confined_to_one_cohort_holds_that_cohort_only():
    from greenlight.release.fleet._judge import confined_to

    position = _position(HaltRule(rollbacks=3))
    one = {"linux-6/x86_64/legacy": Evidence(3, 3), "linux-6/x86_64/modern": Evidence(1, 40),
           None: Evidence(0, 5)}
    cohort, why = confined_to(position, one)
    assert cohort == "linux-6/x86_64/legacy"
    assert why.startswith("cohort linux-6/x86_64/legacy: 3 of 3 machines reporting on 2.0")
    # failing outside it too: everyone halts
    spread = {**one, "linux-6/x86_64/modern": Evidence(3, 40)}
    assert confined_to(position, spread) is None
    # the failing kind of machine is the only kind the fleet has: everyone halts
    assert confined_to(position, one, known={"linux-6/x86_64/legacy"}) is None
    assert confined_to(position, one, known={"linux-6/x86_64/legacy",
                                             "linux-6/x86_64/modern"})[0] == cohort
    # no cohort meets the rule alone (the failures are spread thin): everyone halts
    thin = {f"linux-6/x86_64/k{i}": Evidence(1, 10) for i in range(5)}
    assert confined_to(position, thin) is None


def test_a_held_cohort_stops_only_its_machines_and_never_widens_a_rollout():
    from greenlight.channels import (
        ChannelFile,
        ComponentArtifact,
        Rollout,
        RolloutPlan,
        RolloutState,
        effective_rollout,
    )

    plan = RolloutPlan(steps=[10, 100], soak=0, started_at=NOW)
    cf = ChannelFile(channel="stable", release="2.0", published_at=NOW, components={
        "core": ComponentArtifact(version="2.0", target="artifacts/core/2.0/core.tgz",
                                  sha256="a" * 64, length=1)},
        rollout=Rollout(percent=10, plan=plan))
    state = RolloutState(channel="stable", release=cf.identity.key, step=0, by="collector",
                         at=NOW, held_cohorts=["linux-6/x86_64/legacy"], reason="cohort ...")
    mine = effective_rollout(cf, state, NOW, "linux-6/x86_64/legacy")
    assert mine.halted and "held for this machine's cohort linux-6/x86_64/legacy" in mine.reason
    other = effective_rollout(cf, state, NOW, "linux-6/x86_64/modern")
    assert not other.halted and other.percent == 10  # the rest goes on, at the plan's step
