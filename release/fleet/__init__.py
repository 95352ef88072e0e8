"""The fleet: the collector where machines send their reports, and its guard of planned
rollouts.

- `_store.py`: the reports table (SQLite or PostgreSQL);
- `_schema.py` and `migrations/`: the schema's versions (Alembic), checked before serving;
- `_lease.py`: the judge's lease among replicas, and the fence every signed state passes;
- `_tasks.py`: the work beside the requests (the lease, judging, pruning);
- `_judge.py`: the pure halt rule, `judge(position, evidence, now)`, and `_evidence.py`, what
  counts as its evidence (which keys, which reports);
- `_guard.py`: gathers, asks the judge, signs;
- `_views.py`: the admin's views of the store, a bounded page at a time;
- `_census.py`: the census of the Greenlight versions the machines on each channel run;
- `_feedback_store.py`, `_feedback_views.py`, `_feedback_api.py`, `_feedback_doc.py`: user
  feedback (`greenlight.feedback/1`): its table and caps, the dashboard's groups and CSV, the
  routes, and their part of the OpenAPI document;
- `_api.py`, `_http.py` and `dashboard.html`: the HTTP API (the machines' report route, and
  the app put together) and the page; `_admin.py`, the admin's guard and routes;
  `_writer.py`, the reports' group commit;
- `_conns.py`: the table of open connections (bounded in all and per address);
- `_server.py`: start-up, token files, and the client of `release rollout status`.


A Starlette application served by uvicorn on 127.0.0.1. It keeps nothing in memory between
requests (every answer comes from the database), so any number of replicas can share one
PostgreSQL behind a load balancer; SQLite (a file, no set-up) is the default for one
collector. SQLAlchemy Core speaks to both; Alembic versions the schema.

- `POST /v1/reports` needs the fleet token (`Authorization: Bearer ...`). A report is
  validated against the client's own model (`greenlight.report/1`); one installation may send
  at most `RATE` reports a minute (then 429, and the client backs off).
- `GET /v1/rollouts` needs the admin token: per channel and release, the machines reporting
  (distinct installation ids), upgraded, rolled back, dead ends, each failure under the
  release it belongs to (a crash on stop under the release left), the failing checks ranked
  with an example summary, the outcomes minute by minute, and a planned rollout's step and
  who halted it and why.
- `GET /v1/census` needs the admin token: which Greenlight versions (and installed how) the
  machines on each channel run, each machine counted once, by its latest report.
- `POST /v1/feedback` (the fleet token and the machine's signature, as a report): what a
  machine's user wrote, with its evidence; `POST /v1/feedback/import`, `GET /v1/feedback`,
  `GET /v1/feedback/groups` and `GET /v1/feedback/{id}` need the admin token.
- `GET /` is the dashboard: a page with no data of its own that asks `/v1/rollouts` with the
  admin token the person gives (kept in the page's session storage, never in a URL that
  reaches the server) and draws the table and a chart.

With `--repo` (and the keys of `rollout-<channel>`, snapshot and timestamp), the collector
guards planned rollouts (`Guard`): the replica holding the judge's lease (`_lease`) judges
a channel as soon as a failure reaches it or it sees one another replica stored, and every
`--tick` seconds moves releases along their steps once each step has soaked. A halt or a
step is a signed `rollouts/<channel>.json` published with a new snapshot and timestamp,
under the repository's lock and through the lease's fence.

Tokens are compared in constant time and never logged.
"""

from greenlight.release.fleet._api import RATE, make_app
from greenlight.release.fleet._feedback_store import (
    FEEDBACK_NEWCOMER_KEY,
    FeedbackLimits,
    FeedbackStore,
)
from greenlight.release.fleet._feedback_views import feedback_csv, neutralised
from greenlight.release.fleet._guard import Guard
from greenlight.release.fleet._judge import Evidence, RolloutPosition, Verdict, judge
from greenlight.release.fleet._server import (
    admin_call,
    fetch_census,
    fetch_rollouts,
    migrate_database,
    serve_collector,
)
from greenlight.release.fleet._store import Store

__all__ = ["FEEDBACK_NEWCOMER_KEY", "RATE", "Evidence", "FeedbackLimits", "FeedbackStore",
           "Guard", "RolloutPosition", "Store", "Verdict", "admin_call", "feedback_csv",
           "fetch_census", "fetch_rollouts", "judge", "make_app", "migrate_database", "neutralised",
           "serve_collector"]
