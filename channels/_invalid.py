"""Refusals of values by the shared layer, and the one formatter of pydantic's errors."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["InvalidValue", "describe_validation"]


class InvalidValue(ValueError):
    """A name or version the shared layer refuses (a channel, a component, a version); the
    message is one line naming the value."""


def describe_validation(error: "ValidationError", limit: int = 3) -> str:
    """pydantic's errors as one line: `where: what` for each (just `what` for a rule of the
    whole model), at most `limit` of them, with no link and no input dump."""
    parts = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = len(error.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
