"""The fleet report's wire format (`greenlight.report/1`): what a machine sends the collector
after a transaction, and what the collector accepts. Shared, so that neither side imports the
other's modules.

A report names a random installation id (never a hardware id), the channel, the release keys
before and after, the outcome, the failed checks' names with one-line summaries, and the step
timings. No tokens, no bodies beyond the summary.
"""

from datetime import datetime
from typing import Literal

from pydantic import Field

from greenlight.channels._records import Record

__all__ = ["FLEET_OUTCOMES", "FleetReport", "Outcome", "ReportedCheck"]

Outcome = Literal["upgraded", "rolled-back", "dead-end", "precheck-blocked", "held",
                  "crash-loop"]
FLEET_OUTCOMES: dict[str, Outcome] = {"upgraded": "upgraded", "rolled-back": "rolled-back",
                                      "rollback-failed": "dead-end",
                                      "precheck-blocked": "precheck-blocked",
                                      "crash-loop": "crash-loop"}
"""The history events a fleet counts, and the outcome each is reported as."""


class ReportedCheck(Record):
    name: str
    summary: str


class FleetReport(Record):
    schema_: Literal["greenlight.report/1"] = Field("greenlight.report/1", alias="schema")
    installation: str = Field(pattern=r"^[0-9a-f]{32}$", description="random, per root")
    at: datetime
    channel: str
    outcome: Outcome
    release: str | None = Field(description="the version the transaction went for")
    release_key: str | None = Field(default=None, description="its key, version@digest")
    before: str | None = Field(default=None, description="the release key installed before")
    after: str | None = Field(default=None, description="the release key installed after")
    failed_checks: list[ReportedCheck] = Field(default_factory=list)
    durations: dict[str, float] = Field(default_factory=dict)
    note: str | None = Field(default=None, description="why it was held, when it was")
