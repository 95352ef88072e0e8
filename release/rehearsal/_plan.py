"""What a rehearsal runs: the candidate (archives given, or a release the repository carries),
the *from* releases (given, the collector's census of the channel, or the channel's recent
releases and the other channels' current ones), and the paths: each *from* release and an
empty root, under each machine layer, online and from a bundle when one is given."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from greenlight.channels import UPDATER_PREFIX, ChannelFile, canonical_version, is_newer
from greenlight.release._errors import NotFound, UsageError
from greenlight.release.rehearsal._scenarios import Layer
from greenlight.release.repository._channels import channel_history, channels, current_channel_file
from greenlight.release.repository._deltas import DELTA_BASES
from greenlight.release.repository._repository import FileRepository

__all__ = ["RECENT", "PathSpec", "Release", "candidate_from_archives", "default_froms",
           "delta_bases", "find_release", "path_specs", "product_channels"]

RECENT = 3
"""the channel's releases a rehearsal starts from by default, newest first"""


@dataclass(frozen=True)
class Release:
    """A release as a rehearsal installs it: its archives and manifest, where it was found."""

    version: str
    components: dict[str, Path]
    sha256: dict[str, str]
    manifest: Path | None
    manifest_sha256: str | None
    keep_top_folder: bool
    source: str
    layout: dict[str, str | None]
    """each component's top folder left out when it is unpacked (none: kept as it is)"""
    deltas_from: tuple[str, ...] | None = None
    """published: the releases its entry has patches from; none: not published yet"""

    def identity(self) -> dict[str, str]:
        from greenlight.release.rehearsal._record import identity_of

        return identity_of(self.sha256, self.manifest_sha256, self.layout)


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _from_entry(repo: FileRepository, cf: ChannelFile, source: str) -> Release:
    paths = {name: repo.stored_target_path(c.target, c.sha256)
             for name, c in cf.components.items()}
    manifest = (repo.stored_target_path(cf.manifest.target, cf.manifest.sha256)
                if cf.manifest else None)
    missing = [str(p) for p in [*paths.values(), manifest] if p is not None and not p.exists()]
    if missing:
        raise NotFound(f"{cf.release}: its archive {missing[0]} is no longer in the repository")
    return Release(
        version=cf.release, components=paths,
        sha256={n: c.sha256 for n, c in cf.components.items()}, manifest=manifest,
        manifest_sha256=cf.manifest.sha256 if cf.manifest else None,
        keep_top_folder=all(c.strip_prefix is None for c in cf.components.values()),
        source=source, layout={n: c.strip_prefix for n, c in cf.components.items()},
        deltas_from=tuple(sorted({d.from_version for c in cf.components.values()
                                  for d in c.deltas})))


def product_channels(repo: FileRepository) -> list[str]:
    return [c for c in channels(repo) if not c.startswith(UPDATER_PREFIX)]


def find_release(repo: FileRepository, version: str, prefer: str) -> Release:
    """`version` as the repository carries or carried it, on `prefer` first, then on any
    product channel.

    Raises:
        NotFound: no channel ever carried it.
        UsageError: it is yanked on `prefer` (machines are moved off it).
    """
    version = canonical_version(version)
    for name in [prefer, *(c for c in product_channels(repo) if c != prefer)]:
        for cf in channel_history(repo, name):
            if cf.release == version:
                current = current_channel_file(repo, name)
                if name == prefer and current is not None and current.is_revoked(version):
                    raise UsageError(f"{version} is yanked on {prefer}: no machine there "
                                     "stays on it to rehearse from")
                return _from_entry(repo, cf, f"carried by {name}")
    raise NotFound(f"no channel of this repository carries or carried {version}")


def candidate_from_archives(version: str, components: dict[str, Path],
                            manifest: Path | None, keep_top_folder: bool) -> Release:
    """A candidate no machine can see yet: its archives and manifest as they will be
    published.

    Raises:
        NotFound: a file is missing. UsageError: a bad version.
    """
    version = canonical_version(version)
    for name, path in components.items():
        if not path.is_file():
            raise NotFound(f"component {name}: {path} is not a file")
    if manifest is not None and not manifest.is_file():
        raise NotFound(f"--manifest {manifest}: no such file")
    from greenlight.channels import ArchiveError, top_folder

    layout: dict[str, str | None] = {}
    for name, path in components.items():
        try:
            layout[name] = None if keep_top_folder else top_folder(path)
        except ArchiveError as e:
            raise UsageError(f"component {name}: {e}") from None
    return Release(version=version, components=dict(components),
                   sha256={n: _digest(p) for n, p in components.items()}, manifest=manifest,
                   manifest_sha256=_digest(manifest) if manifest else None,
                   keep_top_folder=keep_top_folder, source="archives given", layout=layout)


def default_froms(repo: FileRepository, channel: str, candidate: str,
                  census: dict[str, int] | None) -> tuple[list[str], str]:
    """The *from* releases to rehearse by default, oldest first, and where they came from:
    every release the collector's census says machines on `channel` run, else the channel's
    recent releases and the other product channels' current ones (none yanked), each older
    than the candidate."""
    def older(v: str) -> bool:
        return is_newer(candidate, v)

    if census:
        found = [v for v in census if older(v)]
        return _oldest_first(found), "the releases machines on the channel run (collector)"
    current = current_channel_file(repo, channel)
    found = []
    for cf in channel_history(repo, channel):
        if len(found) >= RECENT:
            break
        if cf.release not in found and older(cf.release) and \
                not (current and current.is_revoked(cf.release)):
            found.append(cf.release)
    for name in product_channels(repo):
        other = current_channel_file(repo, name)
        if name != channel and other is not None and older(other.release) and \
                not other.is_revoked(other.release) and other.release not in found:
            found.append(other.release)
    return _oldest_first(found), "the channel's recent releases and the others' current ones"


def _oldest_first(versions: list[str]) -> list[str]:
    from greenlight.channels import sort_versions

    return sort_versions(list(dict.fromkeys(versions)))


def delta_bases(repo: FileRepository, channel: str) -> set[str]:
    """The releases a publish on `channel` now builds patches from (`build_deltas`)."""
    current = current_channel_file(repo, channel)
    history = channel_history(repo, channel)[:DELTA_BASES]
    if current is not None and current.fallback is not None:
        history += channel_history(repo, current.fallback)[:DELTA_BASES]
    return {cf.release for cf in history}


@dataclass(frozen=True)
class PathSpec:
    kind: Literal["upgrade", "fresh", "bundle-upgrade", "bundle-fresh", "installer-upgrade",
                  "installer-fresh"]
    from_release: Release | None
    layer: Layer
    delta: bool  # a machine on the from release would be offered a patch


def path_specs(froms: list[Release], candidate: Release, layers: list[Layer],
               bases: set[str], bundle: bool, installer: bool = False) -> list[PathSpec]:
    """Every path: each from release then the empty root, under each layer; with a bundle,
    the same again through `updater sideload`, and with an installer, through it."""
    kinds: list[tuple[Literal["upgrade", "bundle-upgrade", "installer-upgrade"],
                      Literal["fresh", "bundle-fresh", "installer-fresh"]]]
    kinds = [("upgrade", "fresh")]
    if bundle:
        kinds.append(("bundle-upgrade", "bundle-fresh"))
    if installer:
        kinds.append(("installer-upgrade", "installer-fresh"))
    specs = []
    for upgrade, fresh in kinds:
        for layer in layers:
            for f in froms:
                delta = (f.version in candidate.deltas_from
                         if candidate.deltas_from is not None else f.version in bases)
                specs.append(PathSpec(upgrade, f, layer, delta and upgrade == "upgrade"))
            specs.append(PathSpec(fresh, None, layer, False))
    return specs
