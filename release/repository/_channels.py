"""The channels of a repository: reading and writing channel files as targets of each
channel's delegated role, storing artifacts in their hashed bins, and a channel's history."""

import json
from collections.abc import Mapping
from pathlib import Path

from tuf.api.metadata import DelegatedRole, Delegations, Metadata, TargetFile, Targets

from greenlight.channels import (
    VERSION,
    ChannelFile,
    channel_role,
    channel_target,
    check_channel_name,
    required_version,
    unknown_fields,
)
from greenlight.release._errors import Conflict, NotFound, UsageError
from greenlight.release.repository._repository import FileRepository

__all__ = ["add_artifacts", "channel_history", "channels", "check_known", "checked_fallback",
           "current_channel_file", "delegate", "ensure_channel_role", "require",
           "write_channel_file"]


def require(repo: FileRepository) -> None:
    if not repo.exists():
        raise NotFound(f"{repo.path}: no repository here (run 'release init {repo.path}')")


def current_channel_file(repo: FileRepository, channel: str) -> ChannelFile | None:
    role = channel_role(channel)
    if role not in repo.targets_roles():
        return None
    info = repo.targets(role).targets.get(channel_target(channel))
    if info is None:
        return None
    return ChannelFile.from_json(repo.read_target(info), f"channel file of {channel!r}")


def checked_fallback(repo: FileRepository, channel: str, fallback: str | None,
                     current: ChannelFile | None) -> str | None:
    """The fallback `channel`'s file will name: `fallback` as given, else what the channel
    named before, else `stable`; an inherited or default fallback that is not published is
    left out, a given one is refused.

    Raises:
        UsageError: not a channel name, the channel itself, or a cycle of fallbacks.
        NotFound: no channel of that name is published.
    """
    given = fallback is not None
    if fallback is None:  # inherited or the default: kept only while it is published
        fallback = current.fallback if current else None
        if fallback is None and channel != "stable":
            fallback = "stable"
        if fallback is None or fallback == channel or \
                current_channel_file(repo, fallback) is None:
            return None
    option = f"--fallback {fallback}" if given else f"fallback {fallback!r}"
    try:
        check_channel_name(fallback)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None
    if fallback == channel:
        raise UsageError(f"{option}: channel {channel!r} cannot fall back to itself")
    seen = [channel, fallback]
    while True:
        found = current_channel_file(repo, seen[-1])
        if found is None:
            if seen[-1] == fallback:
                published = ", ".join(channels(repo)) or "none"
                raise NotFound(f"{option}: no channel {fallback!r} is published here "
                               f"(published: {published})")
            return fallback  # further down the chain: that channel's own business
        if found.fallback is None:
            return fallback
        if found.fallback in seen:
            raise UsageError(f"{option}: a cycle of fallbacks: "
                             f"{' -> '.join([*seen, found.fallback])}")
        seen.append(found.fallback)


def channels(repo: FileRepository) -> list[str]:
    return sorted(r.removeprefix("channel-") for r in repo.targets_roles()
                  if r.startswith("channel-"))


def delegate(repo: FileRepository, role: str, path: str) -> bool:
    """Delegate `role` from targets, with a new key of its own, for the one target `path`
    (terminating). Returns False when it was delegated already."""
    if role in repo.targets_roles():
        return False
    with repo.edit_targets() as targets:
        if targets.delegations is None:
            targets.delegations = Delegations(keys={}, roles={})
        assert targets.delegations.roles is not None
        targets.delegations.roles[role] = DelegatedRole(
            name=role, keyids=[], threshold=1, terminating=True, paths=[path])
        targets.add_key(repo.keys.generate(role).public_key, role)
    return True


def ensure_channel_role(repo: FileRepository, channel: str) -> None:
    """Delegate `channel-<name>` (its own new key) on the channel's first publish."""
    delegate(repo, channel_role(channel), channel_target(channel))


def add_artifacts(repo: FileRepository,
                  files: Mapping[str, Path | bytes]) -> dict[str, TargetFile]:
    """Store files (or bytes) as targets in their hashed bins: {target path: source} -> infos.

    A target path names one set of bytes for good: publishing other bytes under a path
    already signed (another channel's "1.2" under the same name, say) is refused, since
    machines that installed the first would no longer verify it."""
    infos = {path: repo.add_target_bytes(path, source) if isinstance(source, bytes)
             else repo.add_target_file(path, source) for path, source in files.items()}
    by_bin: dict[str, list[TargetFile]] = {}
    for path, info in infos.items():
        by_bin.setdefault(repo.bin_for(path), []).append(info)
    for name, entries in sorted(by_bin.items()):
        with repo.edit_targets(name) as bin_targets:
            for info in entries:
                old = bin_targets.targets.get(info.path)
                if old is not None and (old.hashes.get("sha256") != info.hashes.get("sha256")
                                        or old.length != info.length):
                    raise Conflict(
                        f"target {info.path} already holds other bytes (sha256 "
                        f"{old.hashes.get('sha256', '?')[:12]}...); publish these under "
                        "another version or file name")
                bin_targets.targets[info.path] = info
    return infos


def check_known(entry: dict[str, object], channel: str) -> None:
    """An entry is signed anew only by a Greenlight that knows all of it: an older one would
    drop, or sign under too old a `requires`, what a newer one wrote.

    Raises:
        Conflict: the entry has a field this version does not know.
    """
    unknown = unknown_fields(entry)
    if unknown:
        raise Conflict(f"channel {channel!r}: its entry has {unknown[0]}, a field Greenlight "
                       f"{VERSION} does not know (a newer release tool wrote it): use that "
                       "version's release tool")


def write_channel_file(repo: FileRepository, channel_file: ChannelFile) -> ChannelFile:
    """Sign `channel_file` as the channel's target and publish a new snapshot and timestamp,
    with the oldest Greenlight that can act on it as its `requires` (channels/_requires.py).
    Returns the entry as signed.

    Raises:
        Conflict: the entry has a field this version does not know (`check_known`).
    """
    entry = json.loads(channel_file.to_json())
    check_known(entry, channel_file.channel)
    channel_file = channel_file.model_copy(update={"requires": required_version(entry)})
    info = repo.add_target_bytes(channel_target(channel_file.channel), channel_file.to_json())
    with repo.edit_targets(channel_role(channel_file.channel)) as role_targets:
        role_targets.targets[info.path] = info
    repo.commit()
    return channel_file


def channel_history(repo: FileRepository, channel: str) -> list[ChannelFile]:
    """Every channel file the channel has carried, newest first (from its role's versions)."""
    role = channel_role(channel)
    files: list[ChannelFile] = []
    seen: set[str] = set()
    versions = sorted((int(p.name.split(".", 1)[0]) for p in
                       repo.metadata_dir.glob(f"*.{role}.json")), reverse=True)
    for version in versions:
        path = repo.metadata_dir / f"{version}.{role}.json"
        info = Metadata[Targets].from_bytes(path.read_bytes()).signed.targets.get(
            channel_target(channel))
        if info is None or info.hashes["sha256"] in seen:
            continue
        seen.add(info.hashes["sha256"])
        path = repo.stored_target_path(info.path, info.hashes["sha256"])
        if path.exists():
            files.append(ChannelFile.from_json(path.read_bytes()))
    return files
