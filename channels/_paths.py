"""Target paths and role names: where things live in a repository, by convention.

`channels/<name>.json` is a channel file, signed by the delegated role `channel-<name>`;
`rollouts/<name>.json` is the channel's rollout state, signed by the online role
`rollout-<name>`; `artifacts/<component>/<version>/<file>` is a component archive.

Greenlight's own updater is a release like any other: machines on channel `<name>` take it
from channel `greenlight-<name>` (`updater_channel`), as the component `updater-<platform>`
(`updater_component`), an archive holding the one-file executable `updater`.
"""

import platform
import re
import sys

from greenlight.channels._invalid import InvalidValue

__all__ = ["artifact_target", "channel_role", "channel_target", "check_channel_name",
           "check_component_name", "manifest_target", "rollout_role", "rollout_target",
           "this_platform", "updater_channel", "updater_component", "UPDATER_PREFIX"]

UPDATER_PREFIX = "greenlight-"
"""Channels named so carry Greenlight's own updater for the channel of the rest of the name."""

_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")

def _check(kind: str, name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise InvalidValue(
            f"invalid {kind} name {name!r}: use 1-64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name

def check_channel_name(name: str) -> str:
    return _check("channel", name)

def check_component_name(name: str) -> str:
    return _check("component", name)

def channel_target(channel: str) -> str:
    return f"channels/{check_channel_name(channel)}.json"

def channel_role(channel: str) -> str:
    return f"channel-{check_channel_name(channel)}"

def rollout_target(channel: str) -> str:
    return f"rollouts/{check_channel_name(channel)}.json"

def rollout_role(channel: str) -> str:
    return f"rollout-{check_channel_name(channel)}"

def manifest_target(version: str, sha256: str) -> str:
    """A release's product manifest, among the artifacts (`_manifest` is no component's name),
    named by its hash, so a path never holds other bytes."""
    return f"artifacts/_manifest/{version}/product-{sha256[:16]}.toml"


def artifact_target(component: str, version: str, filename: str) -> str:
    """Where a component's archive lives: `artifacts/<component>/<version>/<filename>`.

    Raises:
        InvalidValue: not a component name, or not a plain file name.
    """
    if "/" in filename or filename in ("", ".", ".."):
        raise InvalidValue(f"invalid artifact file name {filename!r}")
    return f"artifacts/{check_component_name(component)}/{version}/{filename}"


def updater_channel(channel: str) -> str:
    """The channel that carries Greenlight's updater for machines on `channel`."""
    return check_channel_name(UPDATER_PREFIX + check_channel_name(channel))


def this_platform() -> str:
    """This machine's platform tag, as updater components are named: `linux-x86_64`."""
    system = {"win32": "windows", "darwin": "macos"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower() or "unknown"
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return _check("platform", f"{system}-{machine}")


def updater_component(platform_tag: str | None = None) -> str:
    """The component of an updater release that runs on `platform_tag` (this machine's)."""
    return check_component_name(f"updater-{platform_tag or this_platform()}")
