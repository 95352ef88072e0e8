"""Placeholders in commands, URLs and check fields, as a manifest and greenlight.toml write
them: `{root}`, `{release_dir}`, `{version}`, `{python}`, `{data_dir}`, `{token}` in WebSocket
messages (built in, filled by the machine), and the values a release's manifest declares
(set by the machine's [values]). What fills them on a machine is the client's
(`greenlight.updater.product`)."""

import re

__all__ = ["BUILT_IN", "expand", "placeholders"]

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
