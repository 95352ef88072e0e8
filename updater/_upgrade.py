"""`check` and `upgrade`: what the active channel offers, and getting there.

An upgrade is a list of named steps run in order (fetch, stage, switch, commit); each step is
a plain function of the shared `UpgradeContext`, so the list can grow (health checks,
services) and be journaled without changing how a step is written.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from channels import ChannelFile
from updater._downloads import Downloads
from updater._reports import CheckReport, ComponentInfo, StepTiming, UpgradeReport
from updater._root import InstallRoot
from updater._stage import stage_release
from updater._trust import Progress, TrustedRepository


def open_repository(root: InstallRoot, fetcher: object | None = None) -> TrustedRepository:
    config = root.config.repository
    return TrustedRepository(
        root.metadata_dir,
        config.metadata,
        config.targets,
        fetcher=fetcher,  # type: ignore[arg-type]
    )


def read_channel(
    root: InstallRoot, repo: TrustedRepository, channel: str | None = None
) -> ChannelFile:
    """A channel's file (the active one by default), verified, and kept in state/channels/."""
    channel = channel or root.active_channel().channel
    channel_file, raw = repo.channel_file(channel, root.channels_dir / f"{channel}.json")
    root.save_channel_file(channel_file, raw)
    return channel_file


def switch_channel(root: InstallRoot, repo: TrustedRepository, channel: str) -> None:
    """Make `channel` the active one, once the repository proves it carries it."""
    previous = root.active_channel().channel
    read_channel(root, repo, channel)
    if channel != previous:
        root.set_active_channel(channel, f"switched from {previous} by the user")


def check(root: InstallRoot, repo: TrustedRepository) -> CheckReport:
    active = root.active_channel()
    channel_file = read_channel(root, repo)
    installed = root.installed_version()
    return CheckReport(
        root=str(root.path),
        channel=active.channel,
        channel_reason=active.reason,
        installed=installed,
        available=channel_file.release,
        # The channel's release is the goal, even when older (after a switch to stable).
        update_available=installed != channel_file.release,
        fallback=channel_file.fallback,
        published_at=channel_file.published_at,
        components={
            name: ComponentInfo(**a.model_dump()) for name, a in channel_file.components.items()
        },
    )


@dataclass
class UpgradeContext:
    root: InstallRoot
    repo: TrustedRepository
    channel_file: ChannelFile
    from_version: str | None
    progress: Progress | None = None
    archives: dict[str, Path] = field(default_factory=dict)
    bytes_fetched: int = 0
    pruned: list[str] = field(default_factory=list)


def fetch_artifacts(ctx: UpgradeContext) -> None:
    store = Downloads(ctx.root.downloads)
    for name, artifact in sorted(ctx.channel_file.components.items()):
        info = ctx.repo.artifact_info(name, artifact)
        if store.find(artifact.sha256, artifact.length) is None:
            ctx.bytes_fetched += artifact.length
        ctx.archives[name] = ctx.repo.download(info, store, ctx.progress)


def stage(ctx: UpgradeContext) -> None:
    stage_release(ctx.root, ctx.channel_file, ctx.archives)


def switch(ctx: UpgradeContext) -> None:
    ctx.root.switch_current(ctx.channel_file.release)


def commit(ctx: UpgradeContext) -> None:
    ctx.pruned = ctx.root.prune(ctx.root.config.keep_releases)


STEPS: list[tuple[str, Callable[[UpgradeContext], None]]] = [
    ("fetch", fetch_artifacts),
    ("stage", stage),
    ("switch", switch),
    ("commit", commit),
]


def upgrade(
    root: InstallRoot, repo: TrustedRepository, progress: Progress | None = None
) -> UpgradeReport:
    channel_file = read_channel(root, repo)
    installed = root.installed_version()
    ctx = UpgradeContext(root, repo, channel_file, installed, progress)
    total = sum(a.length for a in channel_file.components.values())
    if installed == channel_file.release:
        return UpgradeReport(
            root=str(root.path), channel=channel_file.channel, outcome="up-to-date",
            from_version=installed, to_version=installed, bytes_fetched=0, bytes_total=total,
            pruned=[], steps=[],
        )
    timings = []
    for name, run in STEPS:
        started = time.perf_counter()
        run(ctx)
        timings.append(StepTiming(step=name, seconds=round(time.perf_counter() - started, 4)))
    return UpgradeReport(
        root=str(root.path), channel=channel_file.channel, outcome="upgraded",
        from_version=installed, to_version=channel_file.release,
        bytes_fetched=ctx.bytes_fetched, bytes_total=total, pruned=ctx.pruned, steps=timings,
    )
