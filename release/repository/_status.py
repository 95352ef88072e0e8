"""A repository's state for people: channels, releases, roles, thresholds and expiry."""

from datetime import UTC, datetime

from pydantic import Field
from tuf.api.metadata import Root, Snapshot, Timestamp

from greenlight.channels import ChannelFile, Record
from greenlight.release.repository._channels import channels, current_channel_file, require
from greenlight.release.repository._repository import FileRepository
from greenlight.release.repository._upkeep import renewal

__all__ = ["ChannelChange", "ChannelStatus", "RepositoryStatus", "RoleStatus", "repository_status"]


class RoleStatus(Record):
    role: str
    version: int
    expires: datetime
    expired: bool = Field(description="clients refuse it until it is re-signed")
    renewal: str = Field(description="what re-signs it with a fresh expiry")
    threshold: int
    keys: int


class ChannelStatus(Record):
    channel: str
    release: str
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
            )
        )
    return RepositoryStatus(repository=str(repo.path), channels=found, roles=roles,
                            awaiting_signatures=repo.pending())


class ChannelChange(Record):
    """A channel file just written (publish, promote, yank, rollout) and what awaits
    signatures before it is published."""

    channel_file: ChannelFile
    awaiting_signatures: list[str]
