"""Deltas at publish time: patches to each new artifact from the channel's (and its
fallback's) recent releases, kept when they are small (the codec is `greenlight.channels`)."""

from tuf.api.metadata import TargetFile

from greenlight.channels import ComponentArtifact, Delta, build_delta, is_newer
from greenlight.release.repository._channels import add_artifacts, channel_history
from greenlight.release.repository._repository import FileRepository

__all__ = ["DELTA_BASES", "build_deltas"]


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
