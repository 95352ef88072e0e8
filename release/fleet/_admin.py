"""The collector's admin side: the guard every admin route passes (the admin token in a
Bearer header, compared in constant time; without it, 401, or 503 while the connection table
is kept for others), and the admin's routes: `GET /v1/rollouts` (with the leader among
replicas), `POST /v1/rollouts/halt|resume`, `GET /v1/machines` and `POST
/v1/machines/approve|revoke|load`. The admin token vouches for the connection it came on."""

import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from greenlight.release.fleet._conns import ADMIN
from greenlight.release.fleet._http import bearer, capped_body, page_params
from greenlight.release.fleet._store import MACHINE_STATES
from greenlight.release.fleet._views import (
    MACHINES_PAGE,
    ROLLOUTS_PAGE,
    empty_row,
    encode_cursor,
)

__all__ = ["LOAD_MAX", "AdminApi"]

LOAD_MAX = 1 << 20
"""bytes of one load of machine keys"""
_ID = re.compile(r"^[0-9a-f]{32}$")
Handler = Callable[[Any], Awaitable[Any]]


class AdminApi:
    """The admin's routes of one collector app, over its store, guard (with `--repo`),
    lease (with replicas), clock and log; `busy` answers a request the crowded connection
    table turns away, `vouch` marks a connection the admin's."""

    def __init__(self, store: Any, admin_token: str, guard: Any, lease: Any,
                 clock: Callable[[], datetime], log: Callable[[str], None], enrolment: str,
                 crowded: Callable[[], bool], vouch: Callable[[Any, str], None],
                 busy: Callable[[], Any], moved: Callable[[str | None], None]) -> None:
        self.store, self.token, self.guard, self.lease = store, admin_token, guard, lease
        self.clock, self.log, self.enrolment = clock, log, enrolment
        self.crowded, self.vouch, self.busy, self.moved = crowded, vouch, busy, moved

    def admin(self, handler: Handler) -> Handler:
        """`handler` behind the admin token."""
        from starlette.responses import JSONResponse

        async def guarded(request: Any) -> Any:
            if not bearer(request.headers.get("authorization"), self.token):
                if self.crowded():
                    return self.busy()
                return JSONResponse({"error": "the admin token is missing or wrong"}, 401)
            self.vouch(request, ADMIN)
            return await handler(request)
        return guarded

    def routes(self, host_checked: Callable[[Handler], Handler]) -> list[Any]:
        from starlette.routing import Route

        def guarded(handler: Handler) -> Handler:
            return host_checked(self.admin(handler))

        return [Route("/v1/rollouts", guarded(self.rollouts)),
                Route("/v1/rollouts/{action:str}", guarded(self.act), methods=["POST"]),
                Route("/v1/machines", guarded(self.machines)),
                Route("/v1/machines/approve", guarded(self.approve), methods=["POST"]),
                Route("/v1/machines/revoke", guarded(self.revoke), methods=["POST"]),
                Route("/v1/machines/load", guarded(self.load), methods=["POST"])]

    # --- rollouts ----------------------------------------------------------------------
    def overview(self, limit: int, after: tuple[str, str] | None
                 ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of `limit` rows, in order, after `after`: each release reported on, and each
        planned one from the moment it is published; and the cursor of the next page."""
        store, guard = self.store, self.guard
        reported = store.release_pairs(after, limit + 1)
        plans = {(channel, release or ""): plan for (channel, release), plan in
                 (guard.plans() if guard is not None else {}).items()}
        rows = sorted({*reported, *(k for k in plans if after is None or k > after)})
        more, rows = len(rows) > limit, rows[:limit]
        found = store.rollout_rows([k for k in rows if k in set(reported)])
        out = []
        for key in rows:
            out.append({**(found.get(key) or empty_row(*key)), "plan": plans.get(key)})
        return out, encode_cursor(*rows[-1]) if more else None

    async def rollouts(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from greenlight.channels import printable

        try:
            limit, after = page_params(request.query_params, ROLLOUTS_PAGE, 2)
        except ValueError as e:
            return JSONResponse({"error": printable(str(e), 200)}, 422)
        rows, cursor = await run_in_threadpool(
            self.overview, limit, None if after is None else (after[0], after[1]))
        census = (await run_in_threadpool(self.store.census))[0]
        machines = await run_in_threadpool(self.store.enrolment, self.clock())
        leader = None if self.lease is None else await run_in_threadpool(self.lease.leader)
        return JSONResponse({"schema": "greenlight.rollouts/1", "rollouts": rows,
                             "next": cursor, "census": census, "leader": leader,
                             "machines": {"enrolment": self.enrolment, **machines}})

    async def act(self, request: Any) -> Any:
        """POST /v1/rollouts/halt|resume {"channel", "release"}: the admin's hand."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from greenlight.channels import printable

        if self.guard is None:
            return JSONResponse({"error": "this collector guards no repository (--repo)"}, 409)
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return JSONResponse({"error": "expected application/json"}, 415)
        body = await capped_body(request)
        try:
            asked = json.loads(body or b"")
            channel, release = str(asked["channel"]), str(asked["release"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"channel": ..., "release": ...}'}, 422)
        action = request.path_params["action"]
        if action not in ("halt", "resume"):
            return JSONResponse({"error": "POST /v1/rollouts/halt or /v1/rollouts/resume"}, 404)
        try:
            line = await run_in_threadpool(self.guard.admin, channel, release, action,
                                           "an admin (dashboard)")
        except ValueError as e:
            return JSONResponse({"error": printable(str(e), 300)}, 409)
        self.moved(line)
        return JSONResponse({"done": line})

    # --- machines ----------------------------------------------------------------------
    async def machines(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from greenlight.channels import printable

        state = request.query_params.get("state")
        if state is not None and state not in MACHINE_STATES:
            return JSONResponse({"error": f"state: one of {', '.join(MACHINE_STATES)}"}, 422)
        try:
            limit, after = page_params(request.query_params, MACHINES_PAGE, 2)
            if after is not None:
                datetime.fromisoformat(after[0])
        except ValueError as e:
            return JSONResponse({"error": printable(str(e), 200)}, 422)
        store = self.store
        listed = await run_in_threadpool(store.machine_list, state, limit,
                                         None if after is None else (after[0], after[1]))
        return JSONResponse({"schema": "greenlight.machines/1",
                             "enrolment": self.enrolment,
                             "census": (await run_in_threadpool(store.census))[0],
                             "counts": await run_in_threadpool(store.enrolment, self.clock()),
                             "machines": listed,
                             "next": encode_cursor(listed[-1]["enrolled"], listed[-1]["id"])
                             if len(listed) == limit else None})

    async def _ids(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = await capped_body(request)
        try:
            ids = json.loads(body or b"")["ids"]
            if not (isinstance(ids, list) and 0 < len(ids) <= 10_000
                    and all(isinstance(i, str) and _ID.match(i) for i in ids)):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"ids": [machine ids, 32 hex digits]}'},
                                422)
        return ids

    async def approve(self, request: Any) -> Any:
        return await self._set_state(request, "approved", "active", "pending")

    async def revoke(self, request: Any) -> Any:
        return await self._set_state(request, "revoked", "revoked")

    async def _set_state(self, request: Any, said: str, *state: str) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        ids = await self._ids(request)
        if not isinstance(ids, list):
            return ids
        n = await run_in_threadpool(self.store.set_state, ids, *state)
        self.log(f"{said} {n} machine key(s)")
        return JSONResponse({"changed": n})

    async def load(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from greenlight.channels import machine_id, public_raw

        body = await capped_body(request, LOAD_MAX)
        try:
            keys = json.loads(body or b"")["keys"]
            if not isinstance(keys, list) or not 0 < len(keys) <= 10_000:
                raise ValueError
            loaded = {machine_id(public_raw(k)): k.strip() for k in keys}
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": 'expected {"keys": [public keys, as `updater '
                                          'identity` prints them]}'}, 422)
        n = await run_in_threadpool(self.store.preauthorize, loaded, self.clock())
        self.log(f"loaded {n} machine key(s)")
        return JSONResponse({"added": n, "known": len(loaded) - n})
