"""Staged rollout: which installations take a release while it reaches N percent.

Each installation has a stable random id; its bucket for a release is a number 0-99 derived
from the id, the channel and the release, so the same machine always gets the same answer
for the same release, and a different slice of machines goes first for each release.
"""

import hashlib

from greenlight.channels._model import ChannelFile

__all__ = ["admitted", "rollout_bucket"]


def rollout_bucket(installation_id: str, channel: str, release: str) -> int:
    digest = hashlib.sha256(f"{installation_id}:{channel}:{release}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def admitted(channel_file: ChannelFile, installation_id: str) -> bool:
    rollout = channel_file.rollout
    if rollout is None:
        return True
    bucket = rollout_bucket(installation_id, channel_file.channel, channel_file.release)
    return bucket < rollout.percent and not rollout.halted
