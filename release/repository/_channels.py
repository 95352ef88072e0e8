"""The channels of a repository: reading and writing channel files as targets of each
channel's delegated role, storing artifacts in their hashed bins, and a channel's history."""

import json
from collections.abc import Mapping
from pathlib import Path

from tuf.api.metadata import DelegatedRole, Delegations, Metadata, TargetFile, Targets

from greenlight.channels import (
    UPDATER_PREFIX,
    VERSION,
    ChannelFile,
    InvalidValue,
    canonical_version,
    channel_role,
    channel_target,
    check_channel_name,
    is_newer,
    known_fields,
    manifest_required_version,
    required_version,
    unknown_fields,
    updater_channel,
)
from greenlight.release._errors import Conflict, NotFound, UsageError
from greenlight.release.repository._repository import FileRepository

__all__ = ["add_artifacts", "channel_history", "channels", "check_known", "checked_fallback",
           "checked_requires", "current_channel_file", "delegate", "ensure_channel_role",
           "raised_requires", "require", "signed_requires", "write_channel_file"]


def require(repo: FileRepository) -> None:
    """Refuse a folder that holds no repository.

    Raises:
        NotFound: no repository at `repo.path`.
    """
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
    named before, else `stable` (none for an updater channel, `greenlight-*`); an inherited
    or default fallback that is not published is left out, a given one is refused.

    Raises:
        UsageError: not a channel name, the channel itself, or a cycle of fallbacks.
        NotFound: no channel of that name is published.
    """
    given = fallback is not None
    if fallback is None:  # inherited or the default: kept only while it is published
        fallback = current.fallback if current else None
        if fallback is None and channel != "stable" and \
                not channel.startswith(UPDATER_PREFIX):  # an updater release has no fallback
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
    machines that installed the first would no longer verify it.

    Raises:
        Conflict: a target path already holds other bytes, or a bin has a version awaiting
            signatures.
        KeysError: no private key for a bin.
        ReleaseError: the repository has no hashed bins (not made by `release init`).
    """
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


def checked_requires(given: str, repo: FileRepository | None = None,
                     channel: str | None = None) -> str:
    """A `requires` the vendor gives (`release publish --requires`): a version, written the
    one way. One newer than this release tool's Greenlight is taken only when the channel's
    machines have that Greenlight to move to: `greenlight-<channel>` in `repo` carries a
    release at least that new (`release publish-updater`). Without `repo`, only the form is
    checked.

    Raises:
        UsageError: not a version, not written the one way, or newer than this Greenlight
            with no such updater release published.
    """
    try:
        canonical_version(given)
    except InvalidValue as e:
        raise UsageError(f"--requires {given!r}: {e}") from None
    if repo is None or channel is None or not is_newer(given, VERSION):
        return given
    updater = current_channel_file(repo, updater_channel(channel))
    if updater is not None and not is_newer(given, updater.release) and \
            not updater.is_revoked(updater.release):
        return given
    raise UsageError(f"--requires {given}: newer than this release tool's Greenlight "
                     f"({VERSION}), and {updater_channel(channel)} carries no Greenlight >= "
                     f"{given}: publish it first (`release publish-updater`), or use the "
                     "release tool of that version")


def signed_requires(channel_file: ChannelFile, floor: str | None = None) -> str | None:
    """The `requires` an entry is signed with: the oldest Greenlight that knows every field
    it uses (channels/_requires.py), raised to `floor` when that is newer (a vendor's
    `--requires`, or one kept by `raised_requires`): raised, never lowered. None when the
    first version's fields suffice and nothing raises it (that version refuses the field).

    Raises:
        Conflict: the entry has a field this version does not know (`check_known`).
    """
    entry = json.loads(channel_file.to_json())
    check_known(entry, channel_file.channel)
    computed = required_version(entry)
    first = next(iter(known_fields()))
    if floor is None or not is_newer(floor, first):
        return computed
    return floor if computed is None or is_newer(floor, computed) else computed


def raised_requires(channel_file: ChannelFile) -> str | None:
    """The `requires` a signed entry carries above what its fields need (a vendor raised it:
    `release publish --requires`), to keep when its release is signed anew (a rollout, a
    yank back to it, a promotion, a manifest attached); None when it was computed."""
    if channel_file.requires is None:
        return None
    try:
        computed = required_version(json.loads(channel_file.to_json()))
    except ValueError:  # a field no version knows: keep what it says
        return channel_file.requires
    return channel_file.requires if is_newer(channel_file.requires, computed) else None


def _manifest_requires(repo: FileRepository, channel_file: ChannelFile) -> str | None:
    """The oldest Greenlight that knows every key of the entry's product manifest (read
    strictly by machines: a key newer than the reader stops it), if it carries one."""
    import tomllib

    ref = channel_file.manifest
    if ref is None:
        return None
    try:
        text = repo.stored_target_path(ref.target, ref.sha256).read_text()
        return manifest_required_version(tomllib.loads(text))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise NotFound(f"the manifest {ref.target} of {channel_file.channel} "
                       f"{channel_file.release} cannot be read: {e}") from None
    except ValueError as e:
        raise Conflict(f"{channel_file.channel} {channel_file.release}: {e}; this release "
                       "tool is older than the manifest") from None


def write_channel_file(repo: FileRepository, channel_file: ChannelFile,
                       requires: str | None = None) -> ChannelFile:
    """Sign `channel_file` as the channel's target and publish a new snapshot and timestamp,
    with the oldest Greenlight that can act on it as its `requires` (channels/_requires.py:
    its fields, and its product manifest's keys), raised to `requires` when that is newer
    (`signed_requires`). Returns the entry as signed.

    Raises:
        Conflict: the entry has a field this version does not know (`check_known`).
    """
    floor = requires
    needed = _manifest_requires(repo, channel_file)
    if needed is not None and (floor is None or is_newer(needed, floor)):
        floor = needed
    channel_file = channel_file.model_copy(
        update={"requires": signed_requires(channel_file, floor)})
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
