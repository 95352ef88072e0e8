"""A release's identity: its version plus the sha256 of each of its components (and of its
product manifest, when it carries one).

Two releases with the same version and other bytes are two releases. The identity is what the
client compares to say "installed", "up to date" and "quarantined", so a signer who labels
other bits with a version cannot poison, or pass for, the real release of that version.

    digest = sha256 over the lines "<component> <sha256>\\n", components sorted by name,
             then "manifest: <sha256>\\n" for a release with a product manifest
    key    = "<version>@<first 12 hex digits of digest>"  (a release's folder name)
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["KEY_DIGITS", "ReleaseId", "version_of"]

KEY_DIGITS = 12


class _HasSha256(Protocol):
    @property
    def sha256(self) -> str: ...


def version_of(key: str) -> str:
    """The version part of a release key (a bare version is its own key's version)."""
    return key.partition("@")[0]


@dataclass(frozen=True)
class ReleaseId:
    version: str
    digest: str

    @classmethod
    def of(cls, version: str, components: Mapping[str, _HasSha256],
           manifest: _HasSha256 | None = None) -> "ReleaseId":
        lines = "".join(f"{name} {components[name].sha256}\n" for name in sorted(components))
        if manifest is not None:  # no component is named "manifest:" (see check_component_name)
            lines += f"manifest: {manifest.sha256}\n"
        return cls(version, hashlib.sha256(lines.encode()).hexdigest())

    @property
    def key(self) -> str:
        return f"{self.version}@{self.digest[:KEY_DIGITS]}"

    def __str__(self) -> str:
        return f"{self.version} ({self.digest[:KEY_DIGITS]})"
