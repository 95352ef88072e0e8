"""`rehearse`: a candidate on a channel, from every *from* release and from an empty root,
under every machine layer, for real; the matrix kept beside the release."""

import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenlight.channels import now
from greenlight.release._errors import NotFound, UsageError
from greenlight.release.rehearsal._plan import (
    Release,
    candidate_from_archives,
    default_froms,
    delta_bases,
    find_release,
    path_specs,
)
from greenlight.release.rehearsal._record import PathResult, RehearsalRecord, record_path
from greenlight.release.rehearsal._run import netns_available, run_paths
from greenlight.release.rehearsal._scenarios import Scenarios
from greenlight.release.repository._channels import current_channel_file, require
from greenlight.release.repository._repository import FileRepository

__all__ = ["candidate_of", "isolation_of", "rehearse"]


def _declared_values(release: Release) -> dict[str, str]:
    if release.manifest is None:
        return {}
    try:
        values = tomllib.loads(release.manifest.read_text()).get("values", {})
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in values.items()} if isinstance(values, dict) else {}


def candidate_of(repo: FileRepository, channel: str, version: str | None,
                 components: dict[str, Path], manifest: Path | None,
                 keep_top_folder: bool) -> Release:
    """The candidate: archives given (with `version`), else `version` as the repository
    carries it, else the channel's release.

    Raises:
        UsageError: archives without `version`, a manifest without archives, an archive a
            machine would refuse, or a release yanked on `channel`.
        NotFound: the channel carries nothing, a file is missing, or no channel ever carried
            `version`.
        InvalidValue: `version` is not a version written the one way.
    """
    if components:
        if version is None:
            raise UsageError("--component needs --version: the version they will be "
                             "published as")
        return candidate_from_archives(version, components, manifest, keep_top_folder)
    if manifest is not None:
        raise UsageError("--manifest goes with --component: a published release brings its own")
    if version is None:
        current = current_channel_file(repo, channel)
        if current is None:
            raise NotFound(f"channel {channel!r} carries nothing: give --version, or the "
                           "archives with --component")
        version = current.release
    return find_release(repo, version, channel)


def isolation_of(asked: str) -> str:
    """`auto`: a network namespace per path when the machine allows it, else ports.

    Raises:
        UsageError: `netns` asked on a machine that does not allow it.
    """
    if asked == "ports":
        return "ports"
    if netns_available():
        return "netns"
    if asked == "netns":
        raise UsageError("--isolation netns: this machine does not let a process enter a "
                         "network namespace of its own (root on Linux); use --isolation ports")
    return "ports"


def rehearse(repo: FileRepository, channel: str, candidate: Release, *,
             froms: list[str] | None, census: dict[str, Any] | None, scenarios: Scenarios,
             bundle: Path | None, installer: Path | None, isolation: str, jobs: int,
             timeout: float,
             keep: Path | None, said: Callable[[str], None],
             said_path: Callable[[int, int, PathResult], None]) -> RehearsalRecord:
    """Run every path and keep the matrix (REPO/rehearsals/<channel>/<version>.json).

    Raises:
        NotFound, UsageError: a from release or option that does not resolve.
        KeyboardInterrupt: interrupted; every path's processes and folders are gone.
    """
    require(repo)
    if froms:
        chosen = [find_release(repo, v, channel) for v in froms]
        where = "given"
    else:
        versions, where = default_froms(repo, channel, candidate.version,
                                        (census or {}).get("releases"))
        chosen, skipped = [], []
        for v in versions:  # a census names what machines run, not what can be installed
            try:
                chosen.append(find_release(repo, v, channel))
            except (NotFound, UsageError) as e:
                skipped.append(f"{v}: {e}")
        if skipped:
            said(f"not rehearsed from (machines run them, none can install them now): "
                 f"{'; '.join(skipped)}")
    chosen = [f for f in chosen if f.version != candidate.version]
    layers = scenarios.layers()
    specs = path_specs(chosen, candidate, layers, delta_bases(repo, channel), bundle is not None,
                       installer is not None)
    mode = isolation_of(isolation)
    declared = {k: v for r in [*chosen, candidate] for k, v in _declared_values(r).items()}
    ports = scenarios.port_values({**declared,
                                   **{k: "" for layer in layers for k in layer.values}})
    started, began = now(), time.monotonic()
    said(f"rehearsing {candidate.version} ({candidate.source}) on {channel}: "
         f"{len(specs)} paths, from {', '.join(f.version for f in chosen) or 'nothing'} "
         f"({where}) and an empty root, under {len(layers)} layer"
         f"{'' if len(layers) == 1 else 's'} ({', '.join(x.name for x in layers)}); "
         f"{jobs} at a time, "
         + ("each in a network namespace of its own" if mode == "netns"
            else f"each on ports of its own ({', '.join(ports) or 'no *_port values'})"))
    done = [0]

    def one(index: int, result: PathResult) -> None:
        done[0] += 1
        said_path(done[0], len(specs), result)
    results = run_paths(repo.path, repo.keys.folder, channel, candidate, specs,
                        isolation=mode, jobs=jobs, timeout=timeout, ports=ports,
                        bundle=bundle, installer=installer, keep=keep, said=one)
    seen = {k: int(v) for k, v in ((census or {}).get("cohorts") or {}).items()}
    stood = {c for layer in layers for c in layer.stands_for}
    record = RehearsalRecord(
        channel=channel, version=candidate.version, identity=candidate.identity(),
        source=candidate.source, started=started,
        seconds=round(time.monotonic() - began, 2), isolation=mode,  # type: ignore[arg-type]
        layers=[x.name for x in layers], paths=results, cohorts_seen=seen,
        cohorts_unstood=sorted(c for c in seen if c not in stood))
    path = record_path(repo.path, channel, candidate.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    repo.write(path, record.model_dump_json(indent=2, by_alias=True).encode())
    return record
