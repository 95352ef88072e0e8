"""The rehearsals of the repository the collector guards, for the dashboard: `GET
/v1/rehearsals` (the admin token), `greenlight.rehearsals/1`.

A rehearsal (`release rehearse`, `greenlight.release.rehearsal`) is kept beside the release in
the repository's folder, never served to machines; with `--repo`, the collector reads the
last `SHOWN` of them, newest first, each as its `greenlight.rehearsal/1` record, and the last
`SHOWN` channel changes started without a passed one (`--without-rehearsal`), newest first.
Their text (check summaries, reasons) is data: the page sets it as text, never as markup.
"""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["NO_REPOSITORY", "REHEARSALS_SCHEMA", "SHOWN", "rehearsals_answer",
           "rehearsals_endpoint"]

REHEARSALS_SCHEMA = "greenlight.rehearsals/1"
SHOWN = 50
"""rehearsals, and overrides, in one answer at most"""
NO_REPOSITORY = "this collector guards no repository (--repo)"
_FIELDS = ("at", "action", "channel", "release", "by", "refusal", "reason")
"""what an override says (`RehearsalGate`); any other field of a line is left out"""


def _override(item: dict[str, object]) -> dict[str, str | None]:
    return {k: None if item.get(k) is None else str(item[k])[:1000] for k in _FIELDS}


def rehearsals_answer(repo: Path | None) -> dict[str, Any]:
    """The answer of `GET /v1/rehearsals` for the repository at `repo` (None: the collector
    guards none)."""
    if repo is None:
        return {"schema": REHEARSALS_SCHEMA, "rehearsals": [], "overrides": [],
                "note": NO_REPOSITORY}
    from greenlight.release.rehearsal import overrides, rehearsals

    return {"schema": REHEARSALS_SCHEMA,
            "rehearsals": [r.model_dump(mode="json", by_alias=True)
                           for r in rehearsals(repo)[:SHOWN]],
            "overrides": [_override(o) for o in reversed(overrides(repo)[-SHOWN:])]}


def rehearsals_endpoint(repo: Path | None) -> Callable[[Any], Awaitable[Any]]:
    """`GET /v1/rehearsals` (put behind the admin token and the host check by the app)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    async def endpoint(request: Any) -> Any:
        return JSONResponse(await run_in_threadpool(rehearsals_answer, repo))

    return endpoint
