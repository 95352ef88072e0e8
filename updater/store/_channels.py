"""The channel state of a root: the channel it follows now and why (`state/channels/active.json`),
and the verified channel files kept for reading offline (`state/channels/<channel>.json`)."""

import tomllib
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ValidationError

from greenlight.channels import ChannelFile, Record, atomic_write, check_channel_name, now
from greenlight.updater._errors import ConfigError, StoreError
from greenlight.updater.store._root import InstallRoot

__all__ = ["ActiveChannel", "active_channel", "restore_active_channel", "save_channel_file",
           "set_active_channel"]


class ActiveChannel(Record):
    channel: Annotated[str, AfterValidator(check_channel_name)]
    """the channel followed now"""
    since: datetime
    reason: str
    chosen: Annotated[str, AfterValidator(check_channel_name)] | None = None
    """the channel a person chose, when the machine follows another after a fallback; the
    machine goes back to it as soon as it carries a release allowed here"""

    @property
    def chosen_channel(self) -> str:
        return self.chosen or self.channel

    @property
    def fallen_back(self) -> bool:
        return self.chosen is not None and self.chosen != self.channel


def _configured(root: InstallRoot) -> str:
    """The channel `greenlight.toml` names, for a root that never switched (no active.json)."""
    try:
        channel = tomllib.loads(root.require().config_path.read_text()).get("channel")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{root.config_path}: unreadable: {e}") from None
    if not isinstance(channel, str):
        raise ConfigError(f"{root.config_path}: no channel; set channel = \"stable\"")
    return channel


def active_channel(root: InstallRoot) -> ActiveChannel:
    """The channel the root follows now, and why.

    Raises:
        StoreError: active.json is damaged; ConfigError: no active.json and no readable
        configured channel.
    """
    path = root.channels_dir / "active.json"
    try:
        return ActiveChannel.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return ActiveChannel(channel=_configured(root), since=now(), reason="configured")
    except (ValidationError, OSError, UnicodeDecodeError):
        raise StoreError(f"{path}: unreadable; switch with 'updater channel NAME'") from None


def set_active_channel(root: InstallRoot, channel: str, reason: str,
                       chosen: str | None = None) -> ActiveChannel:
    """Follow `channel` from now on: a person's (or a sideload's) choice, or, with `chosen`,
    a fallback from the channel a person chose, which stays chosen.

    Raises:
        ValueError: not a valid channel name.
    """
    check_channel_name(channel)
    return restore_active_channel(root, ActiveChannel(
        channel=channel, since=now(), reason=reason,
        chosen=None if chosen in (None, channel) else chosen))


def restore_active_channel(root: InstallRoot, active: ActiveChannel) -> ActiveChannel:
    atomic_write(root.channels_dir / "active.json",
                 active.model_dump_json(indent=2).encode(), mode=0o640)
    return active


def save_channel_file(root: InstallRoot, channel_file: ChannelFile, raw: bytes) -> None:
    """Keep a verified channel file (no write when it is unchanged: a warm check stays cheap)."""
    path = root.channels_dir / f"{channel_file.channel}.json"
    try:
        if path.read_bytes() == raw:
            return
    except FileNotFoundError:
        pass
    atomic_write(path, raw, mode=0o640)
