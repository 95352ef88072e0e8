"""The collector's HTTP pieces that hold no state: its limits, the body read with a bound,
the bearer check, page parameters, the dashboard's page and the OpenAPI document."""

import hmac
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from greenlight.release.fleet._feedback_doc import feedback_openapi
from greenlight.release.fleet._views import decode_cursor

__all__ = ["BODY_MAX", "ENROL_RATE", "FRESH_AHEAD", "FRESH_PAST", "LABELS_MAX", "RATE",
           "UNSIGNED_AHEAD", "Labels", "bearer", "capped_body", "dashboard", "hosts_only",
           "openapi", "page_params", "unsigned_fresh"]

RATE = 10  # reports per machine key per minute
ENROL_RATE = 120  # new machine keys per minute, for the whole collector
BODY_MAX = 65536  # bytes of one report; read no further
FRESH_PAST = timedelta(hours=24)
"""how long after it was sent (its signed `sent`) a report is still taken"""
FRESH_AHEAD = timedelta(minutes=5)
"""how far ahead of the collector's clock a report's `sent` may be"""


async def capped_body(request: Any, limit: int = BODY_MAX) -> bytes | None:
    """The request's body, read as it arrives and abandoned past `limit` (None): memory
    stays flat whatever a client sends or claims in Content-Length."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def dashboard() -> str:
    """The dashboard page, shipped beside this module."""
    return resources.files("greenlight.release.fleet").joinpath("dashboard.html").read_text()


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the report and feedback APIs, their schemas from
    `FleetReport` and `FeedbackReport` themselves."""
    from greenlight.channels import FleetReport

    schema = FleetReport.model_json_schema(by_alias=True,
                                           ref_template="#/components/schemas/{model}")
    schemas = {**schema.pop("$defs", {}), "FleetReport": schema}
    error = {"content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    feedback_schemas, feedback_paths = feedback_openapi(error, bearer)
    schemas.update(feedback_schemas)
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
                    "200": {"description": "a report this machine key sent already "
                                           "(its id): answered, not counted again"},
                    "202": {"description": "accepted; `\"stored\": false` when the "
                                           "repository has no such channel or release"},
                    "401": {"description": "the fleet token is missing or wrong, or the "
                                           "body's signature (headers Greenlight-Key, "
                                           "Greenlight-Signature) does not verify", **error},
                    "403": {"description": "the machine key is revoked, or unknown where "
                                           "keys are preauthorized", **error},
                    "413": {"description": f"over {BODY_MAX} bytes", **error},
                    "422": {"description": "not a greenlight.report/1 within its limits, "
                                           "its installation is not its key's id, or it was "
                                           "sent over 24 hours ago or over 5 minutes ahead",
                            **error},
                    "429": {"description": f"over {RATE} reports a minute from this "
                                           "machine key, or its daily quota, or too many new "
                                           "keys or bytes from them", **error},
                    "503": {"description": "the collector cannot store reports now, or its "
                                           "connections are kept for the machines it counts",
                            **error}}}},
            "/v1/rollouts": {"get": {
                "summary": "Per channel and release: machines, outcomes, failed checks, the "
                           "rollout's position (the admin token); a page at a time",
                "security": bearer,
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": 200, "default": 200}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"},
                     "description": "the previous page's `next`"}],
                "responses": {"200": {"description": "greenlight.rollouts/1"},
                              "401": {"description": "the admin token is missing or wrong"}}}},
            "/v1/census": {"get": {
                "summary": "Which Greenlight versions, installed how, the machines on each "
                           "channel run, each machine by its latest report (the admin token)",
                "security": bearer,
                "parameters": [{"name": "channel", "in": "query", "schema": {
                    "type": "string"}, "description": "one channel (else every channel, "
                                                      "at most 200, `more` past them)"}],
                "responses": {"200": {"description": "greenlight.census/1: {channel, "
                                                     "machines, greenlight: {version: {kind: "
                                                     "machines}}, releases: {release: "
                                                     "machines}, cohorts: {cohort: "
                                                     "machines}}; a report without "
                                                     "`greenlight` counts as 0.2.0, kind "
                                                     "unknown; releases (the version of the "
                                                     "`after` key, else `before`) and cohorts "
                                                     "by each machine's latest report on the "
                                                     "channel itself, one channel's only"},
                              "401": {"description": "the admin token is missing or wrong"},
                              "422": {"description": "not a channel name", **error}}}},
            "/v1/rehearsals": {"get": {
                "summary": "The repository's last rehearsals, newest first, and the channel "
                           "changes started without a passed one (the admin token)",
                "security": bearer,
                "responses": {"200": {"description": "greenlight.rehearsals/1: {rehearsals: "
                                                     "[greenlight.rehearsal/1, at most 50], "
                                                     "overrides: [{at, action, channel, "
                                                     "release, by, refusal, reason}, the "
                                                     "last 50, newest first]}; without "
                                                     "--repo, both empty and a `note`"},
                              "401": {"description": "the admin token is missing or wrong"}}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (the admin token)", "security": bearer,
                "responses": {"200": {"description": "text exposition format"}}}},
            **feedback_paths,
        },
    }


UNSIGNED_AHEAD = timedelta(hours=1)
"""how far ahead of the collector's clock a report without `sent` may say it happened"""
LABELS_MAX = 64
"""(channel, release) label pairs of `greenlight_reports` without `--repo`; then other"""


def unsigned_fresh(at: datetime, now: datetime, retention: timedelta) -> bool:
    """Whether a report without `sent`, which happened `at`, is taken: only while its first
    copy would still be kept (counted once by its body), whenever it is replayed."""
    return now - retention + UNSIGNED_AHEAD <= at <= now + UNSIGNED_AHEAD


class Labels:
    """The (channel, release) labels of `greenlight_reports`: as they are when `bounded` is
    off (the repository's own: a report about anything else is not stored), else the first
    `LABELS_MAX` pairs seen, then "other"."""

    def __init__(self, bounded: bool) -> None:
        self.bounded, self.seen = bounded, set[tuple[str, str]]()

    def __call__(self, channel: str, release: str) -> tuple[str, str]:
        if self.bounded and (channel, release) not in self.seen:
            if len(self.seen) >= LABELS_MAX:
                return "other", "other"
            self.seen.add((channel, release))
        return channel, release


def hosts_only(allowed: set[str] | None) -> Any:
    """A wrapper of handlers that answer only under a name the operator knows (`allowed`;
    None: any): a page reached under another name (DNS rebinding) gets 421."""
    def host_checked(handler: Any) -> Any:
        async def checked(request: Any) -> Any:
            from starlette.responses import JSONResponse

            if allowed is not None and request.headers.get("host", "") not in allowed:
                return JSONResponse({"error": "unknown Host: add it with --allowed-host"}, 421)
            return await handler(request)
        return checked
    return host_checked


def bearer(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].encode(), token.encode())


def page_params(query: Any, most: int, parts: int) -> tuple[int, tuple[str, ...] | None]:
    """A page's `limit` (default and at most `most`) and `cursor` (decoded into `parts`
    strings) from a request's query.

    Raises:
        ValueError: a limit that is not a number from 1 to `most`, or a bad cursor.
    """
    limit = query.get("limit")
    if limit is None:
        n = most
    elif not limit.isdigit() or not 1 <= int(limit) <= most:
        raise ValueError(f"limit: a number from 1 to {most}")
    else:
        n = int(limit)
    cursor = query.get("cursor")
    return n, None if cursor is None else decode_cursor(cursor, parts)
