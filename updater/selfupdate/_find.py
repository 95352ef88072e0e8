"""Which Greenlight this machine should move to, if any: the release of its updater channel
(`greenlight-<channel>`), by the same rules as a product release's rollout and revocation,
never older than the one running, never one that failed here."""

from dataclasses import dataclass

from greenlight.channels import (
    VERSION,
    ChannelFile,
    ComponentArtifact,
    admitted,
    effective_rollout,
    is_newer,
    now,
    this_platform,
    updater_channel,
    updater_component,
)
from greenlight.updater._errors import NotFound
from greenlight.updater.product import machine_cohort
from greenlight.updater.store import InstallRoot, active_channel, read_updaters
from greenlight.updater.trust import TrustedRepository

__all__ = ["Candidate", "Found", "find"]


@dataclass(frozen=True)
class Candidate:
    channel_file: ChannelFile
    component: str
    artifact: ComponentArtifact

    @property
    def version(self) -> str:
        return self.channel_file.release

    @property
    def key(self) -> str:
        return self.channel_file.identity.key


@dataclass(frozen=True)
class Found:
    channel: str
    """the updater channel looked at"""
    available: str | None
    """the Greenlight release it carries, if any"""
    candidate: Candidate | None
    """what to move to; None with `note` saying why not"""
    note: str


def _channels(root: InstallRoot) -> list[str]:
    """The updater channels to look at: the active channel's, then the chosen one's."""
    active = active_channel(root)
    names = [updater_channel(active.channel)]
    if active.chosen_channel != active.channel:
        names.append(updater_channel(active.chosen_channel))
    return names


def find(root: InstallRoot, repo: TrustedRepository, rollouts: bool = True) -> Found:
    """The Greenlight release this machine may move to now; without `rollouts` (a bundle a
    person sideloads), a staged rollout does not hold it back.

    Raises:
        TrustError, NetworkError: the updater channel could not be verified or read.
        NeedsNewer: the updater release itself needs a newer Greenlight to be read.
        StoreError: state/updater.json is damaged.
    """
    entry = None
    channel = ""
    for channel in _channels(root):
        try:
            entry, _ = repo.channel_file(channel)
            break
        except NotFound:
            continue
    if entry is None:
        return Found(channel, None, None, f"no Greenlight release is published on {channel}")
    version = entry.release
    said = f"Greenlight {version} ({channel})"
    if not is_newer(version, VERSION):
        return Found(channel, version, None, f"Greenlight {VERSION} is current ({said})")
    if entry.is_revoked(version):
        return Found(channel, version, None, f"{said} is revoked")
    why = read_updaters(root).is_quarantined(version, entry.identity.key)
    if why is not None:
        return Found(channel, version, None, f"{said} failed here before: {why}")
    if entry.rollout is not None and rollouts:
        state = repo.rollout_state(channel) if entry.rollout.plan is not None else None
        plan = entry.rollout.plan
        effective = effective_rollout(entry, state, now() if plan is not None
                                      else entry.published_at,
                                      machine_cohort(root) if plan is not None else None)
        if effective is not None and not admitted(entry, root.installation_id, effective):
            halted = " (halted)" if effective.halted else ""
            return Found(channel, version, None,
                         f"{said}: this machine is not in its rollout yet "
                         f"({effective.percent}%{halted})")
    name = updater_component()
    artifact = entry.components.get(name)
    if artifact is None:
        return Found(channel, version, None,
                     f"{said} has no build for {this_platform()} (no component {name})")
    return Found(channel, version, Candidate(entry, name, artifact), f"{said} is available")
