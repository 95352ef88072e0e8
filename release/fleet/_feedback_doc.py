"""User feedback's API, as the collector documents it: its limits and answer formats, and its
part of the OpenAPI document (`feedback_openapi`, merged into `openapi()`), its schemas from
the wire format's own model (`greenlight.channels.FeedbackReport`)."""

from typing import Any

from greenlight.release.fleet._feedback_store import (
    FEEDBACK_DAILY,
    FEEDBACK_NEWCOMER_KEY,
    FEEDBACK_NEWCOMERS,
    FEEDBACK_ROWS,
)

__all__ = ["DOCUMENTS_PAGE", "ENTRY_SCHEMA", "EXPORT_SCHEMA", "FEEDBACK_PAGE", "GROUPS_SCHEMA",
           "IMPORT_LINES", "IMPORT_MAX", "IMPORT_SCHEMA", "LIST_SCHEMA", "feedback_openapi"]

EXPORT_SCHEMA = "greenlight.feedback-export/1"
"""one line of an air-gapped machine's export: {schema, body (the exact JSON text of a
FeedbackReport), key and signature (its Greenlight-Key and Greenlight-Signature)}"""
IMPORT_SCHEMA = "greenlight.feedback-import/1"
LIST_SCHEMA = "greenlight.feedback-list/1"
ENTRY_SCHEMA = "greenlight.feedback-entry/1"
GROUPS_SCHEMA = "greenlight.feedback-groups/1"
IMPORT_MAX = 32 << 20
"""bytes of one export file imported at once"""
IMPORT_LINES = 5000
"""lines of one export file imported at once"""
FEEDBACK_PAGE = 200
"""feedback in one page of `GET /v1/feedback`"""
DOCUMENTS_PAGE = 20
"""feedback in one page of `GET /v1/feedback?documents=1` (each with its whole document)"""


def feedback_openapi(error: dict[str, Any], bearer: list[dict[str, list[str]]]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The feedback API's schemas and paths, for the collector's OpenAPI document."""
    from greenlight.channels import FEEDBACK_MAX_BYTES, FeedbackReport

    schema = FeedbackReport.model_json_schema(by_alias=True,
                                              ref_template="#/components/schemas/{model}")
    schemas = {**schema.pop("$defs", {}), "FeedbackReport": schema}
    filters = [{"name": name, "in": "query", "schema": {"type": "string"}, "description": what}
               for name, what in (("release", "the version the machine runs"),
                                  ("channel", "a channel name"),
                                  ("cohort", "a cohort, as os-major/arch/label"),
                                  ("check", "the failing check it is filed under"),
                                  ("since", "received at or after (ISO 8601)"))]
    page = [{"name": "limit", "in": "query", "schema": {
                "type": "integer", "minimum": 1, "maximum": FEEDBACK_PAGE}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"},
             "description": "the previous page's `next`"},
            {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]},
             "description": "csv: text/csv, every cell a spreadsheet would take for a formula "
                            "neutralised; the next page's cursor in the Greenlight-Next header"},
            {"name": "documents", "in": "query", "schema": {"enum": ["0", "1"]},
             "description": f"1: each with its whole document (pages of at most "
                            f"{DOCUMENTS_PAGE})"}]
    admin_only = {"401": {"description": "the admin token is missing or wrong", **error}}
    paths = {
        "/v1/feedback": {
            "post": {
                "summary": "What the person in front of a machine wrote, with the evidence "
                           "Greenlight attaches (the fleet token and the machine's "
                           "signature, as a report)",
                "security": bearer,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/FeedbackReport"}}}},
                "responses": {
                    "200": {"description": "`\"duplicate\": true`: this machine key sent "
                                           "this id already (a resend or a replay): "
                                           "answered, not stored again"},
                    "202": {"description": "stored (`\"machine\": \"pending\"` from a key "
                                           "awaiting approval); `\"stored\": false` when the "
                                           "repository has no such channel or release"},
                    "400": {"description": "not UTF-8, or not JSON", **error},
                    "401": {"description": "the fleet token is missing or wrong, or the "
                                           "signature does not verify", **error},
                    "403": {"description": "the machine key is revoked, or unknown where "
                                           "keys are preauthorized", **error},
                    "413": {"description": f"over {FEEDBACK_MAX_BYTES} bytes", **error},
                    "422": {"description": "not a greenlight.feedback/1 within its limits, "
                                           "its installation is not its key's id, log tails "
                                           "without the user's consent, or stale: sent over "
                                           "24 hours ago (or, without `sent`, written "
                                           "before the retention)", **error},
                    "429": {"description": f"over {FEEDBACK_DAILY} a day from this machine "
                                           f"key (by default), over {FEEDBACK_NEWCOMER_KEY} "
                                           "from a key that counts for nothing yet, over "
                                           f"{FEEDBACK_NEWCOMERS} from all such keys, or "
                                           "too many new keys: the machine keeps it and "
                                           "sends it later", **error},
                    "503": {"description": f"the store holds {FEEDBACK_ROWS} (by default; "
                                           "three quarters for keys not established), or "
                                           "cannot store now, or the connections are kept "
                                           "for the machines the collector counts: the "
                                           "machine keeps it and sends it later", **error}}},
            "get": {
                "summary": "Feedback, newest received first, a page at a time (the admin "
                           "token); a revoked key's left out",
                "security": bearer, "parameters": [*filters, *page],
                "responses": {"200": {"description": f"{LIST_SCHEMA}: {{feedback: [{{id, "
                                                     "machine, machine_state, received, at, "
                                                     "channel, release, release_key, "
                                                     "cohort, check, incident_release, "
                                                     "source, text}], next}"},
                              "422": {"description": "a filter, limit or cursor that is not "
                                                     "one", **error}, **admin_only}}},
        "/v1/feedback/import": {"post": {
            "summary": "An air-gapped machine's export (the admin token): JSON lines "
                       f"{EXPORT_SCHEMA}, each verified with its own key and signature as "
                       "if the machine had posted it (its per-key caps aside)",
            "security": bearer,
            "requestBody": {"required": True, "content": {"application/x-ndjson": {
                "schema": {"type": "string"}}}},
            "responses": {"200": {"description": f"{IMPORT_SCHEMA}: {{accepted, duplicate, "
                                                 "refused, lines: [{line, id, machine, "
                                                 "result: accepted|duplicate|refused, "
                                                 "reason}]}"},
                          "400": {"description": "not UTF-8", **error},
                          "413": {"description": f"over {IMPORT_MAX} bytes or "
                                                 f"{IMPORT_LINES} lines", **error},
                          **admin_only}}},
        "/v1/feedback/groups": {"get": {
            "summary": "The dashboard's view: per channel, release and cohort, the feedback "
                       "and its latest texts with the failing check's evidence, beside the "
                       "outcomes of the reports (the admin token)",
            "security": bearer,
            "responses": {"200": {"description": GROUPS_SCHEMA}, **admin_only}}},
        "/v1/feedback/{id}": {"get": {
            "summary": "One feedback, its whole document (the admin token)",
            "security": bearer,
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
                           {"name": "machine", "in": "query", "schema": {"type": "string"},
                            "description": "the machine that sent it, when several keys "
                                           "sent one id"}],
            "responses": {"200": {"description": ENTRY_SCHEMA},
                          "404": {"description": "no such feedback", **error},
                          "409": {"description": "several machine keys sent this id: "
                                                 "say which with ?machine=", **error},
                          **admin_only}}},
    }
    return schemas, paths
