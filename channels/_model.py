"""The channel file: which release a channel carries, and the exact bytes of each component.

A channel file is a TUF target signed by the channel's own delegated role, so the sha256 and
length it names are vouched for by that channel's signers. The schema is versioned and
exported as JSON Schema to `channels/schema/`.
"""

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from greenlight.channels._identity import ReleaseId
from greenlight.channels._paths import check_channel_name, check_component_name
from greenlight.channels._records import Record
from greenlight.channels._versions import canonical_version, parse_version

__all__ = ["SCHEMA_VERSION", "ChannelFile", "ChannelFileError", "ChannelName",
           "ComponentArtifact", "Delta", "RevokedRelease", "Rollout", "VersionStr", "json_schema"]

SCHEMA_VERSION = 1


class ChannelFileError(ValueError):
    """A channel file that does not parse or does not follow the schema."""


VersionStr = Annotated[str, AfterValidator(canonical_version)]
ChannelName = Annotated[str, AfterValidator(check_channel_name)]


class _Strict(Record):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Delta(_Strict):
    """A patch from an earlier release's artifact to this one (see updater/_delta.py)."""

    from_version: VersionStr
    base_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the artifact patched")
    target: str = Field(description="TUF target path of the delta file")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    length: int = Field(gt=0)
    method: str


class ComponentArtifact(_Strict):
    version: VersionStr
    target: str = Field(description="TUF target path of the archive")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    length: int = Field(gt=0)
    strip_prefix: str | None = Field(
        default=None, pattern=r"^[^/\x00-\x1f]{1,255}$",
        description="the one top folder every member of the archive sits under, left out "
                    "when it is unpacked into releases/<key>/<component>/")
    deltas: list[Delta] = Field(default_factory=list)

    @model_validator(mode="after")
    def _prefix(self) -> "ComponentArtifact":
        if self.strip_prefix in (".", ".."):
            raise ValueError(f"strip_prefix {self.strip_prefix!r} is not a folder name")
        return self


class RevokedRelease(_Strict):
    version: VersionStr
    reason: str
    revoked_at: datetime


class Rollout(_Strict):
    percent: int = Field(ge=0, le=100)
    halted: bool = False


class ChannelFile(_Strict):
    schema_version: Literal[1] = 1
    channel: ChannelName
    release: VersionStr
    components: dict[str, ComponentArtifact] = Field(min_length=1)
    fallback: ChannelName | None = None
    revoked: list[RevokedRelease] = Field(default_factory=list)
    rollout: Rollout | None = None
    promoted_from: ChannelName | None = None
    published_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> "ChannelFile":
        for name in self.components:
            check_component_name(name)
        if self.fallback == self.channel:
            raise ValueError(f"channel {self.channel!r} cannot fall back to itself")
        return self

    @property
    def identity(self) -> ReleaseId:
        """The release this file carries: its version and its components' sha256s."""
        return ReleaseId.of(self.release, self.components)

    def is_revoked(self, version: str) -> RevokedRelease | None:
        for entry in self.revoked:
            if parse_version(entry.version) == parse_version(version):
                return entry
        return None

    def to_json(self) -> bytes:
        return (self.model_dump_json(indent=2, exclude_none=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str = "channel file") -> "ChannelFile":
        try:
            return cls.model_validate_json(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ChannelFileError(f"{source}: field {where}: {first['msg']}") from None



def json_schema() -> str:
    return json.dumps(ChannelFile.model_json_schema(), indent=2, sort_keys=True) + "\n"
