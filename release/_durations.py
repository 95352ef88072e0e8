"""The one duration parser of the pipeline: `--expires`, `--within` and `--soak` all take
`<number><unit>`, the unit one of s, m, h, d or w (30s, 10m, 1.5h, 90d, 8w)."""

import re
from datetime import timedelta

from greenlight.release._errors import UsageError

__all__ = ["parse_duration"]

_DURATION = re.compile(r"\A(\d+(?:\.\d+)?)([smhdw])\Z")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str = "--expires") -> timedelta:
    """`text` as a duration above zero.

    Raises:
        UsageError: not a duration; the message names `option`.
    """
    match = _DURATION.match(text.strip())
    seconds = float(match.group(1)) * _SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise UsageError(f"{option} {text!r}: expected a duration such as 30s, 10m, 12h, 90d "
                         "or 8w")
    return timedelta(seconds=seconds)
