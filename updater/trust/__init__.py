"""Trust: python-tuf's ngclient over Greenlight's fetchers, and verified downloads.

- `HttpxFetcher`: ngclient's FetcherInterface over one httpx client (deadlines, Range);
- `TrustedRepository`: refresh, channel files as targets of the channel's delegated role,
  artifacts streamed into the content-addressed store and verified as they arrive;
- `open_bundle` (over `BundleFetcher`): the same client over an offline bundle, read in
  place; `DirectoryFetcher`: over a folder (a repository on disk);
- `RangedFetcher` and `LocalRegions`: what a fetcher can do beyond ngclient's interface
  (resume from an offset; point at bytes already on disk), as typed protocols.

Every python-tuf and httpx exception leaves this package as a `TrustError`, `NetworkError`
or `StoreError` with one line that says what was refused and why.
"""

from tuf.ngclient import FetcherInterface

from greenlight.updater.trust._bundle import Bundle, BundleFetcher, DirectoryFetcher, open_bundle
from greenlight.updater.trust._downloads import Downloads, Opener, Progress, receive_verified
from greenlight.updater.trust._fetcher import (
    HttpxFetcher,
    LocalRegions,
    RangedFetcher,
    user_agent,
)
from greenlight.updater.trust._repository import TrustedRepository, explain, verifying

__all__ = [
    "Bundle",
    "BundleFetcher",
    "DirectoryFetcher",
    "Downloads",
    "FetcherInterface",
    "HttpxFetcher",
    "LocalRegions",
    "RangedFetcher",
    "Opener",
    "Progress",
    "TrustedRepository",
    "explain",
    "open_bundle",
    "verifying",
    "receive_verified",
    "user_agent",
]
