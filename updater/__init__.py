"""Greenlight's client: TUF-verified channels, health-checked upgrades that roll back by
themselves, offline bundles.

Layers, each importing only those below it:

```
cli, installer, conformance   thin command lines
agent                         the unattended cycle and its loop
selfupdate                    Greenlight's own versions: side by side, qualify, activate
operations                    check, upgrade, sideload, rollback, health, status, ...
policy                        pure: what should this machine do now (decide, agent_step)
transaction                   engine (steps with do/undo + journal), steps, rollback, recovery
output                        the JSON shapes of the commands' output
trust | product               TUF client and downloads | config, services, health checks
store                         the root on disk: layout, journal, history, quarantine, outbox
greenlight.channels           the shared layer
```

This module re-exports the error tree only (its root and three branches are the shared
layer's), so that importing it loads nothing of the client: every error carries the exit code
the CLI returns for it. It also keeps the cloud SDKs that
securesystemslib's signer package reaches for out of the client (`_lean`).
"""

from greenlight.updater._errors import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_ROLLBACK_FAILED,
    EXIT_ROLLED_BACK,
    EXIT_UPDATE_AVAILABLE,
    EXIT_YANKED,
    ArchiveError,
    BusyError,
    ChannelMismatch,
    ConfigError,
    GreenlightError,
    NetworkError,
    NotFound,
    PrecheckFailed,
    ServiceError,
    StoreError,
    TrustError,
    UsageError,
)
from greenlight.updater._lean import keep_cloud_sdks_out

keep_cloud_sdks_out()

__all__ = [
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_ROLLBACK_FAILED",
    "EXIT_ROLLED_BACK",
    "EXIT_UPDATE_AVAILABLE",
    "EXIT_YANKED",
    "ArchiveError",
    "BusyError",
    "ChannelMismatch",
    "ConfigError",
    "GreenlightError",
    "NetworkError",
    "NotFound",
    "PrecheckFailed",
    "ServiceError",
    "StoreError",
    "TrustError",
    "UsageError",
]
