"""Publishing a release to a channel.

A publish adds each component archive as a target (in its hashed bin), builds deltas from
recent releases, and writes the channel file as a target of the channel's own delegated role
(created, with a key of its own, on the channel's first publish), then a new snapshot and
timestamp.
"""

from collections.abc import Callable
from pathlib import Path

from greenlight.channels import (
    ChannelFile,
    ComponentArtifact,
    ManifestRef,
    PreviousRelease,
    Rollout,
    RolloutPlan,
    artifact_target,
    canonical_version,
    check_channel_name,
    check_component_name,
    is_newer,
    manifest_target,
    now,
)
from greenlight.release._errors import Conflict, NotFound, ReleaseError, UsageError
from greenlight.release.repository._channels import (
    add_artifacts,
    checked_fallback,
    checked_requires,
    current_channel_file,
    ensure_channel_role,
    raised_requires,
    require,
    signed_requires,
    write_channel_file,
)
from greenlight.release.repository._deltas import build_deltas
from greenlight.release.repository._repository import FileRepository, all_or_nothing

__all__ = ["add_file_lists", "attach_manifest", "publish"]


def _before_rollout(current: ChannelFile | None) -> PreviousRelease | None:
    """What installations outside a new staged rollout get when they have nothing yet: the
    channel's release, when it reached everyone, or what it kept from its own rollout."""
    if current is None:
        return None
    if current.rollout is None:
        return PreviousRelease(release=current.release, components=current.components,
                               manifest=current.manifest)
    return current.rollout.previous


def _add_manifest(repo: FileRepository, version: str, path: Path) -> ManifestRef:
    """The release's product manifest, loaded as a machine will load it, as a target.

    Raises:
        NotFound: no such file. UsageError: it does not load (one line, the first problem).
    """
    from greenlight.channels import ConfigError, load_manifest

    try:
        data = path.read_bytes()
        load_manifest(data.decode(), str(path))
    except FileNotFoundError:
        raise NotFound(f"--manifest {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--manifest {path}: cannot read: {e}") from None
    except ConfigError as e:
        raise UsageError(f"--manifest: {e}") from None
    return _manifest_ref(repo, version, data)


def _manifest_ref(repo: FileRepository, version: str, data: bytes) -> ManifestRef:
    import hashlib

    target = manifest_target(version, hashlib.sha256(data).hexdigest())
    info = add_artifacts(repo, {target: data})[target]
    return ManifestRef(target=target, sha256=info.hashes["sha256"], length=info.length)


def add_file_lists(repo: FileRepository,
                   components: dict[str, tuple[Path, ComponentArtifact]]) -> None:
    """Each component's file list, as a target beside its archive: the archive unpacked as a
    machine unpacks it (the updater's own `extract`, its top folder stripped the same way),
    and the tree listed. Its bytes depend on the archive's alone, so the same archive
    published on another channel lists the same.

    Raises:
        ReleaseError: an archive a machine would refuse.
    """
    import tempfile

    from greenlight.channels import ArchiveError, FileList, extract, files_target, list_tree

    lists: dict[str, bytes] = {}
    for name, (path, artifact) in sorted(components.items()):
        with tempfile.TemporaryDirectory(prefix=".files-", dir=repo.path) as work:
            try:
                extract(path, Path(work) / "tree", strip=artifact.strip_prefix,
                        durable=False)
            except ArchiveError as e:
                raise ReleaseError(f"component {name}: {e}") from None
            listed = FileList(artifact=artifact.sha256,
                              entries=list_tree(Path(work) / "tree"))
        lists[files_target(name, artifact.version, artifact.sha256)] = (
            listed.model_dump_json(by_alias=True).encode())
    add_artifacts(repo, lists)


@all_or_nothing
def publish(
    repo: FileRepository,
    channel: str,
    version: str,
    components: dict[str, Path],
    fallback: str | None = None,
    allow_older: bool = False,
    rollout_percent: int | None = None,
    deltas: bool = True,
    keep_top_folder: bool = False,
    rollout_plan: RolloutPlan | None = None,
    manifest: Path | None = None,
    requires: str | None = None,
    gate: Callable[[ChannelFile], None] | None = None,
) -> ChannelFile:
    """Publish `version` on `channel`. An archive whose members all sit under one top folder
    (`core/...`, `core-1.2.3/...`) is recorded with that folder as its `strip_prefix`, so it
    unpacks into `releases/<key>/<component>/` without it; `keep_top_folder` keeps it.
    With `rollout_plan`, the release rolls out by the plan's steps, moved along (or halted)
    by the online `rollout-<channel>` role; its soak counts from now. With `manifest`, the
    release carries its product manifest (how it runs and is checked), checked by the
    machines' own loader before anything is signed, and published as a target of its own.
    With `requires`, the entry's signed `requires` is raised to it (a release that relies on
    a behaviour of that Greenlight), never lowered below what its fields need. `gate` is shown
    the entry as it will be signed, `requires` worked out, before anything is: it refuses the
    publish by raising (a `ReleaseError`), and nothing is changed.

    Raises:
        InvalidValue: not a channel name, a component name or a version.
        NotFound: no repository, a component or manifest file missing, or a fallback channel
            that is not published.
        UsageError: nothing to publish, both a rollout and a plan, a bad fallback or
            `requires`, or a manifest that does not load.
        Conflict: not newer than the channel's release (without `allow_older`), a target path
            that holds other bytes, or a role with a version awaiting signatures.
        KeysError: no private key for a role that must sign.
        ReleaseError: an archive a machine would refuse, or what `gate` raises.
    """
    from greenlight.channels import ArchiveError, top_folder

    require(repo)
    check_channel_name(channel)
    canonical_version(version)
    if requires is not None:
        checked_requires(requires, repo, channel)
    if not components:
        raise UsageError("nothing to publish: give at least one --component NAME=PATH")
    for name, path in components.items():
        check_component_name(name)
        if not path.is_file():
            raise NotFound(f"component {name}: {path} is not a file")
    current = current_channel_file(repo, channel)
    if current and not allow_older and not is_newer(version, current.release):
        raise Conflict(
            f"channel {channel!r} carries {current.release}; {version} is not newer "
            "(pass --allow-older to publish it anyway)"
        )
    fallback = checked_fallback(repo, channel, fallback, current)
    manifest_ref = None if manifest is None else _add_manifest(repo, version, manifest)

    paths = {name: artifact_target(name, version, path.name) for name, path in components.items()}
    infos = add_artifacts(repo, {paths[name]: path for name, path in components.items()})
    prefixes: dict[str, str | None] = {}
    for name, path in components.items():
        try:
            prefixes[name] = None if keep_top_folder else top_folder(path)
        except ArchiveError as e:
            raise ReleaseError(f"component {name}: {e}") from None
    artifacts = {
        name: ComponentArtifact(version=version, target=paths[name],
                                sha256=infos[paths[name]].hashes["sha256"],
                                length=infos[paths[name]].length,
                                strip_prefix=prefixes[name])
        for name in sorted(components)
    }
    add_file_lists(repo, {name: (path, artifacts[name]) for name, path in components.items()})
    if deltas:
        artifacts = build_deltas(repo, channel, fallback, version, artifacts)
    ensure_channel_role(repo, channel)
    previous = _before_rollout(current)
    rollout = (None if rollout_percent in (None, 100) else
               Rollout(percent=rollout_percent, previous=previous))
    if rollout_plan is not None:
        if rollout_percent is not None:
            raise UsageError("give either --rollout or --rollout-plan, not both")
        from greenlight.release.repository._rollouts import ensure_rollout_role

        ensure_rollout_role(repo, channel)
        rollout = Rollout(percent=rollout_plan.steps[0], previous=previous,
                          plan=rollout_plan.model_copy(update={"started_at": now()}))

    channel_file = ChannelFile(
        channel=channel,
        release=version,
        components=artifacts,
        manifest=manifest_ref,
        fallback=fallback,
        revoked=list(current.revoked) if current else [],
        rollout=rollout,
        published_at=now(),
    )
    if gate is not None:
        gate(channel_file.model_copy(update={"requires": signed_requires(channel_file,
                                                                         requires)}))
    return write_channel_file(repo, channel_file, requires)


@all_or_nothing
def attach_manifest(repo: FileRepository, channel: str, manifest: str,
                    source: str) -> tuple[ChannelFile, bool]:
    """Make `manifest` (a loaded manifest's text) the product manifest of `channel`'s release,
    published without one: the channel file is signed again with the same release and
    components and the manifest's reference, so the release's key changes and machines take
    the release with its manifest at their next check. Returns the channel file and whether
    it changed (False: the release already carries this very manifest).

    Raises:
        NotFound: the channel has no release. Conflict: it carries another manifest, or a
        staged rollout is under way (its machines are counted by the release's key).
    """
    import hashlib

    from greenlight.channels import load_manifest

    require(repo)
    current = current_channel_file(repo, channel)
    if current is None:
        raise NotFound(f"channel {channel!r} has no release")
    data = manifest.encode()
    if current.manifest is not None:
        from tuf.api.metadata import TargetFile

        carried = repo.read_target(TargetFile(current.manifest.length,
                                              {"sha256": current.manifest.sha256},
                                              current.manifest.target))
        if (current.manifest.sha256 == hashlib.sha256(data).hexdigest()
                or load_manifest(carried.decode(), "carried") == load_manifest(manifest, source)):
            return current, False
        raise Conflict(f"{source}: {channel} {current.release} carries another product "
                       "manifest, which the installer installs with it; leave "
                       "--product-config out, or publish a new release with --manifest")
    if current.rollout is not None:
        raise Conflict(f"{source}: {channel} {current.release} is in a staged rollout; a "
                       "manifest would change its release key mid-way: finish or yank the "
                       "rollout, or publish a new release with --manifest")
    ref = _manifest_ref(repo, current.release, data)
    channel_file = current.model_copy(update={"manifest": ref, "published_at": now()})
    return write_channel_file(repo, channel_file, raised_requires(current)), True
