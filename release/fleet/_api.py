"""The collector's HTTP API (Starlette): `POST /v1/reports` with the fleet token,
`GET /v1/rollouts` and `GET /metrics` (Prometheus) with the admin token, `GET /openapi.json`
(the report API, from the wire format's own model), and `GET /`, the dashboard (a static
asset, `dashboard.html`, with no data of its own). Tokens are compared in constant time and
never logged."""

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from greenlight.release.fleet._guard import Guard
from greenlight.release.fleet._store import FAILED, Store

__all__ = ["BODY_MAX", "RATE", "dashboard", "make_app", "openapi"]

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


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the report API, its schemas from `FleetReport` itself."""
    from greenlight.channels import FleetReport

    schema = FleetReport.model_json_schema(by_alias=True,
                                           ref_template="#/components/schemas/{model}")
    schemas = {**schema.pop("$defs", {}), "FleetReport": schema}
    error = {"content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Greenlight fleet collector", "version": "1"},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/reports": {"post": {
                "summary": "One machine's report of one transaction (the fleet token)",
                "security": bearer,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/FleetReport"}}}},
                "responses": {
                    "202": {"description": "accepted"},
                    "401": {"description": "the fleet token is missing or wrong", **error},
                    "413": {"description": f"over {BODY_MAX} bytes", **error},
                    "422": {"description": "not a greenlight.report/1 within its limits",
                            **error},
                    "429": {"description": f"over {RATE} reports a minute from this "
                                           "installation", **error}}}},
            "/v1/rollouts": {"get": {
                "summary": "Per channel and release: machines, outcomes, failed checks, the "
                           "rollout's position (the admin token)",
                "security": bearer,
                "responses": {"200": {"description": "greenlight.rollouts/1"},
                              "401": {"description": "the admin token is missing or wrong"}}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (the admin token)", "security": bearer,
                "responses": {"200": {"description": "text exposition format"}}}},
        },
    }


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

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from pydantic import ValidationError
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from greenlight.channels import FleetReport, describe_validation

    # A registry of this app's own: two collectors in one process (tests) count apart.
    registry = CollectorRegistry()
    reports = Counter("greenlight_reports", "Reports accepted, by channel, release, outcome",
                      ["channel", "release", "outcome"], registry=registry)
    refused = Counter("greenlight_reports_refused", "Reports refused, by HTTP status",
                      ["status"], registry=registry)
    moves = Counter("greenlight_rollout_moves", "Rollouts halted or advanced by this "
                    "collector", ["channel", "action"], registry=registry)
    latency = Histogram("greenlight_request_seconds", "Time to answer, by route",
                        ["route"], registry=registry)

    # At most one judgement per channel waits at a time in this process: a burst of failure
    # reports costs one look at the repository, not one per report.
    waiting: set[str] = set()
    waiting_lock = threading.Lock()

    def judge(channel: str) -> None:
        assert guard is not None
        with waiting_lock:
            waiting.discard(channel)
        try:
            _moved(guard.judge(channel))
        except Exception as e:  # logged; the timer tries again
            guard.log(f"cannot judge {channel}: {type(e).__name__}: {e}")

    def _moved(line: str | None) -> None:
        words = (line or "").split()
        if len(words) > 1 and words[0] in ("halted", "advanced"):  # "halted CHANNEL ..."
            moves.labels(words[1], words[0]).inc()

    def _refused(status: int, error: str) -> Response:
        refused.labels(str(status)).inc()
        return JSONResponse({"error": error}, status)

    async def post_report(request: Request) -> Response:
        with latency.labels("/v1/reports").time():
            return await _post_report(request)

    async def _post_report(request: Request) -> Response:
        if not _bearer(request.headers.get("authorization"), fleet_token):
            # Said where the fleet's operator looks, never with what was sent.
            client = request.client.host if request.client else "unknown"
            log(f"refused a report from {client}: the fleet token is missing or wrong")
            return _refused(401, "the fleet token is missing or wrong")
        body = await _capped_body(request)
        if body is None:
            return _refused(413, f"a report is at most {BODY_MAX} bytes")
        try:
            report = FleetReport.model_validate_json(body)
        except ValidationError as e:
            return _refused(422, f"not a greenlight.report/1: {describe_validation(e)}")
        if not store.accept(report, report.model_dump_json(by_alias=True), clock(), RATE):
            return _refused(429, "too many reports from this installation")
        reports.labels(report.channel, report.release or "-", report.outcome).inc()
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

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def api(request: Request) -> Response:
        return JSONResponse(openapi())

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
                for line in await run_in_threadpool(guard.tick):
                    _moved(line)

        task = asyncio.create_task(timer()) if guard is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    return Starlette(routes=[
        Route("/v1/reports", post_report, methods=["POST"]),
        Route("/v1/rollouts", admin(rollouts)),
        Route("/metrics", admin(metrics)),
        Route("/openapi.json", api),
        Route("/", page),
    ], lifespan=lifespan)
