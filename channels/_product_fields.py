"""The strings of greenlight.toml and of a release's manifest that reach a unit file, a
command line, an environment or a path: their patterns (published in the JSON schemas), and
the rule that keeps a path built from `{release_dir}` or `{root}` inside it.

A signed manifest configures the product's services; it must never become a way to write a
directive into a unit file, or a file outside the product. So:

- no string holds a control character (a newline would start a directive of its own in a
  unit file, or a line of its own in a log);
- a systemd unit name is a plain name in systemd's grammar (`NAME.service`), never a path;
- an environment variable's name is a shell name;
- a command's program does not start with one of systemd's `ExecStart=` prefixes
  (`@ - : + !`), which would change what systemd runs;
- a path built from `{release_dir}` or `{root}` never climbs out of it with `..`.

Both backends then run the same argv with the same environment: the systemd backend quotes
each word so that systemd reads it back as it is (`%` and `$` doubled, quotes and backslashes
escaped)."""

import re
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = ["AGENT_UNIT", "CONTROL", "GATE_UNIT", "LINE_PATTERN", "RESERVED_UNITS", "EnvName",
           "Line", "TokenFile", "UnitName", "check_folder", "check_inside", "check_program",
           "check_relative_file", "is_unit_file_name", "unit_of"]

_CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
CONTROL = re.compile(f"[{_CONTROL_CHARS}]")
"""A control character: what no string that reaches a unit file or a log may hold."""
LINE_PATTERN = f"^[^{_CONTROL_CHARS}]*$"
"""Text on one line: no C0 or C1 control character, DEL included, and no Unicode line or
paragraph separator."""

Line = Annotated[str, Field(pattern=LINE_PATTERN, max_length=4096)]
"""A string that reaches a unit file, a command line, an environment or a log."""

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
"""An environment variable's name."""

_UNIT_CHARS = r"[A-Za-z0-9:_.\\-]"
UNIT_PATTERN = rf"^{_UNIT_CHARS}+(@{_UNIT_CHARS}*)?\.service$"
UnitName = Annotated[str, Field(pattern=UNIT_PATTERN, max_length=255)]
"""A service unit's name in systemd's grammar: a plain name, never a path."""

_UNIT_FILE = re.compile(rf"^{_UNIT_CHARS}+(@{_UNIT_CHARS}*)?\.(service|socket)$")

_EXEC_PREFIXES = "@-:+!|;"

AGENT_UNIT = "greenlight-agent.service"
GATE_UNIT = "greenlight-sockets.service"
"""What the held sockets' units trigger: a oneshot that stays active, so that traffic on a
held socket never starts the product's service (an upgrade stops it, then starts the new
release: traffic in between must wait in the backlog, not start the old one again). The
service still gets the sockets, by its `Sockets=`; systemd documents that the unit a socket
activates may differ from the units that inherit it."""
RESERVED_UNITS = (AGENT_UNIT, GATE_UNIT)
"""Units Greenlight writes for itself: no service of a product may be one of them."""


def check_program(text: str) -> str:
    """`text` as a command's first word: not empty, and not starting with one of systemd's
    ExecStart= prefixes.

    Raises:
        ValueError: it does.
    """
    if not text:
        raise ValueError("a command's program is not empty")
    if text[0] in _EXEC_PREFIXES:
        raise ValueError(f"a command's program may not start with {text[0]!r}: systemd "
                         "reads it as a prefix of ExecStart= and would run something else")
    return text


def unit_of(name: str, unit: str | None) -> str:
    """A service's systemd unit: its configured `unit`, else greenlight-NAME.service."""
    return unit or f"greenlight-{name}.service"


def is_unit_file_name(name: str) -> bool:
    """`name` is a service or socket unit's file name in systemd's grammar (no folder)."""
    return len(name) <= 255 and _UNIT_FILE.match(name) is not None


_SEPARATORS = re.compile(r"[\s:;,=\"']")
_ANCHORS = re.compile(r"\{(release_dir|root|data_dir|python)\}")


def _climbs(path: str) -> bool:
    depth = 0
    for part in path.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False


def check_inside(text: str, one_path: bool = False) -> None:
    """Each path `text` builds from `{release_dir}`, `{root}` or `{data_dir}` stays inside
    that folder: the placeholder ends a path component (`{root}-x` names a sibling) and what
    follows it never climbs above it, up to a separator (space, `:`, `;`, `,`, `=` or a
    quote), or to the end when `text` is `one_path` (a folder, a file). `{python}` is a
    program: nothing follows it but a separator.

    Raises:
        ValueError: one that leaves its folder, named.
    """
    for found in _ANCHORS.finditer(text):
        rest = text[found.end():]
        segment = rest if one_path else _SEPARATORS.split(rest, maxsplit=1)[0]
        if found.group(1) == "python" and segment:
            raise ValueError(f"{text!r}: {{python}} is the interpreter, not a folder")
        if rest and (rest[0].isalnum() or rest[0] in "._-{"):
            raise ValueError(f"{text!r}: {found.group(0)} must end a path component "
                             f"(followed by '/'), or it names a folder beside it")
        if _climbs(segment):
            raise ValueError(f"{text!r} climbs out of {found.group(0)} with '..'")


def check_folder(text: str) -> None:
    """A service's `workdir`: an absolute path (or one built from a placeholder) with no
    `..`, no `.` and no space at either end: systemd refuses or trims those, and both
    backends must run in the same folder.

    Raises:
        ValueError: it is not.
    """
    if not text.startswith(("/", "{")):
        raise ValueError(f"workdir = {text!r}: an absolute path, or one built from a "
                         "placeholder ({root}, {release_dir}, ...)")
    if text != text.strip() or text.endswith("\\") or any(
            p in (".", "..") for p in text.split("/")):
        raise ValueError(f"workdir = {text!r}: a plain path, without '.', '..', spaces at "
                         "its ends or a backslash at its end")
    check_inside(text, one_path=True)


def check_relative_file(text: str) -> None:
    """A file a check reads (`bearer_token_file`): relative to the root, or built from
    `{root}`, `{data_dir}` or `{release_dir}`, and never climbing out of it.

    Raises:
        ValueError: an absolute path, or one that climbs out with '..'.
    """
    if text.startswith("/") or (not text.startswith("{") and _climbs(text)):
        raise ValueError(f"{text!r}: a file inside the root (relative to it, or under "
                         "{root}, {data_dir} or {release_dir}), never outside it")
    if text.startswith("{") and not _ANCHORS.match(text):
        raise ValueError(f"{text!r}: a file inside the root starts with {{root}}, "
                         "{data_dir} or {release_dir}, or is relative to the root")
    check_inside(text, one_path=True)


def _token_file(text: str | None) -> str | None:
    if text is not None:
        check_relative_file(text)
    return text


TokenFile = Annotated[Line | None, AfterValidator(_token_file)]
"""A check's `bearer_token_file`: one line, inside the root (`check_relative_file`)."""
