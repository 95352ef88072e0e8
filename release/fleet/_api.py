"""The collector's HTTP API (Starlette): `POST /v1/reports` with the fleet token,
`GET /v1/rollouts` with the admin token, and `GET /`, the dashboard (a static asset,
`dashboard.html`, with no data of its own). Tokens are compared in constant time and never
logged."""

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from greenlight.release.fleet._guard import Guard
from greenlight.release.fleet._store import FAILED, Store

__all__ = ["BODY_MAX", "RATE", "dashboard", "make_app"]

RATE = 10  # reports per installation per minute
BODY_MAX = 65536  # bytes of one report; read no further


async def _capped_body(request: Any) -> bytes | None:
    """The request's body, read as it arrives and abandoned past BODY_MAX (None): memory
    stays flat whatever a client sends or claims in Content-Length."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > BODY_MAX:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX:
            return None
    return bytes(body)


def dashboard() -> str:
    """The dashboard page, shipped beside this module."""
    return resources.files("greenlight.release.fleet").joinpath("dashboard.html").read_text()


def _bearer(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].encode(), token.encode())



def make_app(store: Store, fleet_token: str, admin_token: str,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC),
             guard: Guard | None = None, tick: float = 10.0,
             log: Callable[[str], None] = lambda line: None) -> Any:
    import asyncio
    import contextlib
    import threading

    from pydantic import ValidationError
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from greenlight.channels import FleetReport, describe_validation

    # At most one judgement per channel waits at a time in this process: a burst of failure
    # reports costs one look at the repository, not one per report.
    waiting: set[str] = set()
    waiting_lock = threading.Lock()

    def judge(channel: str) -> None:
        assert guard is not None
        with waiting_lock:
            waiting.discard(channel)
        try:
            guard.judge(channel)
        except Exception as e:  # logged; the timer tries again
            guard.log(f"cannot judge {channel}: {type(e).__name__}: {e}")

    async def post_report(request: Request) -> Response:
        if not _bearer(request.headers.get("authorization"), fleet_token):
            # Said where the fleet's operator looks, never with what was sent.
            client = request.client.host if request.client else "unknown"
            log(f"refused a report from {client}: the fleet token is missing or wrong")
            return JSONResponse({"error": "the fleet token is missing or wrong"}, 401)
        body = await _capped_body(request)
        if body is None:
            return JSONResponse({"error": f"a report is at most {BODY_MAX} bytes"}, 413)
        try:
            report = FleetReport.model_validate_json(body)
        except ValidationError as e:
            return JSONResponse({"error": f"not a greenlight.report/1: {describe_validation(e)}"},
                                422)
        if not store.accept(report, report.model_dump_json(by_alias=True), clock(), RATE):
            return JSONResponse({"error": "too many reports from this installation"}, 429)
        task = None
        if guard is not None and report.outcome in FAILED:
            with waiting_lock:
                fresh = report.channel not in waiting
                waiting.add(report.channel)
            if fresh:
                task = BackgroundTask(judge, report.channel)
        return JSONResponse({"accepted": True}, 202, background=task)

    def admin(handler: Callable[[Request], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            if not _bearer(request.headers.get("authorization"), admin_token):
                return JSONResponse({"error": "the admin token is missing or wrong"}, 401)
            return await handler(request)
        return guarded

    def overview() -> list[dict[str, Any]]:
        rows = store.rollouts()
        plans = guard.plans() if guard is not None else {}
        for row in rows:
            row["plan"] = plans.get((row["channel"], row["release"]))
        return rows

    async def rollouts(request: Request) -> Response:
        return JSONResponse({"schema": "greenlight.rollouts/1",
                             "rollouts": await run_in_threadpool(overview)})

    async def page(request: Request) -> Response:
        return HTMLResponse(dashboard(), headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                       "style-src 'unsafe-inline'",
            "Referrer-Policy": "no-referrer"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async def timer() -> None:
            assert guard is not None
            while True:
                await asyncio.sleep(tick)
                await run_in_threadpool(guard.tick)

        task = asyncio.create_task(timer()) if guard is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    return Starlette(routes=[
        Route("/v1/reports", post_report, methods=["POST"]),
        Route("/v1/rollouts", admin(rollouts)),
        Route("/", page),
    ], lifespan=lifespan)
