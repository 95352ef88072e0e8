"""The JSON output of `updater` commands: stable, versioned shapes (`schema` names each).

A consumer checks `schema` and may rely on every field listed here; fields are only ever
added within a schema version.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from greenlight.channels import Difference, Record
from greenlight.updater.product import CheckResult
from greenlight.updater.store import GreenlightInfo, HistoryEntry, Update

__all__ = ["CheckReport", "ComponentInfo", "DeltaUse", "ErrorReport", "FeedbackResult",
           "HealthReport",
           "GreenlightInfo", "HistoryReport", "Identity", "QualifyCheck", "QualifyReport",
           "QuarantineReport", "RolloutStatus", "SelfUpdateReport", "StatusReport",
           "UpgradeReport", "VerifyReport", "dump", "status_update"]

class ComponentInfo(Record):
    version: str
    target: str
    sha256: str
    length: int


class RolloutStatus(Record):
    percent: int
    halted: bool
    bucket: int = Field(description="this installation's bucket, 0-99, for this release")
    in_rollout: bool
    step: int | None = Field(default=None, description="a planned rollout's step, from 0")
    steps: list[int] = Field(default_factory=list, description="a planned rollout's percents")
    reason: str | None = Field(default=None, description="who halted it and why")


class CheckReport(Record):
    schema_: Literal["greenlight.check/1"] = Field("greenlight.check/1", alias="schema")
    root: str
    channel: str
    channel_reason: str
    chosen_channel: str | None = Field(
        default=None, description="the channel a person chose, when this machine follows its "
                                  "fallback after a failed release; it goes back when allowed")
    channel_note: str | None = Field(
        default=None, description="after a fallback: where the chosen channel stands here")
    note: str | None = Field(
        default=None, description="why the release an upgrade would install is not the "
                                  "channel's own (a fresh installation outside a rollout)")
    installed: str | None
    available: str
    installed_release: str | None = Field(
        default=None, description="the installed release's key, version@digest")
    available_release: str | None = Field(
        default=None, description="the channel's release's key: another key is another release")
    update_available: bool
    quarantined: str | None = Field(
        default=None, description="why the available release is held back here, if it is"
    )
    held: str | None = Field(
        default=None, description="the channel has another release and it is held back here "
                                  "(quarantined, or outside the staged rollout): why")
    rollout: RolloutStatus | None = Field(
        default=None, description="the channel's staged rollout, if one is under way"
    )
    yanked: str | None = Field(
        default=None, description="the installed release was yanked on this channel: why"
    )
    fallback: str | None
    published_at: datetime
    components: dict[str, ComponentInfo]


class DeltaUse(Record):
    """How a component's artifact was obtained when it was not already kept."""

    component: str
    used: bool
    from_version: str | None = None
    method: str | None = None
    delta_bytes: int | None = None
    reason: str


class UpgradeReport(Record):
    """outcome: upgraded | downgraded (to an older release: the installed one was revoked,
    quarantined or down, or a person asked) | up-to-date | held | rolled-back |
    rollback-failed"""

    schema_: Literal["greenlight.upgrade/1"] = Field("greenlight.upgrade/1", alias="schema")
    root: str
    channel: str
    source: str = "repository"
    outcome: Literal["upgraded", "downgraded", "up-to-date", "held", "rolled-back",
                     "rollback-failed"]
    from_version: str | None
    to_version: str
    installed: str | None = Field(description="what is installed now")
    channel_now: str = Field(description="the active channel now (the fallback after a rollback)")
    bytes_fetched: int = Field(default=0, description="bytes downloaded (deltas and full)")
    bytes_total: int = Field(description="size of the release's full artifacts")
    deltas: list[DeltaUse] = Field(default_factory=list)
    pruned: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    precheck: list[CheckResult] | None = None
    forced: bool = False
    repair: str | None = Field(
        default=None, description="the installed release was down; this transaction was its "
                                  "repair (the pre-check's failures did not block it): why")
    note: str | None = None
    incident: HistoryEntry | None = None
    quarantined: str | None = Field(
        default=None, description="the release this transaction quarantined here, if any")


class HealthReport(Record):
    schema_: Literal["greenlight.health/1"] = Field("greenlight.health/1", alias="schema")
    root: str
    installed: str | None
    healthy: bool = Field(description="every required check passed, and at least one ran")
    checked: int = Field(default=0, description="how many checks ran; 0: nothing was checked")
    results: list[CheckResult]
    from_release: bool = Field(
        default=False, description="the installed release brings its product manifest; else "
                                   "greenlight.toml alone says how it runs")
    services: dict[str, str] = Field(
        default_factory=dict, description="each service and where it came from: 'release' "
                                          "or 'machine'")
    disabled: list[str] = Field(default_factory=list,
                                description="the release's checks this machine switched off")
    warnings: list[str] = Field(default_factory=list,
                                description="machine settings the release does not declare")


class VerifyReport(Record):
    schema_: Literal["greenlight.verify/1"] = Field("greenlight.verify/1", alias="schema")
    root: str
    release: str = Field(description="the key of the release verified")
    verified: list[str] = Field(description="components compared with their signed file list")
    checked: int = Field(default=0, description="entries (files, links, folders) compared")
    unlisted: list[str] = Field(
        default_factory=list, description="components published without a file list: not "
                                          "compared")
    differences: list[Difference] = Field(
        description="paths under releases/<key>/ that differ: changed (in what), missing or "
                    "extra")
    repaired: bool = Field(default=False, description="--repair re-staged the release")
    summary: str = ""


class HistoryReport(Record):
    schema_: Literal["greenlight.history/1"] = Field("greenlight.history/1", alias="schema")
    root: str
    entries: list[HistoryEntry]


class FeedbackResult(Record):
    """What `updater feedback` did (`--dry-run` prints the document itself instead)."""

    schema_: Literal["greenlight.feedback-result/1"] = Field("greenlight.feedback-result/1",
                                                             alias="schema")
    root: str
    id: str | None = Field(default=None, description="the feedback this command queued")
    logs: bool = Field(default=False, description="its log tails were attached (--logs)")
    collected: list[str] = Field(default_factory=list,
                                 description="ids of the feedback taken from the inbox")
    refused: list[str] = Field(default_factory=list,
                               description="one line for each inbox file refused")
    dropped: int = Field(default=0, description="the oldest queued feedback dropped to make "
                                                "room (the queue holds 100)")
    exported: int = Field(default=0, description="feedback written to --export's file")
    file: str | None = None
    sent: int = Field(default=0, description="feedback the collector took in this command")
    queued: int = Field(description="feedback waiting in state/feedback/ now")
    waiting: str | None = Field(default=None, description="why queued feedback is not sent: "
                                                          "no collector, or its refusal")


class Identity(Record):
    """A release as the machine knows it: its version and the sha256 of every component."""

    key: str = Field(description="version@digest: the release's folder under releases/")
    version: str
    digest: str = Field(description="sha256 over the sorted lines '<component> <sha256>'")
    components: dict[str, str] = Field(description="each component's archive sha256")


class SelfUpdateReport(Record):
    schema_: Literal["greenlight.self-update/1"] = Field("greenlight.self-update/1",
                                                         alias="schema")
    root: str
    outcome: Literal["updated", "up-to-date", "held", "quarantined", "unmanaged",
                     "fell-back", "kept"]
    note: str
    running: str = Field(description="the version that ran this command")
    active: str = Field(description="the version bin/updater enters now")
    previous: str | None = None
    available: str | None = Field(default=None, description="the updater channel's release")
    channel: str | None = Field(default=None, description="the updater channel")
    kind: str
    probation: int = 0


class QualifyCheck(Record):
    name: str
    ok: bool
    detail: str


class QualifyReport(Record):
    schema_: Literal["greenlight.qualify/1"] = Field("greenlight.qualify/1", alias="schema")
    root: str
    version: str = Field(description="the Greenlight that qualified (or not)")
    ok: bool
    checks: list[QualifyCheck]


class StatusReport(Record):
    schema_: Literal["greenlight.status/2"] = Field("greenlight.status/2", alias="schema")
    root: str
    repository: str | None = Field(description="none: an air-gapped root (sideload only)")
    channel: str
    channel_since: datetime
    channel_reason: str
    chosen_channel: str | None = Field(
        default=None, description="the channel a person chose, when this machine follows its "
                                  "fallback")
    installed: str | None = Field(description="the installed version")
    identity: Identity | None = Field(default=None, description="the installed release")
    releases: list[str] = Field(description="the kept releases' keys, oldest first")
    manifest: str | None = Field(
        default=None, description="the installed release's product manifest (its target), "
                                  "which says how it runs under greenlight.toml; none: "
                                  "greenlight.toml alone")
    quarantined: dict[str, str] = Field(
        default_factory=dict, description="release key -> why it is quarantined here")
    last_event: str | None = None
    hold: str | None = Field(default=None, description="automatic installs held: until when "
                                                       "and why")
    pin: str | None = Field(default=None, description="the version this machine is pinned to")
    reports: str | None = Field(
        default=None, description="why the fleet collector refuses this machine's reports, "
                                  "until one is accepted")
    feedback: str | None = Field(
        default=None, description="users' feedback waiting to be sent: how many, and why "
                                  "it waits (none waiting: absent)")
    greenlight: GreenlightInfo | None = Field(default=None, description="Greenlight itself")


class QuarantineEntryInfo(Record):
    release: str = Field(description="the release key, version@digest")
    version: str
    digest: str
    channel: str
    reason: str
    at: datetime


class QuarantineReport(Record):
    schema_: Literal["greenlight.quarantine/1"] = Field("greenlight.quarantine/1",
                                                        alias="schema")
    root: str
    entries: list[QuarantineEntryInfo] = Field(description="what is quarantined now")
    lifted: list[QuarantineEntryInfo] = Field(
        default_factory=list, description="what this command lifted")


class ErrorReport(Record):
    schema_: Literal["greenlight.error/1"] = Field("greenlight.error/1", alias="schema")
    error: str
    kind: str
    exit_code: int


def dump(report: BaseModel) -> str:
    return report.model_dump_json(by_alias=True, indent=2)


def status_update(report: object) -> dict[str, object]:
    """What a command's output tells status.json (`store.refresh_status`'s keywords)."""
    if isinstance(report, CheckReport):
        update: Update = ("held" if report.held else "revoked" if report.yanked else
                          "available" if report.update_available else "none")
        return {"available": report.available, "update": update, "held_because": report.held,
                "checked": True}
    if isinstance(report, UpgradeReport):
        outcome = report.outcome
        if outcome in ("upgraded", "downgraded", "up-to-date"):
            return {"available": report.to_version, "update": "none", "checked": True}
        why = report.incident.summary if report.incident else report.note
        return {"available": report.to_version, "update": "held", "held_because": why,
                "checked": True}
    return {}
