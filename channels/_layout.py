"""The archive layout rule, shared by the pipeline (which records an artifact's top folder at
publish, reading the archive through the client's public `store.top_folder`) and the client
(which refuses any member outside it when it unpacks):

- a member's name is relative, `/`-separated, free of control characters and of `..`;
- an archive whose members all sit under one folder (`core/...`, `core-1.2.3/...`) has that
  folder as its top folder; a lone file at the top, or two top entries, means none.
"""

from collections.abc import Iterable

__all__ = ["LayoutError", "clean_member_name", "top_folder_of"]


class LayoutError(ValueError):
    """A member name the layout rule refuses, or an archive that cannot be read; the message
    is one line, without the archive's name (the caller adds it)."""


def clean_member_name(name: str) -> str:
    """`name` normalised (no empty or `.` parts).

    Raises:
        LayoutError: absolute, malformed, with a control character, or leaving the tree.
    """
    if not name or name.startswith("/") or "\\" in name:
        raise LayoutError(f"member {name!r} refused: absolute or malformed path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise LayoutError(f"member {name!r} refused: control character in its name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayoutError(f"member {name!r} refused: '..' leaves the tree")
    return "/".join(parts)


def top_folder_of(members: Iterable[tuple[str, bool]]) -> str | None:
    """The one folder every member sits under, given `(clean name, is a folder)` pairs."""
    tops: set[str] = set()
    nested = False
    for name, is_dir in members:
        if not name:
            continue
        head, sep, _ = name.partition("/")
        tops.add(head)
        if len(tops) > 1:
            return None
        if sep:
            nested = True
        elif not is_dir:
            return None  # a lone file at the top is content, not a folder
    return next(iter(tops)) if nested and len(tops) == 1 else None
