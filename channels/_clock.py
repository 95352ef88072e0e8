"""The clock: every timestamp Greenlight writes is UTC, to the second."""

from datetime import UTC, datetime

__all__ = ["now"]


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
