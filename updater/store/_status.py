"""`state/status.json`: what a UI can read without running anything.

The agent and every `updater` command keep it current, with atomic writes (a reader sees the
old file or the new, never a part). Its JSON schema is published beside the channel file's:
`channels/schema/ui-status.v1.schema.json`. A UI shows "update available", "rolled back
because ...", or "updates held until ..." from it, instead of "service not running".

Summaries come from check results and the history, which never carry tokens; each is one line.
"""

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from greenlight.channels import Record, atomic_write, now, version_of
from greenlight.updater._errors import GreenlightError
from greenlight.updater.store._channels import active_channel
from greenlight.updater.store._history import history
from greenlight.updater.store._holds import hold_of, pin_of
from greenlight.updater.store._journal import Journal
from greenlight.updater.store._outbox import refusal
from greenlight.updater.store._root import InstallRoot
from greenlight.updater.store._updaters import GreenlightInfo, greenlight_info

__all__ = ["FailedCheck", "HoldInfo", "IncidentInfo", "TransactionInfo", "UiStatus", "Update",
           "read_status", "refresh_status", "status_schema"]

Update = Literal["none", "available", "downloaded", "held", "revoked", "unknown"]


class FailedCheck(Record):
    name: str
    summary: str


class IncidentInfo(Record):
    at: datetime
    event: Literal["rolled-back", "rollback-failed", "crash-loop"]
    failed_release: str | None = Field(description="the version that failed its checks (or, "
                                                   "for a crash loop, the one that crashed)")
    now_on: str | None = Field(description="the version running after it (none: the product "
                                           "is down)")
    channel: str
    summary: str
    failed_checks: list[FailedCheck] = Field(default_factory=list)
    preflight: bool = Field(default=False, description="caught in preflight, beside the "
                                                       "running release, which never stopped")


class HoldInfo(Record):
    until: datetime | None = Field(description="None: until `updater unhold`")
    reason: str
    by: str


class TransactionInfo(Record):
    kind: str
    to_version: str
    step: str | None = Field(description="the step under way, or None between steps")
    since: datetime


class UiStatus(Record):
    schema_: Literal["greenlight.ui-status/1"] = Field("greenlight.ui-status/1", alias="schema")
    updated_at: datetime
    installed: str | None = Field(description="the installed version")
    installed_release: str | None = Field(description="its key, version@digest")
    channel: str
    channel_reason: str
    chosen_channel: str | None = Field(
        default=None, description="the channel a person chose, when the machine follows its "
                                  "fallback after a failed release")
    available: str | None = Field(default=None, description="the channel's release, when known")
    update: Update = Field(
        default="unknown",
        description="none: up to date; available; downloaded (verified, waiting to be "
                    "installed); held (quarantined, outside the rollout, pinned or on hold); "
                    "revoked (the installed release was yanked); unknown: not checked yet")
    held_because: str | None = None
    last_check: datetime | None = None
    last_error: str | None = Field(
        default=None, description="the last check's error, if it failed (the repository "
                                  "unreachable), else why the fleet collector refuses this "
                                  "machine's reports, until one is accepted")
    next_check: datetime | None = Field(default=None, description="when the agent checks next")
    hold: HoldInfo | None = None
    pin: str | None = Field(default=None, description="the version this machine is pinned to")
    transaction: TransactionInfo | None = Field(
        default=None, description="an upgrade or rollback under way (or interrupted)")
    last_incident: IncidentInfo | None = None
    greenlight: GreenlightInfo | None = Field(
        default=None, description="Greenlight itself: its version, how it is installed, its "
                                  "versions side by side and any it put aside")


def status_schema() -> str:
    """The published schema (channels/schema/ui-status.v1.schema.json), regenerated with
    `python -c 'from greenlight.updater.store import status_schema; print(status_schema(),
    end="")' > channels/schema/ui-status.v1.schema.json`."""
    import json

    return json.dumps(UiStatus.model_json_schema(by_alias=True), indent=2,
                      sort_keys=True) + "\n"


def _path(root: InstallRoot) -> Path:
    return root.state / "status.json"


def read_status(root: InstallRoot) -> UiStatus | None:
    try:
        return UiStatus.model_validate_json(_path(root).read_bytes())
    except (OSError, ValidationError):
        return None


def _incident(root: InstallRoot) -> IncidentInfo | None:
    for entry in reversed(history(root)):
        if entry.event in ("rolled-back", "rollback-failed", "crash-loop"):
            return IncidentInfo(
                at=entry.at, event=entry.event,
                failed_release=entry.from_version, now_on=entry.to_version,
                channel=entry.channel, summary=" ".join(entry.summary.split()),
                failed_checks=[FailedCheck(name=c.name, summary=" ".join(c.summary.split()))
                               for c in entry.failed_checks], preflight=entry.preflight)
    return None


def _transaction(root: InstallRoot) -> TransactionInfo | None:
    try:
        journal = Journal.load(root)
    except GreenlightError:  # a damaged journal is for `recover` to report, not this file
        return None
    if journal is None:
        return None
    step = next((s.name for s in journal.steps if s.state in ("doing", "undoing")), None)
    return TransactionInfo(kind=journal.kind, to_version=version_of(journal.to_release),
                           step=step, since=journal.started_at)


def refresh_status(root: InstallRoot, *, available: str | None = None, update: Update | None = None,
            held_because: str | None = None, checked: bool = False, error: str | None = None,
            next_check: datetime | None = None, at: datetime | None = None) -> UiStatus:
    """Rewrite status.json from what is on disk, with what the caller just learned; what it
    did not learn (the last check, the next one) is kept from the previous file."""
    previous = read_status(root)
    active = active_channel(root)
    hold, pin = hold_of(root, at), pin_of(root)
    installed = root.installed_release()
    if checked or error is not None:
        last_check: datetime | None = now()
    else:
        last_check = previous.last_check if previous else None
    keep = previous is not None and not checked
    status = UiStatus(
        updated_at=now(),
        installed=version_of(installed) if installed else None,
        installed_release=installed,
        channel=active.channel,
        channel_reason=active.reason,
        chosen_channel=active.chosen if active.fallen_back else None,
        available=available if available is not None else (
            previous.available if keep and previous else None),
        update=update or (previous.update if keep and previous else "unknown"),
        held_because=held_because if checked else (
            previous.held_because if keep and previous else None),
        last_check=last_check,
        last_error=(error if (checked or error is not None) else (
            previous.last_error if previous else None)) or refusal(root),
        next_check=next_check or (previous.next_check if previous else None),
        hold=HoldInfo(until=hold.until, reason=hold.reason, by=hold.by) if hold else None,
        pin=pin.version if pin else None,
        transaction=_transaction(root),
        last_incident=_incident(root),
        greenlight=greenlight_info(root),
    )
    if status.update == "available" and status.available == status.installed:
        status = status.model_copy(update={"update": "none"})
    atomic_write(_path(root), status.model_dump_json(by_alias=True, indent=2).encode(),
                 mode=0o644)
    return status
