"""What fills the placeholders on a machine: the built-in values of a release (its folder,
version, interpreter, ...) and a command's argv with `{python}` as this interpreter. What a
placeholder is, and `expand`, are the shared layer's (`greenlight.channels`)."""

from typing import TYPE_CHECKING

from greenlight.channels import expand
from greenlight.updater.product._runtime import frozen, python_argv

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["expand_command", "values_for"]


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
