"""The rollback decision, table-driven: `plan_rollback` (what a failed transaction changes
besides undoing its steps), `rollback_verdict` (where it ended) and `settles_by_commit`. The
transaction's tests (test_e2e, test_power_loss, test_hitless, ...) hold that the plan is
carried out; these hold the plan itself, case by case."""

import pytest

from greenlight.updater.policy import (
    RollbackFacts,
    plan_rollback,
    rollback_verdict,
    settles_by_commit,
)

NEW, OLD = "1.1@aaaaaaaaaaaa", "1.0@bbbbbbbbbbbb"


def facts(**change: object) -> RollbackFacts:
    base: dict[str, object] = dict(channel="beta", new=NEW, old=OLD, new_at_fault=True,
                                   fallback="stable", failed=("ui-api",), known=True)
    return RollbackFacts(**{**base, **change})  # type: ignore[arg-type]


@pytest.mark.parametrize(("change", "switch_to", "quarantine", "recheck"), [
    # the beta incident: a failed check on beta falls back to stable and quarantines 1.1
    ({}, "stable", True, True),
    # a channel without a fallback stays where it is, and still quarantines
    ({"fallback": None}, None, True, True),
    # a fallback naming the channel itself is no switch
    ({"fallback": "beta"}, None, True, True),
    # the release being left crashed on stop: the release tried is not blamed, nothing moves
    ({"new_at_fault": False}, None, False, True),
    # a release whose identity is unknown cannot be quarantined; the switch still happens
    ({"known": False}, "stable", False, True),
    # nothing was installed before: nothing to re-check
    ({"old": None}, "stable", True, False),
    # a manual rollback (no channel file: no fallback) quarantines the release it left
    ({"fallback": None, "channel": "stable"}, None, True, True),
])
def test_the_plan(change, switch_to, quarantine, recheck):
    plan = plan_rollback(facts(**change))
    assert (plan.switch_to, plan.quarantine, plan.recheck_old) == (switch_to, quarantine,
                                                                   recheck)
    assert bool(plan.switch_reason) == (switch_to is not None)


@pytest.mark.parametrize(("failed", "said"), [
    (("ui-api", "core-version"), "automatic fallback: 1.1 on beta failed ui-api, core-version"),
    ((), "automatic fallback: 1.1 on beta failed start-up"),
])
def test_the_switch_says_which_checks_failed(failed, said):
    assert plan_rollback(facts(failed=failed)).switch_reason == said


@pytest.mark.parametrize(("errors", "old", "unhealthy", "ok", "summary"), [
    ((), OLD, None, True, "ui-api: HTTP 403"),
    (("core: did not stop",), OLD, None, False,
     "ui-api: HTTP 403; rollback failed: core: did not stop"),
    ((), OLD, "core-version: 0.9", False,
     "ui-api: HTTP 403; rollback failed: previous release 1.0 is unhealthy too: "
     "core-version: 0.9"),
    (("swap: busy",), OLD, "never run", False,
     "ui-api: HTTP 403; rollback failed: swap: busy; previous release 1.0 is unhealthy too: "
     "never run"),
    ((), None, None, True, "ui-api: HTTP 403"),  # a first install: back to nothing, fine
])
def test_the_verdict(errors, old, unhealthy, ok, summary):
    verdict = rollback_verdict("ui-api: HTTP 403", errors, old, unhealthy)
    assert (verdict.ok, verdict.summary) == (ok, summary)
    assert verdict.event == ("rolled-back" if ok else "rollback-failed")


@pytest.mark.parametrize(("post_check", "commit", "settles"), [
    ("done", "pending", True), ("done", "doing", True), ("done", "done", True),
    ("done", "undone", False), ("doing", "pending", False), ("pending", "pending", False),
    ("undone", "pending", False),
])
def test_a_passed_post_check_is_committed(post_check, commit, settles):
    assert settles_by_commit(post_check, commit) is settles
