"""Placeholders in commands, URLs and check fields: {root}, {release_dir}, {version},
{python}, {data_dir}, {token} in WebSocket messages, and the values a release's manifest
declares (set by the machine's [values])."""

import re
from typing import TYPE_CHECKING

from greenlight.updater.product._runtime import frozen, python_argv

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["BUILT_IN", "expand", "expand_command", "placeholders", "values_for"]

BUILT_IN = ("root", "release_dir", "version", "python", "data_dir", "token")
"""The placeholders the machine always fills; a manifest's own are declared under [values]."""

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def placeholders(text: str) -> list[str]:
    """The names of the placeholders `text` holds, as `expand` would fill them."""
    return _PLACEHOLDER.findall(text)


def expand(text: str, values: dict[str, str]) -> str:
    """Replace {root}, {release_dir}, {version}, {python} (and {token} where given); other
    braces (JSON in a WebSocket message, say) are left alone."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def expand_command(parts: list[str], values: dict[str, str]) -> list[str]:
    """A command's argv: a lone "{python}" becomes the interpreter's argv (see _runtime)."""
    argv: list[str] = []
    for part in parts:
        argv.extend(python_argv() if part == "{python}" else [expand(part, values)])
    return argv


def values_for(root: "InstallRoot", release: str | None,
               declared: dict[str, str] | None = None) -> dict[str, str]:
    """The placeholder values for the release of key `release` (the release `current` points
    at, if None), with the `declared` ones (a manifest's values, as the machine sets them);
    the built-in names win."""
    import sys

    from greenlight.channels import version_of

    release_dir = root.release_dir(release) if release else root.current
    return {**(declared or {}), "root": str(root.path), "release_dir": str(release_dir),
            "version": version_of(release) if release else "",
            "python": _frozen_python(root) if frozen() else sys.executable,
            "data_dir": str(root.path / "data")}


def _frozen_python(root: "InstallRoot") -> str:
    """A frozen updater's interpreter as one path, for a `{python}` inside a string (`sh -c
    "exec {python} ..."`): `<root>/bin/greenlight-python`, a script that runs this
    executable's private interpreter entry, (re)written when it names another executable."""
    import shlex

    from greenlight.channels import atomic_write

    path = root.path / "bin" / "greenlight-python"
    from greenlight.updater.product._runtime import program

    script = f"#!/bin/sh\nexec {shlex.quote(program())} --greenlight-python \"$@\"\n"
    try:
        if path.read_text() == script:
            return str(path)
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, script.encode(), mode=0o755)
    return str(path)
