"""The collector's user-feedback routes (`FeedbackApi`, mounted by `make_app`):

- `POST /v1/feedback`: a machine's `greenlight.feedback/1`, with the fleet token and the
  machine's signature over the body, as a report is posted;
- `POST /v1/feedback/import` (the admin token): an air-gapped machine's export, JSON lines
  `greenlight.feedback-export/1`, each verified with its own key and signature as if the
  machine had posted it; answered line by line;
- `GET /v1/feedback` (the admin token): newest first, filtered, a page at a time, as JSON or
  CSV; `GET /v1/feedback/{id}`: one, its whole document; `GET /v1/feedback/groups`: the
  dashboard's view (`_feedback_views`).

A feedback is admitted in this order: the fleet token (401), the body's size while it is read
(413, `FEEDBACK_MAX_BYTES`), the signature (401), UTF-8 (400), JSON (400), the wire format
and its limits (422; every text sanitised by the model: control characters escaped, the
person's line breaks kept), its `installation` being its key's id (422), log tails only with
the user's consent (422), its freshness (422: its signed `sent` within a day before and five
minutes after now; without `sent`, and in an import, written within the retention less an
hour and at most an hour ahead), the repository knowing its channel and release (with
`--repo`; else 202 `"stored": false`), the connection table (503 for a key not established
when it is crowded), then the store's admission (`FeedbackStore.admit`: 403, 429, 503, or
200 `"duplicate": true` for an id its key sent already). Every answer is one line of JSON.
"""

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from greenlight.release.fleet._feedback_doc import (
    DOCUMENTS_PAGE,
    ENTRY_SCHEMA,
    EXPORT_SCHEMA,
    FEEDBACK_PAGE,
    GROUPS_SCHEMA,
    IMPORT_LINES,
    IMPORT_MAX,
    IMPORT_SCHEMA,
    LIST_SCHEMA,
)
from greenlight.release.fleet._feedback_store import FeedbackLimits, about
from greenlight.release.fleet._feedback_views import feedback_csv
from greenlight.release.fleet._http import (
    FRESH_AHEAD,
    FRESH_PAST,
    UNSIGNED_AHEAD,
    bearer,
    capped_body,
    page_params,
    unsigned_fresh,
)
from greenlight.release.fleet._views import encode_cursor

__all__ = ["FeedbackApi", "Refused"]

_ID = re.compile(r"^[0-9a-f]{32}$")
_VERSION = re.compile(r"^[0-9A-Za-z.+!_-]{1,64}$")
_CHECK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")

Handler = Callable[[Any], Awaitable[Any]]


class Refused(Exception):
    """A feedback (or an import's line) refused: its HTTP status, the metric's reason, and
    one line that says why."""

    def __init__(self, status: int, reason: str, error: str) -> None:
        from greenlight.channels import printable

        super().__init__(printable(error, 300))
        self.status, self.reason = status, reason


class FeedbackApi:
    """The feedback routes of one collector app, over its store, tokens, clock, log, metrics
    registry, guard (with `--repo`) and connection table (`crowded`, `vouch`, and `busy`:
    what a request hears when the table is kept for others)."""

    def __init__(self, store: Any, fleet_token: str, clock: Callable[[], datetime],
                 log: Callable[[str], None], enrolment: str, enrol_rate: int,
                 limits: FeedbackLimits | None, registry: Any, guard: Any,
                 crowded: Callable[[], bool], vouch: Callable[[Any, str], None],
                 busy: str) -> None:
        from prometheus_client import Counter

        self.store, self.fleet_token, self.clock, self.log = store, fleet_token, clock, log
        self.enrolment, self.enrol_rate = enrolment, enrol_rate
        self.limits = limits if limits is not None else FeedbackLimits()
        self.guard, self.crowded, self.vouch, self.busy = guard, crowded, vouch, busy
        self.taken = Counter("greenlight_feedback", "User feedback taken, by result "
                             "(accepted, pending, duplicate) and how it came (post, import)",
                             ["result", "via"], registry=registry)
        self.refused = Counter("greenlight_feedback_refused", "User feedback refused (or not "
                               "stored), by reason", ["reason"], registry=registry)
        limits_ = self.limits
        self.refusals = {
            "unknown": (403, "this machine's key is not enrolled here: the operator loads "
                             "keys (updater identity prints this machine's)"),
            "revoked": (403, "this machine's key was revoked"),
            "enrol-rate": (429, "too many new machine keys this minute; try later"),
            "rate": (429, f"this machine sent its {limits_.daily} feedback of the day; try "
                          "later"),
            "newcomer-key": (429, f"a new machine key sends at most {limits_.newcomer_key} "
                                  "feedback a day until it is established; try later"),
            "newcomers": (429, "the collector's room for feedback from new machine keys is "
                               "full for today; try later"),
            "full": (503, "the collector keeps all the feedback it may; try later"),
        }

    def routes(self, host_checked: Callable[[Handler], Handler],
               admin: Callable[[Handler], Handler]) -> list[Any]:
        """The routes to mount: the machines' POST as reports are, the admin's behind the
        host check and the admin token."""
        from starlette.routing import Route

        def guarded(handler: Handler) -> Handler:
            return host_checked(admin(handler))

        return [Route("/v1/feedback", self.post, methods=["POST"]),
                Route("/v1/feedback", guarded(self.listing), methods=["GET"]),
                Route("/v1/feedback/import", guarded(self.imported), methods=["POST"]),
                Route("/v1/feedback/groups", guarded(self.groups), methods=["GET"]),
                Route("/v1/feedback/{id:str}", guarded(self.one), methods=["GET"])]

    def prune(self) -> None:
        """Delete feedback received over the retention ago (never one whose replay could
        still be fresh); said in one line when there was any."""
        retention = self.limits.retention
        n = self.store.feedback.prune(self.clock() - max(retention, FRESH_PAST + FRESH_AHEAD))
        if n:
            self.log(f"pruned {n} feedback received over {retention.days} day(s) ago")

    # --- machines ------------------------------------------------------------------------
    def _no(self, e: Refused) -> Any:
        from starlette.responses import JSONResponse

        self.refused.labels(e.reason).inc()
        return JSONResponse({"error": str(e)}, e.status)

    async def post(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from greenlight.channels import (
            FEEDBACK_MAX_BYTES,
            KEY_HEADER,
            SIGNATURE_HEADER,
            MachineKeyError,
            verified_sender,
        )

        try:
            if not bearer(request.headers.get("authorization"), self.fleet_token):
                client = request.client.host if request.client else "unknown"
                self.log(f"refused feedback from {client}: the fleet token is missing or "
                         "wrong")
                raise Refused(401, "token", "the fleet token is missing or wrong")
            body = await capped_body(request, FEEDBACK_MAX_BYTES)
            if body is None:
                raise Refused(413, "size", f"feedback is at most {FEEDBACK_MAX_BYTES} bytes")
            try:
                sender, key = verified_sender(request.headers.get(KEY_HEADER),
                                              request.headers.get(SIGNATURE_HEADER), body)
            except MachineKeyError as e:
                raise Refused(401, "signature", str(e)) from None
            now = self.clock()
            doc = self.checked(body, sender, now, imported=False)
            missing = await run_in_threadpool(self.unknown, doc)
            if missing is not None:
                self.refused.labels(f"unknown-{missing}").inc()
                return JSONResponse({"accepted": True, "stored": False,
                                     "error": f"this repository has no such {missing}"}, 202)
            if self.crowded() and not await run_in_threadpool(self.store.counts, sender, now):
                self.refused.labels("busy").inc()
                return JSONResponse({"error": self.busy}, 503, headers={"Connection": "close"})
            said, established = await run_in_threadpool(self.admit, doc, now, key, False)
        except Refused as e:
            return self._no(e)
        self.taken.labels(said, "post").inc()
        if said == "duplicate":  # a resend, or a replay: answered, never stored again
            return JSONResponse({"accepted": True, "duplicate": True}, 200)
        if established:
            self.vouch(request, sender)
        if said == "pending":
            return JSONResponse({"accepted": True, "machine": "pending"}, 202)
        return JSONResponse({"accepted": True}, 202)

    def checked(self, body: bytes, sender: str, now: datetime, imported: bool) -> Any:
        """`body` as a FeedbackReport from the machine `sender`, fresh at `now`.

        Raises:
            Refused: not UTF-8 or JSON (400), outside the wire format or its limits, not its
                key's, log tails without consent, or stale (422).
        """
        from pydantic import ValidationError

        from greenlight.channels import FeedbackReport, describe_validation

        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Refused(400, "encoding", f"not UTF-8 (at byte {e.start})") from None
        try:
            doc = FeedbackReport.model_validate_json(body)
        except ValidationError as e:
            if any(item["type"] == "json_invalid" for item in e.errors(include_url=False)):
                raise Refused(400, "json", "not JSON") from None
            raise Refused(422, "schema", "not a greenlight.feedback/1: "
                                         f"{describe_validation(e)}") from None
        if doc.installation != sender:
            raise Refused(422, "identity", f"installation {doc.installation} is not the id of "
                                           f"the key that signed it ({sender})")
        if doc.logs and not doc.logs_consent:
            raise Refused(422, "consent", "log tails without the user's consent "
                                          "(logs_consent) are refused")
        at = _aware(doc.at)
        retention = self.limits.retention
        if doc.sent is not None and not imported:
            sent = _aware(doc.sent)
            if not now - FRESH_PAST <= sent <= now + FRESH_AHEAD:
                raise Refused(422, "stale", f"sent at {sent.isoformat()}: feedback is taken "
                                            "within 24 hours of being sent, and at most 5 "
                                            "minutes ahead of the collector's clock (is the "
                                            "machine's clock right?)")
            if at > now + UNSIGNED_AHEAD:
                raise Refused(422, "stale", f"written at {at.isoformat()}, over an hour "
                                            "ahead of the collector's clock")
        elif not unsigned_fresh(at, now, retention):
            raise Refused(422, "stale", f"written at {at.isoformat()}: feedback without "
                                        "`sent`, or imported, is taken when written within "
                                        f"the collector's retention ({retention.days} days) "
                                        "and at most an hour ahead of its clock")
        return doc

    def unknown(self, doc: Any) -> str | None:
        """With `--repo`: "channel" or "release" when the repository never carried the
        feedback's channel or release (not stored: invented ones never reach the views).
        Known: the release it is about on its channel (the failed one, after a rollback),
        or the release the machine runs on its channel, or on any channel (after a fallback
        a machine runs another channel's release)."""
        if self.guard is None or doc.channel is None:
            return None
        channel, release = about(doc)
        for ch, rel in ((channel, release), (doc.channel, doc.release)):
            if ch is not None and self.guard.knows(ch, rel):
                return None
        if not self.guard.knows(doc.channel, None):
            return "channel"
        return None if doc.release is None or self.guard.carried(doc.release) else "release"

    def admit(self, doc: Any, now: datetime, key: str, imported: bool) -> tuple[str, bool]:
        """The store's admission: what happened (accepted, pending, duplicate) and whether
        the key is established.

        Raises:
            Refused: refused by the enrolment or a cap, or the store is down (503, logged).
        """
        try:
            said, _, established = self.store.feedback.admit(
                doc, now, key, self.enrolment, self.enrol_rate, self.limits, imported)
        except Exception as e:  # the database: one line, never its parameters
            from greenlight.channels import printable

            first = str(e).splitlines()[0] if str(e) else ""
            self.log(f"cannot store feedback: {type(e).__name__}: {printable(first, 200)}")
            raise Refused(503, "store", "the collector cannot store feedback now; try "
                                        "later") from None
        if said in self.refusals:
            status, error = self.refusals[said]
            raise Refused(status, said, error)
        return said, established

    # --- the admin -----------------------------------------------------------------------
    async def imported(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        body = await capped_body(request, IMPORT_MAX)
        try:
            if body is None:
                raise Refused(413, "import-size", f"an import is at most {IMPORT_MAX} bytes")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise Refused(400, "encoding", f"not UTF-8 (at byte {e.start})") from None
            lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1)
                     if line.strip()]
            if len(lines) > IMPORT_LINES:
                raise Refused(413, "import-size", f"an import is at most {IMPORT_LINES} "
                                                  "lines: split the file")
        except Refused as e:
            return self._no(e)
        results = await run_in_threadpool(lambda: [self._line(n, line) for n, line in lines])
        counts = {k: sum(r["result"] == k for r in results)
                  for k in ("accepted", "duplicate", "refused")}
        self.log(f"imported feedback: {counts['accepted']} accepted, {counts['duplicate']} "
                 f"duplicate, {counts['refused']} refused")
        return JSONResponse({"schema": IMPORT_SCHEMA, **counts, "lines": results})

    def _line(self, n: int, line: str) -> dict[str, Any]:
        """One line of an export, taken as if its machine had posted it."""
        from greenlight.channels import FEEDBACK_MAX_BYTES, MachineKeyError, verified_sender

        out: dict[str, Any] = {"line": n, "id": None, "machine": None}
        try:
            try:
                item = json.loads(line)
                if not (isinstance(item, dict) and item.get("schema") == EXPORT_SCHEMA
                        and all(isinstance(item.get(k), str)
                                for k in ("body", "key", "signature"))):
                    raise ValueError
            except (ValueError, RecursionError):
                raise Refused(422, "export", f"not a {EXPORT_SCHEMA} line") from None
            body = item["body"].encode("utf-8", "surrogatepass")
            if len(body) > FEEDBACK_MAX_BYTES:
                raise Refused(413, "size", f"feedback is at most {FEEDBACK_MAX_BYTES} bytes")
            try:
                sender, key = verified_sender(item["key"], item["signature"], body)
            except MachineKeyError as e:
                raise Refused(401, "signature", str(e)) from None
            out["machine"] = sender
            now = self.clock()
            doc = self.checked(body, sender, now, imported=True)
            out["id"] = doc.id
            missing = self.unknown(doc)
            if missing is not None:
                raise Refused(422, f"unknown-{missing}", f"this repository has no such "
                                                         f"{missing}")
            said, _ = self.admit(doc, now, key, True)
        except Refused as e:
            self.refused.labels(e.reason).inc()
            return {**out, "result": "refused", "reason": str(e)}
        self.taken.labels(said, "import").inc()
        if said == "duplicate":
            return {**out, "result": "duplicate", "reason": "this machine sent it already"}
        return {**out, "result": "accepted", "reason": None,
                **({"machine_state": "pending"} if said == "pending" else {})}

    async def listing(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, Response

        from greenlight.channels import printable

        query = request.query_params
        try:
            documents = query.get("documents", "0") == "1"
            limit, after = page_params(query, DOCUMENTS_PAGE if documents else FEEDBACK_PAGE,
                                       2)
            if after is not None:
                datetime.fromisoformat(after[0])
                int(after[1])
            form = query.get("format", "json")
            if form not in ("json", "csv"):
                raise ValueError("format: json or csv")
            filters = _filters(query)
        except ValueError as e:
            return JSONResponse({"error": printable(str(e), 200)}, 422)
        rows, last = await run_in_threadpool(
            self.store.feedback.listed, filters, limit,
            None if after is None else (after[0], after[1]), documents)
        cursor = None if last is None else encode_cursor(*last)
        if form == "csv":
            return Response(feedback_csv(rows), media_type="text/csv; charset=utf-8",
                            headers={"Greenlight-Next": cursor or "",
                                     "Content-Disposition": "attachment; "
                                                            'filename="feedback.csv"',
                                     "X-Content-Type-Options": "nosniff"})
        return JSONResponse({"schema": LIST_SCHEMA, "feedback": rows, "next": cursor})

    async def one(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        wanted, machine = request.path_params["id"], request.query_params.get("machine")
        if not _ID.match(wanted):
            return JSONResponse({"error": "no such feedback (an id is 32 hex digits)"}, 404)
        if machine is not None and not _ID.match(machine):
            return JSONResponse({"error": "machine: a machine id, 32 hex digits"}, 422)
        found = await run_in_threadpool(self.store.feedback.found, wanted, machine)
        if not found:
            return JSONResponse({"error": f"no such feedback: {wanted}"}, 404)
        if len(found) > 1:
            return JSONResponse({"error": f"{len(found)} machine keys sent feedback with id "
                                          f"{wanted}: say which with ?machine=",
                                 "machines": [f["machine"] for f in found]}, 409)
        return JSONResponse({"schema": ENTRY_SCHEMA, **found[0]})

    async def groups(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        return JSONResponse({"schema": GROUPS_SCHEMA,
                             "groups": await run_in_threadpool(self.store.feedback.groups)})


def _filters(query: Any) -> dict[str, Any]:
    """The list's filters from a request's query.

    Raises:
        ValueError: a filter that is not one (a version, a channel, a cohort, a check's
            name, an ISO 8601 time).
    """
    from greenlight.channels import COHORT_PATTERN, check_channel_name

    out: dict[str, Any] = {}
    for name, valid in (("release", _VERSION.match), ("cohort", re.compile(COHORT_PATTERN).match),
                        ("check", _CHECK.match)):
        value = query.get(name)
        if value is not None and not valid(value):
            raise ValueError(f"{name}: not a {name} name")
        out[name] = value
    channel = query.get("channel")
    out["channel"] = None if channel is None else check_channel_name(channel)
    since = query.get("since")
    if since is not None:
        try:
            out["since"] = _aware(datetime.fromisoformat(since))
        except ValueError:
            raise ValueError("since: an ISO 8601 time, such as 2026-01-31T12:00:00Z") from None
    return out


def _aware(at: datetime) -> datetime:
    """A time as UTC (one without an offset is UTC)."""
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
