"""The client's operations as plain functions; the CLIs call these and only print.

- `_read`: open_repository, check, status, switch_channel, plan_for, read_channel;
- `_read` also lists the quarantine (`quarantined`), and `follow`s the chosen channel;
- `_recovery`: what every command runs first (`recover_if_interrupted`);
- `_change`: the transactions: upgrade, sideload, download, rollback;
- `_verify`: the installed tree against its signed file lists, and its repair;
- `_feedback`, `_inbox`: a user's feedback with its evidence, queued or exported, and the
  product's inbox of it;
- `_machine`: around them: health, start and stop, crashed services, what the services'
  supervisors did (`supervise`), systemd units, lifting a quarantine.

Every operation that changes the root takes the root's lock and first finishes or undoes a
transaction an interrupted updater left behind (`recover`). What to do is decided by the pure
`policy.decide`; an upgrade is then pre-checked on the running release and run as the
transaction of `greenlight.updater.transaction`, which rolls back by itself. Names load on
first use (PEP 562): `updater check` never loads the transaction.
"""

from typing import TYPE_CHECKING, Any

from greenlight.channels._lazy import lazy_export

if TYPE_CHECKING:
    from greenlight.updater.operations._change import (
        download,
        previous_release,
        rollback,
        sideload,
        upgrade,
    )
    from greenlight.updater.operations._feedback import (
        EXPORT_SCHEMA,
        compose_feedback,
        dry_run_body,
        export_feedback,
        submit_feedback,
    )
    from greenlight.updater.operations._inbox import InboxCollection, collect_inbox
    from greenlight.updater.operations._machine import (
        Supervised,
        acting_person,
        crashed_services,
        health,
        lift,
        start_services,
        stop_services,
        supervise,
        write_systemd_units,
    )
    from greenlight.updater.operations._read import (
        check,
        checked,
        open_repository,
        plan_for,
        quarantined,
        read_channel,
        status,
        switch_channel,
    )
    from greenlight.updater.operations._recovery import recover_if_interrupted, recover_root
    from greenlight.updater.operations._verify import (
        repair,
        repair_from_bundle,
        verify,
        verify_and_record,
    )

__all__ = [
    "EXPORT_SCHEMA",
    "InboxCollection",
    "Supervised",
    "acting_person",
    "check",
    "checked",
    "collect_inbox",
    "compose_feedback",
    "crashed_services",
    "download",
    "dry_run_body",
    "export_feedback",
    "health",
    "lift",
    "open_repository",
    "plan_for",
    "previous_release",
    "quarantined",
    "read_channel",
    "recover_if_interrupted",
    "recover_root",
    "repair",
    "repair_from_bundle",
    "rollback",
    "sideload",
    "start_services",
    "status",
    "stop_services",
    "submit_feedback",
    "supervise",
    "switch_channel",
    "upgrade",
    "verify",
    "verify_and_record",
    "write_systemd_units",
]

_READ = {"check", "checked", "open_repository", "plan_for", "quarantined", "read_channel", "status",
         "switch_channel"}
_RECOVERY = {"recover_if_interrupted", "recover_root"}
_VERIFY = {"repair", "repair_from_bundle", "verify", "verify_and_record"}
_FEEDBACK = {"EXPORT_SCHEMA", "compose_feedback", "dry_run_body", "export_feedback",
             "submit_feedback"}
_INBOX = {"InboxCollection", "collect_inbox"}
_MACHINE = {"Supervised", "acting_person", "crashed_services", "health", "lift",
            "start_services", "stop_services", "supervise", "write_systemd_units"}


_HOME = {name: f"{__name__}.{home}" for name in __all__ for home in [
    "_read" if name in _READ else "_recovery" if name in _RECOVERY else
    "_machine" if name in _MACHINE else "_verify" if name in _VERIFY else
    "_feedback" if name in _FEEDBACK else "_inbox" if name in _INBOX else "_change"]}


def __getattr__(name: str) -> Any:
    return lazy_export(__name__, _HOME, name)
