"""Human output of the transaction commands: checks with their evidence, the outcome of an
upgrade, and the exit code each outcome gets."""

import json
from typing import TYPE_CHECKING, NoReturn

from greenlight.updater._errors import (
    EXIT_HELD,
    EXIT_ROLLBACK_FAILED,
    EXIT_ROLLED_BACK,
)

if TYPE_CHECKING:


    from greenlight.updater.output import QuarantineReport, UpgradeReport
    from greenlight.updater.product import CheckResult


from greenlight.updater.cli._common import EVIDENCE_KEYS, print_json, say

__all__ = ["exit_for", "finish_transaction", "print_checks", "print_quarantine",
           "print_transaction"]


def print_checks(results: "list[CheckResult]", tagged: bool = False) -> None:
    """One line per check; `tagged`: each says where it came from (release or machine)."""
    for r in results:
        mark = "ok  " if r.ok else ("FAIL" if r.required else "warn")
        whose = f" [{r.source}]" if tagged and r.source else ""
        say(f"  {mark} {r.name}{whose} ({r.type}, {r.latency_ms:.0f} ms): {r.summary}")


def print_transaction(report: "UpgradeReport") -> None:

    if report.outcome == "up-to-date":
        say(f"{report.channel}: up to date at {report.to_version}")
    elif report.outcome == "held":
        say(f"{report.channel}: not upgrading: {report.note}")
    elif report.outcome in ("upgraded", "downgraded"):
        say(f"{report.channel}: {report.outcome} {report.from_version or 'nothing'} -> "
            f"{report.to_version} ({report.bytes_fetched} of {report.bytes_total} bytes fetched)")
        if report.repair:
            say(f"  the repair of {report.repair}")
        if report.note:
            say(f"  {report.note}")
    else:
        incident = report.incident
        assert incident is not None
        verb = ("ROLLBACK FAILED" if report.outcome != "rolled-back" else
                "CAUGHT IN PREFLIGHT" if incident.preflight else "ROLLED BACK")
        say(f"{report.channel}: {verb}: {incident.summary}")
        for check_ in incident.failed_checks:
            say(f"  failed check {check_.name}: {check_.summary}")
            evidence = {k: check_.evidence[k] for k in EVIDENCE_KEYS
                        if check_.evidence.get(k) not in (None, [], "")}
            if evidence:
                say(f"    evidence: {json.dumps(evidence)[:300]}")
        for stop in incident.stop_outcomes:
            say(f"  stop: {stop}")
        where = f"now on {report.installed or 'nothing'}, channel {report.channel_now}"
        seconds = incident.timings.get("rollback_seconds")
        took = (" (the running release was never stopped)" if incident.preflight else
                f" (rolled back in {seconds:.2f}s, services' start-up excluded)" if seconds else "")
        held = (f"{report.quarantined} quarantined" if report.quarantined else
                f"{report.to_version} not quarantined (the running release failed, not it)")
        say(f"  {where}; {held}{took}"
            if report.outcome == "rolled-back" else f"  {where}: needs a person")


def exit_for(report: "UpgradeReport") -> int:
    return {"rolled-back": EXIT_ROLLED_BACK, "rollback-failed": EXIT_ROLLBACK_FAILED,
            "held": EXIT_HELD}.get(report.outcome, 0)


def finish_transaction(report: "UpgradeReport", as_json: bool) -> NoReturn:
    """Print the transaction's report and end the command with its exit code.

    Raises:
        SystemExit: always; 0, or the code of a rollback, a failed rollback or a hold.
    """
    print_json(report) if as_json else print_transaction(report)
    raise SystemExit(exit_for(report))


def print_quarantine(report: "QuarantineReport", as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    for e in report.lifted:
        say(f"lifted {e.release} (was: {e.reason})")
    if not report.entries:
        say("nothing is quarantined here")
    for e in report.entries:
        say(f"{e.release:<26} {e.at:%Y-%m-%d %H:%M}Z {e.channel}: {e.reason}")
