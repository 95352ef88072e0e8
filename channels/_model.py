"""The channel file: which release a channel carries, and the exact bytes of each component.

A channel file is a TUF target signed by the channel's own delegated role, so the sha256 and
length it names are vouched for by that channel's signers. The schema is versioned and
exported as JSON Schema to `channels/schema/`.
"""

import json
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from greenlight.channels._cohort import COHORT_PATTERN
from greenlight.channels._identity import ReleaseId
from greenlight.channels._invalid import describe_validation
from greenlight.channels._paths import check_channel_name, check_component_name
from greenlight.channels._records import Record
from greenlight.channels._versions import canonical_version, parse_version

__all__ = ["SCHEMA_VERSION", "ChannelFile", "ChannelFileError", "ChannelName", "ComponentArtifact",
           "Delta", "FeedbackRule", "HaltEvidence", "HaltRule", "ManifestRef", "PreviousRelease",
           "RevokedRelease", "Rollout", "RolloutPlan", "RolloutState", "SequentialRule",
           "VersionStr", "json_schema"]

SCHEMA_VERSION = 1


class ChannelFileError(ValueError):
    """A channel file that does not parse or does not follow the schema."""


VersionStr = Annotated[str, AfterValidator(canonical_version)]
ChannelName = Annotated[str, AfterValidator(check_channel_name)]


class _Strict(Record):
    """A signed document's part: its fields are checked, and a field this version does not
    know is kept, not refused (what the entry needs is its `requires`, see _requires.py)."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)


_M = TypeVar("_M", bound=_Strict)


def _parse(model: type[_M], data: bytes, source: str) -> _M:
    """`data` as `model`, or one line naming the first field that is wrong."""
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        raise ChannelFileError(f"{source}: {describe_validation(e, limit=1)}") from None


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


class ManifestRef(_Strict):
    """A release's product manifest (how it runs and is checked): a signed target of its own,
    named here with its hash, so it is verified as the archives are."""

    target: str = Field(description="TUF target path of the manifest (product.toml)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    length: int = Field(gt=0)


class RevokedRelease(_Strict):
    version: VersionStr
    reason: str
    revoked_at: datetime


class SequentialRule(_Strict):
    """The sequential halt rule: halt once the release's failure rate is shown to be above
    its baseline's (the previous release's record on the fleet), by an anytime-valid test
    whose chance of halting a release no worse than the baseline is at most `false_halt`,
    however often it is looked at."""

    false_halt: float = Field(0.01, gt=0, le=0.2,
                              description="the chance of halting a release no worse than "
                                          "its baseline")
    min_failures: int = Field(3, ge=1, description="no halt before this many machines failed")
    floor: float = Field(0.01, gt=0, lt=1,
                         description="the least baseline failure rate assumed, when the "
                                     "previous release's record is thin or clean")


class FeedbackRule(_Strict):
    """A signal, not a verdict: once `machines` distinct machines' users wrote in about the
    release within the current step, the collector does not advance the rollout to its next
    step until a person resumes it. It never halts or rolls back by itself. Informational
    for the machines (they ignore it: see channels/_requires.py)."""

    machines: int = Field(ge=1, description="distinct machines whose users wrote in about "
                                            "the release within the current step")


class HaltRule(_Strict):
    """When the collector halts a rollout by itself: at least `rollbacks` distinct machines
    rolled back (or reached a dead end), or more than `failure_ratio` of at least
    `min_reports` distinct reporting machines did; or, with `sequential`, by that rule
    instead. With `feedback`, user feedback also pauses the rollout's advance (never halts
    it)."""

    rollbacks: int = Field(3, ge=1)
    failure_ratio: float = Field(0.05, gt=0, le=1)
    min_reports: int = Field(20, ge=1)
    sequential: SequentialRule | None = Field(
        None, description="judge by the sequential rule instead of the count and ratio")
    feedback: FeedbackRule | None = Field(
        None, description="pause the advance (never halt) once this many machines' users "
                          "wrote in within a step; informational for the machines")


class RolloutPlan(_Strict):
    """The steps a release may take, signed by the channel's role. The online rollout role
    (`rollout-<channel>`) may only say which step the release is at, or that it is halted;
    a machine never goes past the plan, nor faster than `soak` seconds a step."""

    steps: list[int] = Field(min_length=1, description="percent of installations per step")
    soak: float = Field(ge=0, description="the least time, in seconds, each step lasts")
    halt: HaltRule = Field(default_factory=HaltRule)
    started_at: datetime = Field(description="when step 0 began; the soak counts from here")

    @model_validator(mode="after")
    def _increasing(self) -> "RolloutPlan":
        if any(not 1 <= p <= 100 for p in self.steps):
            raise ValueError("rollout steps must be percents from 1 to 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("rollout steps must increase")
        return self


class PreviousRelease(_Strict):
    """The release a channel carried before a staged rollout began: what an installation
    outside the rollout installs when it has nothing yet (a fresh machine in a halted
    rollout gets the last release that is not halted for it)."""

    release: VersionStr
    components: dict[str, ComponentArtifact] = Field(min_length=1)
    manifest: ManifestRef | None = None


class Rollout(_Strict):
    percent: int = Field(ge=0, le=100)
    halted: bool = False
    plan: RolloutPlan | None = None
    previous: PreviousRelease | None = Field(
        default=None, description="the channel's release before this rollout, for a fresh "
                                  "installation the rollout does not include yet")

    @model_validator(mode="after")
    def _first_step(self) -> "Rollout":
        if self.plan is not None and self.percent != self.plan.steps[0]:
            raise ValueError("a planned rollout's percent is its first step")
        return self


class HaltEvidence(_Strict):
    """What a collector's halt or hold rests on, as data: counts, the most failed check's
    name, and a short escaped excerpt of what machines said of it."""

    failed: int = Field(ge=0, description="distinct machines that failed the release")
    total: int = Field(ge=0, description="distinct machines counted")
    check: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
    excerpt: str | None = Field(default=None, max_length=160,
                                pattern=r"^[\x20-\x7e]*$",
                                description="one printable line, control characters escaped")
    cohort: str | None = Field(default=None, pattern=COHORT_PATTERN)


class RolloutState(_Strict):
    """`rollouts/<channel>.json`, signed by the online role `rollout-<channel>`: the step the
    channel's current release is at, or that it is halted, and who said so."""

    # Strict: it has no `requires`, so a field that changes what a machine does needs a new
    # format number (greenlight.rollout-state/2) rather than being ignored by older readers.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    schema_: Literal["greenlight.rollout-state/1"] = Field(
        "greenlight.rollout-state/1", alias="schema")
    channel: ChannelName
    release: str = Field(description="the release key (version@digest) this state is about")
    step: int = Field(ge=0)
    halted: bool = False
    reason: str | None = None
    by: str = Field(description="who or what set this state: 'collector' or a person")
    at: datetime
    counted_since: datetime | None = Field(
        default=None, description="reports before this were judged already (a person resumed)")
    evidence: HaltEvidence | None = Field(
        default=None, description="what the collector's halt or hold rests on, as data")
    held_cohorts: list[Annotated[str, Field(pattern=COHORT_PATTERN)]] | None = Field(
        default=None, max_length=64,
        description="kinds of machine (see channels._cohort) held where they are: the "
                    "rollout goes on for the others")

    def to_json(self) -> bytes:
        return (self.model_dump_json(indent=2, exclude_none=True, by_alias=True)
                + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str = "rollout state") -> "RolloutState":
        return _parse(cls, data, source)


class ChannelFile(_Strict):
    schema_version: Literal[1] = 1
    channel: ChannelName
    release: VersionStr
    components: dict[str, ComponentArtifact] = Field(min_length=1)
    manifest: ManifestRef | None = Field(
        default=None, description="the release's product manifest; none: the machine's "
                                  "greenlight.toml says how it runs")
    fallback: ChannelName | None = None
    revoked: list[RevokedRelease] = Field(default_factory=list)
    rollout: Rollout | None = None
    promoted_from: ChannelName | None = None
    published_at: datetime
    requires: VersionStr | None = Field(
        default=None, description="the oldest Greenlight that can act on this entry; none: "
                                  "any (channels/_requires.py)")

    @model_validator(mode="after")
    def _consistent(self) -> "ChannelFile":
        for name in self.components:
            check_component_name(name)
        if self.fallback == self.channel:
            raise ValueError(f"channel {self.channel!r} cannot fall back to itself")
        return self

    @property
    def identity(self) -> ReleaseId:
        """The release this file carries: its version, its components' and its manifest's
        sha256s."""
        return ReleaseId.of(self.release, self.components, self.manifest)

    def before_rollout(self) -> "ChannelFile | None":
        """This channel file as it read before its staged rollout began (its previous
        release, no rollout), for an installation the rollout leaves out; None when the
        rollout recorded no previous release, or it was revoked since."""
        previous = self.rollout.previous if self.rollout is not None else None
        if previous is None or self.is_revoked(previous.release):
            return None
        return self.model_copy(update={"release": previous.release,
                                       "components": previous.components,
                                       "manifest": previous.manifest, "rollout": None})

    def is_revoked(self, version: str) -> RevokedRelease | None:
        for entry in self.revoked:
            if parse_version(entry.version) == parse_version(version):
                return entry
        return None

    def to_json(self) -> bytes:
        return (self.model_dump_json(indent=2, exclude_none=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str = "channel file") -> "ChannelFile":
        return _parse(cls, data, source)



def json_schema(model: type[_Strict] = ChannelFile) -> str:
    """The JSON Schema of the channel file (or of `RolloutState`), as exported to
    channels/schema/."""
    return json.dumps(model.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"
