"""Publishing a release to a channel, and reading the repository's state back.

A publish adds each component archive as a target, writes the channel file as a target of the
channel's own delegated role (created, with a key of its own, on the channel's first
publish), then a new snapshot and timestamp.
"""

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Timestamp,
)

from channels import (
    ChannelFile,
    ComponentArtifact,
    Delta,
    Rollout,
    artifact_target,
    channel_role,
    channel_target,
    check_channel_name,
    check_component_name,
    is_newer,
    parse_version,
)
from release._errors import ReleaseError
from release._repository import FileRepository
from updater._delta import build_delta


def _require(repo: FileRepository) -> None:
    if not repo.exists():
        raise ReleaseError(f"{repo.path}: no repository here (run 'release init {repo.path}')")


def current_channel_file(repo: FileRepository, channel: str) -> ChannelFile | None:
    role = channel_role(channel)
    if role not in repo.targets_roles():
        return None
    info = repo.targets(role).targets.get(channel_target(channel))
    if info is None:
        return None
    return ChannelFile.from_json(repo.read_target(info), f"channel file of {channel!r}")


def channels(repo: FileRepository) -> list[str]:
    return sorted(r.removeprefix("channel-") for r in repo.targets_roles() if r.startswith("channel-"))


def ensure_channel_role(repo: FileRepository, channel: str) -> None:
    """Delegate `channel-<name>` (its own new key) on the channel's first publish."""
    role = channel_role(channel)
    if role in repo.targets_roles():
        return
    with repo.edit_targets() as targets:
        if targets.delegations is None:
            targets.delegations = Delegations(keys={}, roles={})
        assert targets.delegations.roles is not None
        targets.delegations.roles[role] = DelegatedRole(
            name=role, keyids=[], threshold=1, terminating=True, paths=[channel_target(channel)]
        )
        targets.add_key(repo.keys.generate(role).public_key, role)


def add_artifacts(repo: FileRepository, files: dict[str, Path | bytes]) -> dict[str, TargetFile]:
    """Store files (or bytes) as targets in their hashed bins: {target path: source} -> infos."""
    infos = {path: repo.add_target_bytes(path, source) if isinstance(source, bytes)
             else repo.add_target_file(path, source) for path, source in files.items()}
    by_bin: dict[str, list[TargetFile]] = {}
    for path, info in infos.items():
        by_bin.setdefault(repo.bin_for(path), []).append(info)
    for name, entries in sorted(by_bin.items()):
        with repo.edit_targets(name) as bin_targets:
            for info in entries:
                bin_targets.targets[info.path] = info
    return infos


def write_channel_file(repo: FileRepository, channel_file: ChannelFile) -> None:
    """Sign `channel_file` as the channel's target and publish a new snapshot and timestamp."""
    info = repo.add_target_bytes(channel_target(channel_file.channel), channel_file.to_json())
    with repo.edit_targets(channel_role(channel_file.channel)) as role_targets:
        role_targets.targets[info.path] = info
    repo.commit()


def channel_history(repo: FileRepository, channel: str) -> list[ChannelFile]:
    """Every channel file the channel has carried, newest first (from its role's versions)."""
    role = channel_role(channel)
    files: list[ChannelFile] = []
    seen: set[str] = set()
    versions = sorted((int(p.name.split(".", 1)[0]) for p in
                       repo.metadata_dir.glob(f"*.{role}.json")), reverse=True)
    for version in versions:
        md = Metadata.from_bytes((repo.metadata_dir / f"{version}.{role}.json").read_bytes())
        info = md.signed.targets.get(channel_target(channel))  # type: ignore[attr-defined]
        if info is None or info.hashes["sha256"] in seen:
            continue
        seen.add(info.hashes["sha256"])
        path = repo.stored_target_path(info.path, info.hashes["sha256"])
        if path.exists():
            files.append(ChannelFile.from_json(path.read_bytes()))
    return files


DELTA_BASES = 3  # the last releases of the channel, and of its fallback, get a delta each


def build_deltas(repo: FileRepository, channel: str, fallback: str | None, version: str,
                 artifacts: dict[str, ComponentArtifact],
                 budget_seconds: float = 30.0) -> dict[str, ComponentArtifact]:
    """Patches to each new artifact from the recent releases on the channel (and its
    fallback), kept when they are less than half the full artifact."""
    history = channel_history(repo, channel)[:DELTA_BASES]
    if fallback is not None:
        history += channel_history(repo, fallback)[:DELTA_BASES]
    result = {}
    for name, artifact in artifacts.items():
        new = repo.read_target(TargetFile(artifact.length, {"sha256": artifact.sha256},
                                          artifact.target))
        bases: dict[str, ComponentArtifact] = {}
        for cf in history:
            base = cf.components.get(name)
            if base and base.sha256 != artifact.sha256 and is_newer(version, base.version):
                bases.setdefault(base.sha256, base)
        deltas, files = [], {}
        for base in bases.values():
            built = build_delta(repo.read_target(TargetFile(
                base.length, {"sha256": base.sha256}, base.target)), new, budget_seconds)
            if built is None or len(built.data) >= artifact.length // 2:
                continue
            path = f"deltas/{name}/{version}/from-{base.version}.gldelta"
            files[path] = built.data
            deltas.append((base, path, built))
        infos = add_artifacts(repo, files) if files else {}
        result[name] = artifact.model_copy(update={"deltas": [
            Delta(from_version=base.version, base_sha256=base.sha256, target=path,
                  sha256=infos[path].hashes["sha256"], length=infos[path].length,
                  method=built.method)
            for base, path, built in deltas]})
    return result


def publish(
    repo: FileRepository,
    channel: str,
    version: str,
    components: dict[str, Path],
    fallback: str | None = None,
    allow_older: bool = False,
    rollout_percent: int | None = None,
    deltas: bool = True,
) -> ChannelFile:
    _require(repo)
    check_channel_name(channel)
    parse_version(version)
    if not components:
        raise ReleaseError("nothing to publish: give at least one --component NAME=PATH")
    for name, path in components.items():
        check_component_name(name)
        if not path.is_file():
            raise ReleaseError(f"component {name}: {path} is not a file")
    current = current_channel_file(repo, channel)
    if current and not allow_older and not is_newer(version, current.release):
        raise ReleaseError(
            f"channel {channel!r} carries {current.release}; {version} is not newer "
            "(pass --allow-older to publish it anyway)"
        )
    if fallback is None:
        fallback = current.fallback if current else (None if channel == "stable" else "stable")
    if fallback is not None:
        check_channel_name(fallback)

    paths = {name: artifact_target(name, version, path.name) for name, path in components.items()}
    infos = add_artifacts(repo, {paths[name]: path for name, path in components.items()})
    artifacts = {
        name: ComponentArtifact(version=version, target=paths[name],
                                sha256=infos[paths[name]].hashes["sha256"],
                                length=infos[paths[name]].length)
        for name in sorted(components)
    }
    if deltas:
        artifacts = build_deltas(repo, channel, fallback, version, artifacts)
    ensure_channel_role(repo, channel)

    channel_file = ChannelFile(
        channel=channel,
        release=version,
        components=artifacts,
        fallback=fallback,
        revoked=list(current.revoked) if current else [],
        rollout=None if rollout_percent in (None, 100) else Rollout(percent=rollout_percent),
        published_at=ChannelFile.now(),
    )
    write_channel_file(repo, channel_file)
    return channel_file


class RoleStatus(BaseModel):
    role: str
    version: int
    expires: datetime
    threshold: int
    keys: int


class ChannelStatus(BaseModel):
    channel: str
    release: str
    rollout: str
    promoted_from: str | None
    fallback: str | None
    published_at: datetime
    components: dict[str, str]
    revoked: list[str]


class RepositoryStatus(BaseModel):
    repository: str
    channels: list[ChannelStatus]
    roles: list[RoleStatus]
    awaiting_signatures: list[str]


def repository_status(repo: FileRepository) -> RepositoryStatus:
    _require(repo)
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
