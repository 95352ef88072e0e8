"""The offline bundle's format, shared by the pipeline that writes bundles and the client that
reads them.

A bundle is a plain tar holding a small repository tree:

    bundle.json      format, channel, release, created, expires (unsigned: a hint for people)
    metadata/...     the root chain and the metadata the release needs (consistent names)
    targets/...      the channel file and the release's artifacts

The client reads it as a repository at `BUNDLE_BASE_URL`, verified by TUF like any other.
"""

import json
from datetime import datetime

__all__ = ["BUNDLE_BASE_URL", "BUNDLE_FORMAT", "BUNDLE_MANIFEST", "BundleFormatError",
           "BundleManifest"]

BUNDLE_FORMAT = "greenlight.bundle/1"
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_BASE_URL = "bundle://local/"
_MAX_MANIFEST = 64 * 1024


class BundleFormatError(ValueError):
    """bundle.json is missing, too large, or not this format."""


class BundleManifest:
    """What bundle.json says (unsigned: everything that matters is verified by TUF)."""

    def __init__(self, channel: str, release: str, created: datetime, expires: datetime,
                 greenlight: str | None = None) -> None:
        self.channel = channel
        self.release = release
        self.created = created
        self.expires = expires
        self.greenlight = greenlight
        """the Greenlight release it carries too (greenlight-<channel>), if any (0.3.0 on)"""

    def to_json(self) -> bytes:
        return json.dumps({"format": BUNDLE_FORMAT, "channel": self.channel,
                           "release": self.release, "created": self.created.isoformat(),
                           "expires": self.expires.isoformat(),
                           **({"greenlight": self.greenlight} if self.greenlight else {})},
                          indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "BundleManifest":
        """Read bundle.json.

        Raises:
            BundleFormatError: too large, not this format, or a field missing or malformed.
        """
        if len(data) > _MAX_MANIFEST:
            raise BundleFormatError(f"bundle.json is larger than {_MAX_MANIFEST} bytes")
        try:
            raw = json.loads(data)
            if raw.get("format") != BUNDLE_FORMAT:
                raise BundleFormatError(f"format {raw.get('format')!r}, not {BUNDLE_FORMAT}")
            greenlight = raw.get("greenlight")
            return cls(str(raw["channel"]), str(raw["release"]),
                       datetime.fromisoformat(raw["created"]),
                       datetime.fromisoformat(raw["expires"]),
                       str(greenlight) if greenlight is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BundleFormatError(f"bundle.json: {e}") from None
