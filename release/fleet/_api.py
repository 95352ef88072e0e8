"""The collector's HTTP API (Starlette), put together here from its parts: the admin's guard
and routes (`_admin`), the reports' group commit (`_writer`), the background work (`_tasks`)
and feedback (`_feedback_api`). `POST /v1/reports` with the fleet token and the
machine's signature; with the admin token, `GET /v1/rollouts`, `GET /v1/census` (`_census`),
`GET /v1/rehearsals` (`_rehearsals`), `GET /metrics`, `GET /v1/machines` and `POST
/v1/machines/approve|revoke|load`; `GET /openapi.json` (the report API, from the wire
format's own model), and `GET /`, the dashboard (a static asset, `dashboard.html`, with no
data of its own); user feedback's routes, `/v1/feedback...`, are `_feedback_api`'s. Tokens are
compared in constant time and never logged.

A report is admitted in this order: the fleet token (401), the body's size while it is read
(413), the machine's signature over the body (401), the wire format and its limits (422), the
report's `installation` being its key's id (422), its freshness (its signed `sent` within
`FRESH_PAST` before and `FRESH_AHEAD` after now: 422; without `sent`, with a retention,
its `at` within the retention: 422), its channel and release being the
repository's (with `--repo`; else 202 `"stored": false`, counted in a metric only), the
key's enrolment (403 unknown or revoked, 429 too many new keys), a report the key sent
already (200 `"duplicate": true`, counted once), the machine's rate and daily quota and the
newcomers' budget and a newcomer key's share of it (429). When the connection table is
crowded (`_conns`), a report of a key that is not established, and a request without the
admin token, get 503. The admin token, and a report accepted from an established key, vouch
for the connection they came on (the protocol's, in the scope: never `request.client`)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.release.fleet._admin import AdminApi
from greenlight.release.fleet._census import census_endpoint
from greenlight.release.fleet._conns import Connections
from greenlight.release.fleet._feedback_api import FeedbackApi
from greenlight.release.fleet._feedback_store import FeedbackLimits
from greenlight.release.fleet._guard import Guard
from greenlight.release.fleet._http import (
    BODY_MAX,
    ENROL_RATE,
    FRESH_AHEAD,
    FRESH_PAST,
    RATE,
    Labels,
    bearer,
    capped_body,
    dashboard,
    hosts_only,
    openapi,
    unsigned_fresh,
)
from greenlight.release.fleet._lease import Lease
from greenlight.release.fleet._rehearsals import rehearsals_endpoint
from greenlight.release.fleet._store import (
    FAILED,
    KEY_DAILY,
    NEWCOMER_KEY_BYTES,
    Store,
)
from greenlight.release.fleet._tasks import Background
from greenlight.release.fleet._writer import ReportWriter, StoreDown

__all__ = ["BODY_MAX", "CONNECTION", "ENROL_RATE", "RATE", "dashboard", "make_app", "openapi"]

CONNECTION = "greenlight.connection"
"""the ASGI scope's key for the connection a request came on (`_conns`' member), set by the
collector's protocol: what is vouched for, whatever a proxy's headers say the client is"""


REFUSALS = {
    "unknown": (403, "this machine's key is not enrolled here: the operator loads keys "
                     "(updater identity prints this machine's)"),
    "revoked": (403, "this machine's key was revoked"),
    "enrol-rate": (429, "too many new machine keys this minute; try later"),
    "rate": (429, "too many reports from this machine"),
    "quota": (429, f"this machine's key sent its {KEY_DAILY} reports of the day"),
    "key-budget": (429, f"this new machine key sent its {NEWCOMER_KEY_BYTES >> 10} KiB of "
                        "reports of the day; try later"),
    "budget": (429, "the collector's room for reports of new machine keys is full for "
                    "today; try later"),
}
BUSY = "the collector is busy: it keeps its last connections for machines it counts and the "\
       "admin; try later"


def make_app(store: Store, fleet_token: str, admin_token: str,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC),
             guard: Guard | None = None, tick: float = 10.0,
             log: Callable[[str], None] = lambda line: None, enrolment: str = "open",
             enrol_rate: int = ENROL_RATE, retention: timedelta | None = None,
             allowed_hosts: set[str] | None = None,
             connections: Connections | None = None,
             feedback: FeedbackLimits | None = None, lease: Lease | None = None) -> Any:
    """The collector's Starlette application (see the module's text); with `lease`, one of
    several collectors sharing the store's database, judging and signing only while it
    holds the lease (`_tasks`)."""

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from pydantic import ValidationError
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from greenlight.channels import (
        KEY_HEADER,
        SIGNATURE_HEADER,
        FleetReport,
        MachineKeyError,
        describe_validation,
        verified_sender,
    )

    # A registry of this app's own: two collectors in one process (tests) count apart.
    registry = CollectorRegistry()
    reports = Counter("greenlight_reports", "Reports accepted from established machine keys,"
                      " by channel, release (other past the first 64 without --repo), outcome",
                      ["channel", "release", "outcome"], registry=registry)
    refused = Counter("greenlight_reports_refused", "Reports refused, by HTTP status",
                      ["status"], registry=registry)
    moves = Counter("greenlight_rollout_moves", "Rollouts halted or advanced by this "
                    "collector", ["channel", "action"], registry=registry)
    latency = Histogram("greenlight_request_seconds", "Time to answer, by route",
                        ["route"], registry=registry)
    enrolments = Counter("greenlight_enrolments", "Machine keys enrolled, by the state they "
                         "start in", ["state"], registry=registry)
    unknown = Counter("greenlight_reports_unknown", "Reports about a channel or release the "
                      "repository does not have: answered, not stored", ["what"],
                      registry=registry)
    leading = Gauge("greenlight_collector_leading", "1 while this collector holds the judge's "
                    "lease (judges, signs, prunes)", registry=registry)
    table = connections if connections is not None else Connections()

    def vouch(request: Request, who: str) -> None:
        # the connection itself (the protocol's), never request.client: a proxy's
        # X-Forwarded-For rewrites that, and an in-process client has no connection
        member = request.scope.get(CONNECTION)
        if member is not None:
            table.vouch(member, who)

    labels = Labels(bounded=guard is None)

    def busy() -> Response:
        refused.labels("503").inc()
        return JSONResponse({"error": BUSY}, 503, headers={"Connection": "close"})

    def _moved(line: str | None) -> None:
        words = (line or "").split()
        if len(words) > 1 and words[0] in ("halted", "advanced", "paused"):  # "halted CH ..."
            moves.labels(words[1], words[0]).inc()

    notes = FeedbackApi(store, fleet_token, clock, log, enrolment, enrol_rate, feedback,
                        registry, guard, table.crowded, vouch, BUSY)  # _feedback_api

    def _refused(status: int, error: str) -> Response:
        refused.labels(str(status)).inc()
        return JSONResponse({"error": error}, status)

    writer = ReportWriter(store, enrolment, enrol_rate, log)  # group commit

    async def post_report(request: Request) -> Response:
        with latency.labels("/v1/reports").time():
            return await _post_report(request)

    async def _post_report(request: Request) -> Response:
        if not bearer(request.headers.get("authorization"), fleet_token):
            # Said where the fleet's operator looks, never with what was sent.
            client = request.client.host if request.client else "unknown"
            log(f"refused a report from {client}: the fleet token is missing or wrong")
            return _refused(401, "the fleet token is missing or wrong")
        body = await capped_body(request)
        if body is None:
            return _refused(413, f"a report is at most {BODY_MAX} bytes")
        try:  # inline: handing it to a thread (it lets go of the GIL) measured slower
            sender, key = verified_sender(request.headers.get(KEY_HEADER),
                                          request.headers.get(SIGNATURE_HEADER), body)
        except MachineKeyError as e:
            return _refused(401, str(e))
        try:
            report = FleetReport.model_validate_json(body)
        except ValidationError as e:
            return _refused(422, f"not a greenlight.report/1: {describe_validation(e)}")
        if report.installation != sender:
            return _refused(422, f"installation {report.installation} is not the id of the "
                                 f"key that signed it ({sender})")
        now = clock()
        if report.sent is not None:
            sent = report.sent if report.sent.tzinfo else report.sent.replace(tzinfo=UTC)
            if not now - FRESH_PAST <= sent <= now + FRESH_AHEAD:
                return _refused(422, f"sent at {sent.isoformat()}: a report is taken within "
                                     "24 hours of being sent, and at most 5 minutes ahead of "
                                     "the collector's clock (is the machine's clock right?)")
        elif retention is not None:
            # A report without `sent` is counted once by its body while its first copy is
            # kept: taken only while it would be, whenever it is replayed (its `at` within
            # the retention, less the hour it may be ahead, and at most that hour ahead).
            at = report.at if report.at.tzinfo else report.at.replace(tzinfo=UTC)
            if not unsigned_fresh(at, now, retention):
                return _refused(422, f"a report without `sent` is taken when it happened "
                                     f"within the collector's retention ({retention.days} "
                                     "days) and at most an hour ahead of its clock: this "
                                     f"one at {at.isoformat()}")
        if guard is not None and not (
                guard.knows(report.channel, report.release, refresh=False)
                or await run_in_threadpool(guard.knows, report.channel, report.release)):
            what = "release" if guard.knows(report.channel, None, refresh=False) else "channel"
            unknown.labels(what).inc()
            return JSONResponse({"accepted": True, "stored": False,
                                 "error": f"this repository has no such {what}"}, 202)
        if table.crowded() and not await run_in_threadpool(store.counts, sender, now):
            return busy()
        try:
            said, new, established = await writer.admitted(
                (report, report.model_dump_json(by_alias=True), now, key))
        except StoreDown:  # machines keep the report queued and send it again later
            return _refused(503, "the collector cannot store reports now; try later")
        if new:
            enrolments.labels(said).inc()
        if said in REFUSALS:
            status, error = REFUSALS[said]
            return _refused(status, error)
        if said == "duplicate":  # a resend, or a replay: answered, never counted again
            return JSONResponse({"accepted": True, "duplicate": True}, 200)
        if established:  # never a newcomer's or a pending key's: nobody counts those
            reports.labels(*labels(report.channel, report.release or "-"),
                           report.outcome).inc()
            vouch(request, sender)
        if said == "pending":
            return JSONResponse({"accepted": True, "machine": "pending"}, 202)
        task = None
        if report.outcome in FAILED and background.judge_soon(report.channel):
            task = BackgroundTask(background.judge, report.channel)
        return JSONResponse({"accepted": True}, 202, background=task)

    admins = AdminApi(store, admin_token, guard, lease, clock, log, enrolment, table.crowded,
                      vouch, busy, _moved)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def api(request: Request) -> Response:
        if table.crowded():
            return busy()
        return JSONResponse(openapi())

    async def page(request: Request) -> Response:
        if table.crowded():
            return busy()
        return HTMLResponse(dashboard(), headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                       "style-src 'unsafe-inline'; frame-ancestors 'none'; "
                                       "form-action 'self'; base-uri 'none'",
            "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"})

    # The page and the admin's endpoints answer only under a name the operator knows.
    host_checked = hosts_only(allowed_hosts)

    def prune() -> None:
        if retention is None:
            return
        keep = {(channel, plan["key"]) for (channel, _), plan in
                (guard.plans() if guard is not None else {}).items()}
        # never a report a replay of could still be fresh: it is what counts it once
        before = clock() - max(retention, FRESH_PAST + FRESH_AHEAD)
        n = store.prune(before, keep)
        if n:
            log(f"pruned {n} report(s) received over {retention.days} day(s) ago")
        n = store.prune_machines(before)
        if n:
            log(f"pruned {n} machine key(s) silent for {retention.days} day(s)")

    background = Background(guard, lease, tick, [prune, notes.prune], log, _moved, leading)

    admin = admins.admin
    return Starlette(routes=[
        Route("/v1/reports", post_report, methods=["POST"]),
        *admins.routes(host_checked),
        Route("/metrics", admin(metrics)),
        Route("/v1/census", host_checked(admin(census_endpoint(store)))),
        Route("/v1/rehearsals", host_checked(admin(rehearsals_endpoint(
            guard.path if guard is not None else None)))),
        *notes.routes(host_checked, admin),
        Route("/openapi.json", api),
        Route("/", host_checked(page)),
    ], lifespan=background.lifespan)
