"""Refusals of values by the shared layer, and the one formatter of pydantic's errors."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["InvalidValue", "describe_validation"]

# A tagged union's branch appears in pydantic's location; it names no field.
_BRANCHES = frozenset({"process", "tcp", "http", "websocket", "dns", "version", "command"})


class InvalidValue(ValueError):
    """A name or version the shared layer refuses (a channel, a component, a version); the
    message is one line naming the value."""


def _where(loc: tuple[int | str, ...], data: object) -> str:
    """'a.b[2].c', with an array entry named by its `name` when `data` has one."""
    parts: list[str] = []
    node = data
    for step in loc:
        if isinstance(step, int):
            entry = node[step] if isinstance(node, list) and step < len(node) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            label = f"[{name!r}]" if isinstance(name, str) else f"[{step}]"
            if parts:
                parts[-1] += label
            else:
                parts.append(label)
            node = entry
            continue
        node = node.get(step) if isinstance(node, dict) else None
        if step in _BRANCHES:
            continue
        parts.append(str(step))
    return ".".join(parts)


def _one(item: Any, data: object) -> str:
    where = _where(tuple(item["loc"]), data)
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "union_tag_invalid":
        where = f"{where}.type" if where else "type"
        expected = str(item["ctx"]["expected_tags"]).replace("'", "")
        message = f"unknown check type {item['ctx']['tag']!r}: expected one of {expected}"
    return f"field {where}: {message}" if where else message


def describe_validation(error: "ValidationError", data: object = None, limit: int = 3) -> str:
    """pydantic's errors as one line: `field where: what` for each (just `what` for a rule of
    the whole model), at most `limit` of them, with no link and no input dump. With the input
    `data`, an array entry is named by its `name` (`field check['api'].url: ...`)."""
    items = error.errors(include_url=False)
    parts = [_one(item, data) for item in items[:limit]]
    more = len(items) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
