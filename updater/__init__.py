"""Greenlight's client: TUF-verified channels, health-checked upgrades that roll back by
themselves, offline bundles.

Layers, each importing only those below it:

```
cli, installer, conformance   thin command lines
operations                    check, upgrade, sideload, rollback, health, status, ...
plan                          pure: what should this machine do now
transaction                   engine (steps with do/undo + journal), steps, rollback, recovery
reports                       the JSON shapes of the commands' output
trust | store | product       TUF client and downloads | the root on disk | config, services,
                              health checks
greenlight.channels           the shared layer
```

This module re-exports the error tree only, so that importing it stays cheap: every error
carries the exit code the CLI returns for it. It also keeps the cloud SDKs that
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
