"""The fleet report's wire format (`greenlight.report/1`): what a machine sends the collector
after a transaction, and what the collector accepts. Shared, so that neither side imports the
other's modules.

A report names a random installation id (never a hardware id), the channel, the release keys
before and after, the outcome, the failed checks' names with one-line summaries, and the step
timings. No tokens, no bodies beyond the summary. The sender adds, under the machine's
signature, the report's own id (the same on every send) and when it was sent, so that a
report captured on the way is neither fresh for long nor counted twice; a collector that
predates them ignores them, and a report without them is still taken.

Every field has a limit, so that what a machine writes cannot be weaponised downstream (into
a signed halt reason, a terminal, a log line, a page, a database column): names and keys from
narrow character sets and lengths, at most 50 failed checks, and free text (summaries, the
note) cut to one escaped line of at most 300 characters. A report outside them is refused
(422), never stored.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from greenlight.channels._cohort import COHORT_PATTERN
from greenlight.channels._paths import check_channel_name
from greenlight.channels._records import Record
from greenlight.channels._text import printable

__all__ = ["FLEET_OUTCOMES", "GREENLIGHT_PATTERN", "FleetReport", "GreenlightKind", "Outcome",
           "ReportedCheck"]

Outcome = Literal["upgraded", "rolled-back", "dead-end", "precheck-blocked", "held",
                  "crash-loop", "damaged", "crashed-on-stop"]
"""`crashed-on-stop`: the release being left (`release_key`, installed before and after)
crashed when it was stopped for an upgrade to `upgrading_to`; evidence against it, never
against the release the machine went for."""
FLEET_OUTCOMES: dict[str, Outcome] = {"upgraded": "upgraded", "rolled-back": "rolled-back",
                                      "rollback-failed": "dead-end",
                                      "precheck-blocked": "precheck-blocked",
                                      "crash-loop": "crash-loop", "damaged": "damaged",
                                      "greenlight-updated": "upgraded",
                                      "greenlight-quarantined": "rolled-back"}
"""The history events a fleet counts, and the outcome each is reported as. Greenlight's own
updates are releases of channel `greenlight-<channel>`: one that took over is `upgraded`, one
that failed its qualification or its first cycles and was put aside is `rolled-back`, so a
rollout of a bad updater halts as any other."""


TEXT_MAX = 300
_Text = Annotated[str, Field(max_length=4096), AfterValidator(lambda t: printable(t, TEXT_MAX))]
_Version = Annotated[str, Field(pattern=r"^[0-9A-Za-z.+!_-]{1,64}$")]
_Key = Annotated[str, Field(pattern=r"^[0-9A-Za-z.+!_-]{1,64}@[0-9a-f]{12}$")]
GREENLIGHT_PATTERN = (r"^[0-9]{1,6}(\.[0-9]{1,6}){1,3}((a|b|rc)[0-9]{1,6})?(\.post[0-9]{1,6})?"
                      r"(\.dev[0-9]{1,6})?(\+[a-z0-9]{1,16}(\.[a-z0-9]{1,16}){0,3})?$")
"""A Greenlight version as a report may name it: a PEP 440 version in its canonical form,
release, pre, post and dev parts and a local label each bounded, 64 characters at most."""
_Greenlight = Annotated[str, Field(max_length=64, pattern=GREENLIGHT_PATTERN)]
GreenlightKind = Literal["exe", "python", "copy", "none"]
"""How a machine's Greenlight is installed (`greenlight.updater.store.greenlight_kind`)."""


class ReportedCheck(Record):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
    summary: _Text
    source: Literal["release", "machine"] | None = Field(
        default=None, description="the release's manifest, or the machine's greenlight.toml")


class FleetReport(Record):
    schema_: Literal["greenlight.report/1"] = Field("greenlight.report/1", alias="schema")
    installation: str = Field(pattern=r"^[0-9a-f]{32}$", description="random, per root")
    at: datetime
    channel: Annotated[str, AfterValidator(check_channel_name)]
    outcome: Outcome
    release: _Version | None = Field(description="the version the transaction went for")
    release_key: _Key | None = Field(default=None, description="its key, version@digest")
    before: _Key | None = Field(default=None, description="the release key installed before")
    after: _Key | None = Field(default=None, description="the release key installed after")
    upgrading_to: _Key | None = Field(
        default=None, description="`crashed-on-stop`: the release key the machine was "
                                  "upgrading to, not at fault")
    failed_checks: list[ReportedCheck] = Field(default_factory=list, max_length=50)
    durations: dict[Annotated[str, Field(pattern=r"^[a-z][a-z_-]{0,31}$")], float] = Field(
        default_factory=dict, max_length=32)
    note: _Text | None = Field(default=None, description="why it was held, when it was")
    cohort: str | None = Field(default=None, pattern=COHORT_PATTERN,
                               description="the kind of machine: system-major/arch/label")
    id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$",
                           description="the report's own id, the same on every send: its "
                                       "machine key's report is counted once")
    sent: datetime | None = Field(default=None, description="when the machine sent it (the "
                                  "collector takes it within a day past, 5 minutes ahead)")
    greenlight: _Greenlight | None = Field(
        default=None, description="the Greenlight version that made the report (0.3.0 on); "
                                  "none: 0.2.0, the first that signs its reports")
    greenlight_kind: GreenlightKind | None = Field(
        default=None, description="how that Greenlight is installed, so what moves it: exe "
                                  "(it updates itself), python (its package manager), copy "
                                  "(an offline installer's copy: a newer installer), none")
