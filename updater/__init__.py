"""Greenlight's client: TUF-verified channels, staged releases, atomic switches.

The public face is small: `InstallRoot` (an installation on disk), `TrustedRepository`
(the TUF client), `check` and `upgrade` (plain functions the CLI calls), and the error
hierarchy rooted at `GreenlightError`.
"""

from updater._bundle import DirectoryFetcher
from updater._errors import (
    ArchiveError,
    BusyError,
    ConfigError,
    GreenlightError,
    NetworkError,
    NotFound,
    StoreError,
    TrustError,
)
from updater._fetcher import HttpxFetcher
from updater._fs import atomic_write
from updater._root import InstallRoot, default_root
from updater._trust import TrustedRepository
from updater._upgrade import check, open_repository, upgrade

__all__ = [
    "ArchiveError",
    "BusyError",
    "ConfigError",
    "DirectoryFetcher",
    "GreenlightError",
    "HttpxFetcher",
    "InstallRoot",
    "NetworkError",
    "NotFound",
    "StoreError",
    "TrustError",
    "TrustedRepository",
    "atomic_write",
    "check",
    "default_root",
    "open_repository",
    "upgrade",
]
