"""A rehearsal's matrix, kept beside the release in the repository's folder, and the gate that
reads it.

`REPO/rehearsals/<channel>/<version>.json` (`greenlight.rehearsal/1`) holds the last rehearsal
of a candidate on a channel: the candidate's identity (each component's sha256 and its
manifest's), every path with its outcome, and the verdict. Neither it nor the overrides'
record (`OVERRIDES`) is ever served: `release serve` and `release sync` send only `metadata/`
and `targets/`.

`RehearsalGate` is what `release promote` and `release publish --rollout-plan` ask before they
sign: the release's last rehearsal on that channel must be of these very bytes and have passed;
else one line refuses (exit 1), unless the person says `--without-rehearsal REASON`, which is
appended to `OVERRIDES` and shown by `release status` and the dashboard.
"""

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, computed_field

from greenlight.channels import Record, now
from greenlight.release._errors import ReleaseError

if TYPE_CHECKING:
    from greenlight.channels import ChannelFile
    from greenlight.release.repository._repository import FileRepository

__all__ = ["FOLDER", "OVERRIDES", "SCHEMA", "FailedCheck", "PathResult", "RehearsalGate",
           "RehearsalRecord", "entry_identity", "identity_of", "last_rehearsal", "overrides",
           "path_name", "record_path", "rehearsals"]

SCHEMA = "greenlight.rehearsal/1"
FOLDER = "rehearsals"
OVERRIDES = "rehearsal-overrides.jsonl"
"""the append-only record of promotions and rollouts started without a passed rehearsal"""

Outcome = Literal["upgraded", "failed", "preflight", "from-failed", "needs-newer", "error",
                  "timed-out", "interrupted"]
"""upgraded: the candidate passed its checks here; failed: it failed them and was rolled back;
preflight: its preflight set it aside before the switch; from-failed: the *from* release did
not pass its own checks on this layer (the candidate was not tried: not a pass); needs-newer: the
candidate needs a newer Greenlight than the one rehearsing; error: a step failed otherwise
(its line); timed-out, interrupted: the path was stopped, everything it started with it."""
PASSING = ("upgraded",)
"""a path that says nothing about the candidate (its from release failed here) is no pass"""


class FailedCheck(Record):
    name: str
    summary: str = Field(description="what the check saw (the evidence), escaped")


class PathResult(Record):
    kind: Literal["upgrade", "fresh", "bundle-upgrade", "bundle-fresh", "installer-upgrade",
                  "installer-fresh"]
    from_version: str | None = Field(description="the release installed first; none: an "
                                                  "empty root")
    to_version: str
    layer: str = Field(description="the machine layer: 'default' or a scenario's name")
    outcome: Outcome
    rollback: Literal["ok", "failed", "n/a"] = Field(
        "n/a", description="after the candidate (taken or rolled back), the from release "
                           "is back and passes its checks")
    failed_checks: list[FailedCheck] = Field(default_factory=list)
    detail: str = Field("", description="one line: what decided the outcome")
    seconds: float = 0.0
    steps: dict[str, float] = Field(default_factory=dict,
                                    description="seconds of each step: copy, prepare, "
                                                "install-from, upgrade, rollback, check-from")
    bytes_fetched: int = 0
    delta: bool = Field(False, description="a patch from the from release was used")
    isolation: Literal["netns", "ports"] = "netns"


class RehearsalRecord(Record):
    schema_: Literal["greenlight.rehearsal/1"] = Field("greenlight.rehearsal/1", alias="schema")
    channel: str
    version: str
    identity: dict[str, str] = Field(description="component -> 'archive sha256/top folder "
                                                 "left out', and '@manifest' -> the "
                                                 "manifest's sha256")
    source: str = Field(description="where the candidate came from")
    started: datetime
    seconds: float
    isolation: Literal["netns", "ports"]
    layers: list[str]
    paths: list[PathResult]
    cohorts_seen: dict[str, int] = Field(
        default_factory=dict, description="the collector's cohorts on the channel, machines each")
    cohorts_unstood: list[str] = Field(
        default_factory=list, description="seen cohorts no layer says it stands for")

    @computed_field(description="every path upgraded and its rollback (if any) was ok; "  # type: ignore[prop-decorator]
                    "worked out from the paths, whatever a file says")
    @property
    def passed(self) -> bool:
        return bool(self.paths) and not self.failures()

    def failures(self) -> list[PathResult]:
        return [p for p in self.paths if p.outcome not in PASSING or p.rollback == "failed"]

    def summary(self) -> str:
        bad = self.failures()
        if not bad:
            return (f"rehearsed {self.version} on {self.channel}: {len(self.paths)} paths "
                    "passed")
        first = bad[0]
        return (f"rehearsal of {self.version} on {self.channel} failed {len(bad)} of "
                f"{len(self.paths)} paths, first {path_name(first)}: {first.detail}")


def path_name(p: PathResult) -> str:
    start = p.from_version or "empty root"
    how = f" ({p.kind.split('-')[0]})" if p.kind.startswith(("bundle-", "installer-")) else ""
    return f"{start} -> {p.to_version}{how} [{p.layer}]"


def identity_of(components: dict[str, str], manifest: str | None,
                layout: dict[str, str | None] | None = None) -> dict[str, str]:
    """What machines install, as a map: each component's archive sha256 (and, after a `/`,
    the top folder left out when it is unpacked), and the manifest's sha256 under `@manifest`
    (no component can be named so)."""
    shown = {n: f"{h}/{(layout or {}).get(n) or ''}" for n, h in components.items()}
    return {**shown, **({"@manifest": manifest} if manifest else {})}


def record_path(repo_path: Path, channel: str, version: str) -> Path:
    return repo_path / FOLDER / channel / f"{version}.json"


def last_rehearsal(repo_path: Path, channel: str, version: str) -> RehearsalRecord | None:
    """The last rehearsal of `version` on `channel`, if one was kept (and reads)."""
    try:
        return RehearsalRecord.model_validate_json(
            record_path(repo_path, channel, version).read_bytes())
    except (OSError, ValueError):
        return None


def rehearsals(repo_path: Path) -> list[RehearsalRecord]:
    """Every rehearsal kept, newest first."""
    found = []
    for path in sorted((repo_path / FOLDER).glob("*/*.json")):
        try:
            found.append(RehearsalRecord.model_validate_json(path.read_bytes()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda r: r.started, reverse=True)


def overrides(repo_path: Path) -> list[dict[str, object]]:
    """The promotions and rollouts started without a passed rehearsal, oldest first."""
    try:
        lines = (repo_path / OVERRIDES).read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item)
    return found


def entry_identity(entry: "ChannelFile") -> dict[str, str]:
    return identity_of({n: c.sha256 for n, c in entry.components.items()},
                       entry.manifest.sha256 if entry.manifest else None,
                       {n: c.strip_prefix for n, c in entry.components.items()})


class RehearsalGate:
    """A channel change's check before it signs (`publish(..., gate=)`, `promote(...,
    gate=)`): the entry's release must have a passed rehearsal on this channel of these very
    bytes; `without` (the reason) lets it through and records the override."""

    def __init__(self, repo: "FileRepository", action: str, without: str | None) -> None:
        self.repo, self.action, self.without = repo, action, without
        self.recorded = False

    def __call__(self, entry: "ChannelFile") -> None:
        channel, version = entry.channel, entry.release
        record = last_rehearsal(self.repo.path, channel, version)
        if record is None or (record.channel, record.version) != (channel, version) \
                or not record.paths:
            why = f"{version} was never rehearsed on {channel}"
        elif record.identity != entry_identity(entry):
            why = (f"the rehearsal of {version} on {channel} was of other bytes than these "
                   "(rehearse them again)")
        elif not record.passed:
            why = record.summary()
        else:
            return
        line = (f"{self.action} refused: {why}; run 'release rehearse {self.repo.path} "
                f"--channel {channel} --version {version}', or pass --without-rehearsal REASON")
        if self.without is None:
            raise ReleaseError(line)
        self._record(channel, version, why)

    def _record(self, channel: str, version: str, why: str) -> None:
        from greenlight.release.repository._rollouts import person

        item = {"at": now().isoformat(), "action": self.action, "channel": channel,
                "release": version, "by": person(), "refusal": why,
                "reason": " ".join(self.without.split())[:500] if self.without else ""}
        self.repo.append_line(self.repo.path / OVERRIDES, item)
        self.recorded = True
