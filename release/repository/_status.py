"""A repository's state for people: channels, releases, roles, thresholds and expiry."""

from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from tuf.api.metadata import Root, Snapshot, Timestamp

from greenlight.channels import UPDATER_PREFIX, ChannelFile, Record
from greenlight.release.repository._channels import channels, current_channel_file, require
from greenlight.release.repository._repository import FileRepository
from greenlight.release.repository._upkeep import renewal

__all__ = ["ChannelCensus", "ChannelChange", "ChannelStatus", "RepositoryStatus", "RoleStatus",
           "repository_status"]


class RoleStatus(Record):
    role: str
    version: int
    expires: datetime
    expired: bool = Field(description="clients refuse it until it is re-signed")
    renewal: str = Field(description="what re-signs it with a fresh expiry")
    threshold: int
    keys: int


class ChannelCensus(Record):
    """What a collector says the machines on a channel run (`release status --collector`)."""

    machines: int = Field(description="machines reporting on the channel (by their latest "
                                      "report, a report about its updater included)")
    greenlight: dict[str, dict[str, int]] = Field(
        description="machines by the Greenlight version they run and how it is installed "
                    "(exe, python, copy, none; unknown: a report that did not say, 0.2.0's)")
    older: int = Field(description="machines running a Greenlight older than the release's "
                                   "`requires`")


class ChannelStatus(Record):
    channel: str
    release: str
    requires: str | None = Field(default=None, description="the oldest Greenlight that can "
                                                           "act on the entry; none: any")
    updater_for: str | None = Field(
        default=None, description="a channel named greenlight-<channel> carries Greenlight's "
                                  "updater for the machines on <channel>: that channel")
    census: ChannelCensus | None = Field(default=None, description="with --collector")
    rollout: str
    promoted_from: str | None
    fallback: str | None
    published_at: datetime
    components: dict[str, str]
    revoked: list[str]


class RepositoryStatus(Record):
    repository: str
    channels: list[ChannelStatus]
    roles: list[RoleStatus]
    awaiting_signatures: list[str]


def repository_status(repo: FileRepository) -> RepositoryStatus:
    require(repo)
    roles = []
    for role in [Root.type, Timestamp.type, Snapshot.type,
                 *(r for r in repo.targets_roles() if not r.startswith("bin-"))]:
        signed = repo.open(role).signed
        authority = repo.authorizing_role(role)
        roles.append(
            RoleStatus(
                role=role,
                version=signed.version,
                expires=signed.expires,
                expired=signed.expires <= datetime.now(UTC),
                renewal=renewal(role),
                threshold=authority.threshold,
                keys=len(authority.keyids),
            )
        )
    found = []
    for name in channels(repo):
        cf = current_channel_file(repo, name)
        if cf is None:
            continue
        found.append(
            ChannelStatus(
                channel=name,
                release=cf.release,
                rollout="all" if cf.rollout is None else
                f"{cf.rollout.percent}%{' halted' if cf.rollout.halted else ''}",
                promoted_from=cf.promoted_from,
                fallback=cf.fallback,
                published_at=cf.published_at,
                components={k: v.target for k, v in cf.components.items()},
                revoked=[r.version for r in cf.revoked],
                requires=cf.requires,
                updater_for=(name.removeprefix(UPDATER_PREFIX) or None)
                if name.startswith(UPDATER_PREFIX) else None,
            )
        )
    return RepositoryStatus(repository=str(repo.path), channels=found, roles=roles,
                            awaiting_signatures=repo.pending())


class ChannelChange(Record):
    """A channel file just written (publish, promote, yank, rollout) and what awaits
    signatures before it is published."""

    channel_file: ChannelFile
    awaiting_signatures: list[str]
    census: ChannelCensus | None = Field(default=None, description="publish --collector: "
                                         "what the channel's machines run")
    override: dict[str, Any] | None = Field(
        default=None, description="publish --force: the census refusal published over, as "
                                  "recorded in publish-overrides.jsonl")
