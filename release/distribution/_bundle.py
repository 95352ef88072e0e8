"""Offline bundles: one archive with what a client needs to verify and install a channel's
release without a network.

A bundle is a small repository tree in a tar file:

    bundle.json                      format, channel, release, created, expires (unsigned: a hint)
    metadata/1.root.json ...         the whole root chain, so a client with any older root follows
    metadata/timestamp.json, metadata/<v>.snapshot.json, metadata/<v>.targets.json,
    metadata/<v>.channel-<c>.json    the versions the snapshot names, with artifacts.json and
    metadata/<v>.bin-xx.json         the bins that hold the release's artifacts (and those of
                                     the release before a staged rollout, when there is one)
    targets/...                      the channel file and the release's artifacts (consistent names)

Offline sites may install long after the bundle is made, so the pipeline picks the window: the
roles a client checks are re-signed to expire no sooner than `expires`, and those new versions
are published in the repository too, so online and offline clients never see versions move
backwards. The client never ignores expiry.
"""

import io
import tarfile
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from tuf.api.metadata import Snapshot, Targets, Timestamp

from greenlight.channels import (
    BUNDLE_FORMAT,
    BUNDLE_MANIFEST,
    BundleManifest,
    Record,
    channel_role,
    channel_target,
    files_target,
    now,
    rollout_role,
    rollout_target,
    updater_channel,
)
from greenlight.release._errors import NotFound, ReleaseError
from greenlight.release.repository._channels import current_channel_file
from greenlight.release.repository._repository import ARTIFACTS, FileRepository, all_or_nothing

__all__ = ["BundleResult", "build_bundle"]


class BundleResult(Record):
    """What `release bundle` wrote."""

    format: str
    channel: str
    release: str
    created: datetime
    expires: datetime
    file: str
    bytes: int



@all_or_nothing
def build_bundle(repo: FileRepository, channel: str, out: Path,
                 expires: timedelta = timedelta(days=30),
                 with_updater: bool = False) -> BundleResult:
    """The bundle of `channel`'s release; `with_updater`: with the Greenlight release of
    `greenlight-<channel>` too, which a sideload qualifies and activates first.

    Raises:
        NotFound: no such repository, or no release on the channel (or its updater channel).
        ReleaseError: the root expires before the bundle would.
    """
    if not repo.exists():
        raise NotFound(f"{repo.path}: no repository here")
    channel_file = current_channel_file(repo, channel)
    if channel_file is None:
        raise NotFound(f"channel {channel!r} has no release in {repo.path}")
    updater = current_channel_file(repo, updater_channel(channel)) if with_updater else None
    if with_updater and updater is None:
        raise NotFound(f"channel {updater_channel(channel)!r} carries no Greenlight release "
                       f"in {repo.path}: publish one with `release publish-updater`")
    until = now() + expires
    role = channel_role(channel)
    roles = [role] + ([channel_role(updater_channel(channel))] if updater else [])
    if repo.root().expires < until:
        raise ReleaseError(
            f"root expires {repo.root().expires:%Y-%m-%d}, before the bundle would "
            f"({until:%Y-%m-%d}); rotate or re-sign root first, or choose a shorter --expires")
    # Re-sign what expires too soon; snapshot and timestamp always (new versions, same content).
    for name in (*roles, Targets.type):
        if repo.open(name).signed.expires < until:
            repo.expiry_floor[name] = until
            repo.close(name, repo.open(name))
    repo.expiry_floor.update({Snapshot.type: until, Timestamp.type: until})
    repo.do_snapshot(force=True)
    repo.do_timestamp(force=True)
    repo.expiry_floor.clear()

    snapshot = repo.snapshot()
    members: list[tuple[Path, str]] = []
    for version in range(1, repo.root().version + 1):
        members.append((repo.metadata_dir / f"{version}.root.json",
                        f"metadata/{version}.root.json"))
    members.append((repo.metadata_dir / "timestamp.json", "metadata/timestamp.json"))
    members.append((repo.metadata_dir / f"{snapshot.version}.snapshot.json",
                    f"metadata/{snapshot.version}.snapshot.json"))
    # The release, and the one before its staged rollout: what a fresh machine the rollout
    # leaves out installs.
    previous = channel_file.rollout.previous if channel_file.rollout is not None else None
    manifests = [m for m in (channel_file.manifest, previous.manifest if previous else None)
                 if m is not None]
    carried = [*channel_file.components.values(),
               *(previous.components.values() if previous is not None else ()), *manifests,
               *(updater.components.values() if updater is not None else ())]
    # Each carried archive's file list, where it was published with one (`updater verify`).
    lists = {}
    for components in (channel_file.components, previous.components if previous else {}):
        for name, a in components.items():
            path = files_target(name, a.version, a.sha256)
            listed = repo.targets(repo.bin_for(path)).targets.get(path)
            if listed is not None:
                lists[path] = listed.hashes["sha256"]
    bins = {repo.bin_for(a.target) for a in carried} | {repo.bin_for(p) for p in lists}
    # A planned rollout's online state travels too, so a sideload obeys the same step.
    online = rollout_role(channel)
    state = (repo.targets(online).targets.get(rollout_target(channel))
             if f"{online}.json" in snapshot.meta else None)
    for name in (Targets.type, ARTIFACTS, *roles, *sorted(bins),
                 *([online] if f"{online}.json" in snapshot.meta else [])):
        version = snapshot.meta[f"{name}.json"].version
        members.append((repo.metadata_dir / f"{version}.{name}.json",
                        f"metadata/{version}.{name}.json"))
    entries = [channel] + ([updater_channel(channel)] if updater else [])
    paths = [*map(channel_target, entries), *dict.fromkeys(a.target for a in carried)]
    sha = {channel_target(c): repo.targets(channel_role(c)).targets[channel_target(c)]
           .hashes["sha256"] for c in entries}
    sha.update({a.target: a.sha256 for a in carried})
    paths += list(lists)
    sha.update(lists)
    if state is not None:
        paths.append(state.path)
        sha[state.path] = state.hashes["sha256"]
    for target in paths:
        stored = repo.stored_target_path(target, sha[target])
        members.append((stored, f"targets/{stored.relative_to(repo.targets_dir)}"))

    manifest = BundleManifest(channel, channel_file.release, now(), until,
                              updater.release if updater is not None else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with open(fd, "wb") as raw, \
                tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            data = manifest.to_json()
            info = tarfile.TarInfo(BUNDLE_MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o644, int(manifest.created.timestamp())
            tar.addfile(info, io.BytesIO(data))
            for source, name in members:
                tar.add(source, arcname=name, recursive=False)
        Path(tmp).replace(out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return BundleResult(format=BUNDLE_FORMAT, channel=channel, release=channel_file.release,
                        created=manifest.created, expires=until, file=str(out),
                        bytes=out.stat().st_size)
