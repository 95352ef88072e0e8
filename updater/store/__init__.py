"""What the client keeps on disk: the installation root and its layout, staging of releases
(unpacked by the shared layer's safe extraction, `extract` and `index_tar`, re-exported
here), the lock, the journal of the transaction in progress, the history and the quarantine.

```
<root>/greenlight.toml       configuration
<root>/state/metadata/       TUF metadata cache (ngclient's; root history kept)
<root>/state/channels/       verified channel files, and active.json: the active channel
<root>/state/journal.json    the transaction in progress
<root>/state/history.jsonl   upgrades, rollbacks, incidents with evidence
<root>/state/quarantine.json releases that failed here
<root>/state/status.json    what a UI reads (`UiStatus`)
<root>/state/reports/       the fleet-report outbox
<root>/state/feedback/      the user-feedback outbox
<root>/feedback/inbox/       where the product's UI drops feedback (no shell needed)
<root>/downloads/            verified artifacts, named by sha256
<root>/releases/<key>/       unpacked releases, each with its release.json
<root>/current               symlink to releases/<key>; switched atomically
```
"""

from greenlight.channels import Limits, Region, extract, index_tar
from greenlight.updater.store._channels import (
    ActiveChannel,
    active_channel,
    restore_active_channel,
    save_channel_file,
    set_active_channel,
)
from greenlight.updater.store._feedback import (
    FEEDBACK_QUEUE_MAX,
    INBOX_DAY_MAX,
    INBOX_FILE_MAX,
    INBOX_QUEUE_MAX,
    INBOX_RUN_MAX,
    ensure_inbox,
    feedback_as_sent,
    feedback_folder,
    feedback_lock,
    feedback_refusal,
    inbox_accepted,
    inbox_path,
    queue_feedback,
    queued_feedback,
    set_feedback_refusal,
    set_inbox_accepted,
)
from greenlight.updater.store._history import (
    EventKind,
    HistoryEntry,
    RecordedCheck,
    history,
    last_health,
    record,
    save_health,
)
from greenlight.updater.store._holds import (
    Hold,
    Pin,
    clear_hold,
    clear_pin,
    hold_of,
    pin_of,
    set_hold,
    set_pin,
)
from greenlight.updater.store._journal import Journal, StepRecord, StepState
from greenlight.updater.store._lock import locked
from greenlight.updater.store._outbox import (
    queue_event,
    queue_held,
    queued,
    refusal,
    report_of,
    set_refusal,
)
from greenlight.updater.store._quarantine import (
    QuarantineEntry,
    add_to_quarantine,
    lift_quarantine,
    quarantine,
)
from greenlight.updater.store._root import (
    FILE_LISTS,
    PRODUCT_MANIFEST,
    RELEASE_MANIFEST,
    InstallRoot,
    ReleaseManifest,
    default_root,
)
from greenlight.updater.store._stage import stage_release
from greenlight.updater.store._status import (
    FailedCheck,
    HoldInfo,
    IncidentInfo,
    TransactionInfo,
    UiStatus,
    Update,
    read_status,
    refresh_status,
    status_schema,
)
from greenlight.updater.store._updaters import (
    PROBATION_CYCLES,
    GreenlightInfo,
    UpdaterState,
    UpdaterVersion,
    entry_point,
    exe_path,
    fsync_tree,
    greenlight_info,
    greenlight_kind,
    managed_version,
    quarantine_record,
    read_updaters,
    real_folder,
    settle,
    sha256_of,
    turn_link,
    unsettled,
    write_updaters,
)

__all__ = [
    "FEEDBACK_QUEUE_MAX",
    "INBOX_DAY_MAX",
    "INBOX_FILE_MAX",
    "INBOX_QUEUE_MAX",
    "INBOX_RUN_MAX",
    "ensure_inbox",
    "feedback_as_sent",
    "feedback_folder",
    "feedback_lock",
    "feedback_refusal",
    "inbox_accepted",
    "inbox_path",
    "queue_feedback",
    "queued_feedback",
    "set_feedback_refusal",
    "set_inbox_accepted",
    "real_folder",
    "unsettled",
    "GreenlightInfo",
    "greenlight_info",
    "PROBATION_CYCLES",
    "UpdaterState",
    "UpdaterVersion",
    "entry_point",
    "exe_path",
    "fsync_tree",
    "greenlight_kind",
    "managed_version",
    "quarantine_record",
    "read_updaters",
    "settle",
    "sha256_of",
    "turn_link",
    "write_updaters",
    "FILE_LISTS",
    "PRODUCT_MANIFEST",
    "RELEASE_MANIFEST",
    "ActiveChannel",
    "EventKind",
    "FailedCheck",
    "HoldInfo",
    "IncidentInfo",
    "TransactionInfo",
    "UiStatus",
    "Update",
    "HistoryEntry",
    "Hold",
    "InstallRoot",
    "Journal",
    "Limits",
    "Region",
    "Pin",
    "QuarantineEntry",
    "RecordedCheck",
    "ReleaseManifest",
    "StepRecord",
    "StepState",
    "active_channel",
    "add_to_quarantine",
    "clear_hold",
    "clear_pin",
    "default_root",
    "extract",
    "index_tar",
    "history",
    "last_health",
    "save_health",
    "hold_of",
    "lift_quarantine",
    "locked",
    "pin_of",
    "quarantine",
    "queue_event",
    "queue_held",
    "read_status",
    "report_of",
    "refresh_status",
    "queued",
    "refusal",
    "set_refusal",
    "record",
    "restore_active_channel",
    "save_channel_file",
    "set_active_channel",
    "set_hold",
    "set_pin",
    "stage_release",
    "status_schema",
]
