"""What `release status` says of rehearsals (`release/cli/_rehearsals.py`): each channel's
current release, its last rehearsal there, and the changes started without one. The records
are written as `release rehearse` keeps them, from the model: no rehearsal is run."""

import json
from datetime import UTC, datetime
from pathlib import Path

from greenlight.release.cli._rehearsals import rehearsal_lines, rehearsal_status
from greenlight.release.rehearsal import OVERRIDES, FailedCheck, PathResult, RehearsalRecord

STARTED = datetime(2026, 12, 7, 15, 20, 31, tzinfo=UTC)


def path(from_version: str | None, to: str, outcome: str = "upgraded", layer: str = "default",
         checks: list[tuple[str, str]] = (), **extra: object) -> PathResult:
    return PathResult(kind="upgrade" if from_version else "fresh", from_version=from_version,
                      to_version=to, layer=layer, outcome=outcome,
                      rollback=extra.pop("rollback", "ok" if from_version else "n/a"),
                      failed_checks=[FailedCheck(name=n, summary=s) for n, s in checks],
                      **extra)


def record(repo: Path, channel: str, version: str, paths: list[PathResult],
           started: datetime = STARTED) -> RehearsalRecord:
    """A rehearsal kept where `release rehearse` keeps it: rehearsals/CHANNEL/VERSION.json."""
    bad = [p for p in paths if p.outcome not in ("upgraded", "from-failed")
           or p.rollback == "failed"]
    made = RehearsalRecord(channel=channel, version=version,
                           identity={"core": "0" * 64, "manifest": "1" * 64},
                           source="published", started=started, seconds=42.5,
                           isolation="ports", layers=sorted({p.layer for p in paths}),
                           paths=paths, passed=not bad)
    target = repo / "rehearsals" / channel / f"{version}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(made.model_dump_json(by_alias=True))
    return made


def override(repo: Path, channel: str, release: str, reason: str, action: str = "promote",
             by: str = "alice", at: str = "2026-12-07T16:00:12+00:00") -> None:
    """A line as `RehearsalGate` appends it to rehearsal-overrides.jsonl."""
    item = {"at": at, "action": action, "channel": channel, "release": release, "by": by,
            "refusal": f"{release} was never rehearsed on {channel}", "reason": reason}
    with (repo / OVERRIDES).open("a") as f:
        f.write(json.dumps(item) + "\n")


def test_a_passed_rehearsal_a_failed_one_and_none(tmp_path):
    record(tmp_path, "beta", "1.6.14", [path(f"1.6.{n}", "1.6.14") for n in range(10, 13)]
           + [path(None, "1.6.14")])
    record(tmp_path, "stable", "1.6.13", [
        path("1.6.10", "1.6.13", "failed", checks=[("core-ping", "exited 1: no answer"),
                                                   ("ui", "500")]),
        path("1.6.10", "1.6.13", layer="legacy"),
        path("1.6.12", "1.6.13", "error", detail="the server did not start"),
        path(None, "1.6.13")])
    record(tmp_path, "beta", "1.6.13", [path("1.6.12", "1.6.13", "failed")])  # not current
    lines = rehearsal_lines(tmp_path, [("beta", "1.6.14"), ("stable", "1.6.13"),
                                       ("edge", "2.0")])
    assert lines == [
        "  beta 1.6.14: rehearsal passed, 4 paths, 2026-12-07 15:20Z",
        "  stable 1.6.13: rehearsal FAILED 2 of 4 paths: 1.6.10 -> 1.6.13 [default]: "
        "core-ping: exited 1: no answer",
        "  edge 2.0: never rehearsed"]
    # A failed path without a failed check says what decided it.
    record(tmp_path, "edge", "2.0", [path("1.0", "2.0", "timed-out", detail="over 600 s"),
                                     path("1.0", "2.0", rollback="failed", layer="old")])
    assert rehearsal_lines(tmp_path, [("edge", "2.0")]) == [
        "  edge 2.0: rehearsal FAILED 2 of 2 paths: 1.0 -> 2.0 [default]: timed-out: "
        "over 600 s"]
    assert rehearsal_lines(tmp_path, []) == []


def test_the_overrides_of_each_current_release(tmp_path):
    record(tmp_path, "stable", "1.6.13", [path("1.6.10", "1.6.13", "failed",
                                                checks=[("core-ping", "timed out")])])
    override(tmp_path, "stable", "1.6.13", "a security fix; the ping check is flaky")
    override(tmp_path, "stable", "1.6.12", "an older one: not shown")
    override(tmp_path, "beta", "1.6.13", "another channel: not shown")
    override(tmp_path, "stable", "1.6.13", "and again", action="publish --rollout-plan",
             by="bob", at="2026-12-08T09:30:00+01:00")
    with (tmp_path / OVERRIDES).open("a") as f:
        f.write("a torn line\n[1, 2]\n")  # neither is an override: skipped
    assert rehearsal_lines(tmp_path, [("stable", "1.6.13"), ("edge", "1.0")]) == [
        "  stable 1.6.13: rehearsal FAILED 1 of 1 paths: 1.6.10 -> 1.6.13 [default]: "
        "core-ping: timed out",
        "    started without a rehearsal: promote by alice at 2026-12-07 16:00Z: a security "
        "fix; the ping check is flaky",
        "    started without a rehearsal: publish --rollout-plan by bob at 2026-12-08 08:30Z: "
        "and again",
        "  edge 1.0: never rehearsed"]


def test_text_from_the_records_is_escaped(tmp_path):
    record(tmp_path, "beta", "2.0", [path("1.0", "2.0", "failed",
                                          checks=[("ui", "\x1b[2J\x1b]0;owned\x07 gone\nok")])])
    override(tmp_path, "beta", "2.0", "fine\r\n  beta 2.0: rehearsal passed", by="\x1b[31meve")
    lines = rehearsal_lines(tmp_path, [("beta", "2.0")])
    assert len(lines) == 2
    assert all("\x1b" not in line and "\n" not in line and "\r" not in line
               and "\x07" not in line for line in lines)
    assert lines[0].endswith("ui: \\x1b[2J\\x1b]0;owned\\x07 gone\\nok")
    assert lines[1] == ("    started without a rehearsal: promote by \\x1b[31meve at "
                        "2026-12-07 16:00Z: fine\\r\\n  beta 2.0: rehearsal passed")


def test_the_status_as_json(tmp_path):
    record(tmp_path, "stable", "1.6.13", [
        path("1.6.12", "1.6.13"),
        path("1.6.10", "1.6.13", "failed", checks=[("core-ping", "exited 1")],
             detail="core-ping failed", seconds=12.5, bytes_fetched=2048, delta=True)])
    override(tmp_path, "stable", "1.6.13", "needed now")
    [stable, beta] = rehearsal_status(tmp_path, [("stable", "1.6.13"), ("beta", "1.6.14")])
    assert beta == {"channel": "beta", "release": "1.6.14", "rehearsal": None,
                    "overrides": []}
    assert stable["rehearsal"] == {
        "passed": False, "started": STARTED.isoformat(), "seconds": 42.5, "paths": 2,
        "failed": 1, "summary": "rehearsal of 1.6.13 on stable failed 1 of 2 paths, first "
                                "1.6.10 -> 1.6.13 [default]: core-ping failed",
        "first_failure": {"path": "1.6.10 -> 1.6.13 [default]", "outcome": "failed",
                          "detail": "core-ping failed", "check": "core-ping",
                          "summary": "exited 1"}}
    assert stable["overrides"] == [{"at": "2026-12-07T16:00:12+00:00", "action": "promote",
                                    "by": "alice",
                                    "refusal": "1.6.13 was never rehearsed on stable",
                                    "reason": "needed now"}]
    json.dumps(stable)  # as --json prints it
