"""`release collector`: where machines send their fleet reports.

A Starlette application served by uvicorn on 127.0.0.1. It keeps nothing in memory between
requests (every answer comes from the database), so several collector processes can share
one PostgreSQL; SQLite (a file, no set-up) is the default. SQLAlchemy Core speaks to both.

- `POST /v1/reports` needs the fleet token (`Authorization: Bearer ...`). A report is
  validated against the client's own model (`greenlight.report/1`); one installation may send
  at most `RATE` reports a minute (then 429, and the client backs off).
- `GET /v1/rollouts` and the dashboard `GET /` need the admin token: per channel and release,
  the machines reporting (distinct installation ids), upgraded, rolled back, dead ends, and
  the failing checks ranked with an example summary.

Tokens are compared in constant time and never logged.
"""

import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["RATE", "Store", "make_app", "serve_collector"]

RATE = 10  # reports per installation per minute


class Store:
    """The reports table, through SQLAlchemy Core (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        meta = sa.MetaData()
        self.reports = sa.Table(
            "reports", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("installation", sa.String(32), nullable=False),
            sa.Column("channel", sa.String(64), nullable=False),
            sa.Column("release", sa.String(128)),
            sa.Column("release_key", sa.String(160)),
            sa.Column("outcome", sa.String(32), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("received", sa.DateTime(timezone=True), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.Index("reports_release", "channel", "release"),
            sa.Index("reports_installation", "installation", "received"),
        )
        meta.create_all(self.engine)  # idempotent: each process may run it

    def recent(self, installation: str, since: datetime) -> int:
        sa, t = self.sa, self.reports
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(t).where(
                t.c.installation == installation, t.c.received >= since)).scalar_one())

    def add(self, report: Any, body: str, received: datetime) -> None:
        with self.engine.begin() as c:
            c.execute(self.reports.insert().values(
                installation=report.installation, channel=report.channel,
                release=report.release, release_key=report.release_key,
                outcome=report.outcome, at=report.at, received=received, body=body))

    def rollouts(self) -> list[dict[str, Any]]:
        """Per channel and release: distinct machines per outcome, and the failing checks."""
        sa, t = self.sa, self.reports
        with self.engine.connect() as c:
            counts = c.execute(sa.select(
                t.c.channel, t.c.release, t.c.outcome,
                sa.func.count(sa.distinct(t.c.installation)),
            ).group_by(t.c.channel, t.c.release, t.c.outcome)).all()
            failing = c.execute(sa.select(t.c.channel, t.c.release, t.c.body).where(
                t.c.outcome.in_(("rolled-back", "dead-end")))).all()
            machines = c.execute(sa.select(
                t.c.channel, t.c.release, sa.func.count(sa.distinct(t.c.installation)),
            ).group_by(t.c.channel, t.c.release)).all()
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for channel, version, total in machines:
            out[(channel, version)] = {"channel": channel, "release": version,
                                       "machines": int(total), "outcomes": {}, "checks": []}
        for channel, version, outcome, n in counts:
            out[(channel, version)]["outcomes"][outcome] = int(n)
        ranked: dict[tuple[str, str], dict[str, list[str]]] = {}
        for channel, version, body in failing:
            for check in json.loads(body).get("failed_checks", []):
                ranked.setdefault((channel, version), {}).setdefault(
                    check["name"], []).append(check["summary"])
        for key, checks in ranked.items():
            out[key]["checks"] = [{"name": name, "reports": len(s), "example": s[0]}
                                  for name, s in sorted(checks.items(),
                                                        key=lambda kv: -len(kv[1]))]
        return sorted(out.values(), key=lambda r: (r["channel"], r["release"] or ""))


def _bearer(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].encode(), token.encode())


def _page(rollouts: list[dict[str, Any]]) -> str:
    rows = []
    for r in rollouts:
        o = r["outcomes"]
        bad = o.get("rolled-back", 0) + o.get("dead-end", 0)
        width = 0 if not r["machines"] else round(200 * bad / r["machines"])
        checks = ", ".join(f"{escape(c['name'])} ({c['reports']}): {escape(c['example'])}"
                           for c in r["checks"][:3]) or "-"
        rows.append(
            f"<tr><td>{escape(r['channel'])}</td><td>{escape(str(r['release']))}</td>"
            f"<td>{r['machines']}</td><td>{o.get('upgraded', 0)}</td>"
            f"<td>{o.get('rolled-back', 0)}</td><td>{o.get('dead-end', 0)}</td>"
            f"<td><svg width='200' height='10'><rect width='200' height='10' fill='#cde'/>"
            f"<rect width='{width}' height='10' fill='#c33'/></svg></td>"
            f"<td class='checks'>{checks}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Greenlight fleet</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 8px;text-align:left}</style>"
            "</head><body><h1>Greenlight fleet</h1><table><tr><th>channel</th><th>release</th>"
            "<th>machines</th><th>upgraded</th><th>rolled back</th><th>dead ends</th>"
            "<th>failing share</th><th>top failed checks</th></tr>"
            + "".join(rows) + "</table></body></html>")


def make_app(store: Store, fleet_token: str, admin_token: str,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Any:
    from pydantic import ValidationError
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from greenlight.updater.store import FleetReport

    async def post_report(request: Request) -> Response:
        if not _bearer(request.headers.get("authorization"), fleet_token):
            return JSONResponse({"error": "the fleet token is missing or wrong"}, 401)
        body = (await request.body())[:65536]
        try:
            report = FleetReport.model_validate_json(body)
        except ValidationError as e:
            return JSONResponse({"error": f"not a greenlight.report/1: {e.errors()[0]['msg']}"},
                                422)
        now = clock()
        if store.recent(report.installation, now - timedelta(minutes=1)) >= RATE:
            return JSONResponse({"error": "too many reports from this installation"}, 429)
        store.add(report, report.model_dump_json(by_alias=True), now)
        return JSONResponse({"accepted": True}, 202)

    def admin(handler: Callable[[Request], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            header = request.headers.get("authorization") or (
                f"Bearer {request.cookies.get('admin', '')}")
            if not _bearer(header, admin_token):
                return JSONResponse({"error": "the admin token is missing or wrong"}, 401)
            return await handler(request)
        return guarded

    async def rollouts(request: Request) -> Response:
        return JSONResponse({"schema": "greenlight.rollouts/1", "rollouts": store.rollouts()})

    async def page(request: Request) -> Response:
        return HTMLResponse(_page(store.rollouts()))

    return Starlette(routes=[
        Route("/v1/reports", post_report, methods=["POST"]),
        Route("/v1/rollouts", admin(rollouts)),
        Route("/", admin(page)),
    ])


def _read_token(path: Path, what: str) -> str:
    from greenlight.release._errors import ReleaseError

    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ReleaseError(f"{what} {path}: cannot read: {e.strerror}") from None
    if len(token) < 16 or any(ch.isspace() for ch in token):
        raise ReleaseError(f"{what} {path}: must hold one token of at least 16 characters")
    return token


def serve_collector(db: str, port: int, fleet_token_file: Path, admin_token_file: Path,
                    ready: Callable[[str], None] | None = None) -> None:
    """Run the collector on 127.0.0.1:`port` until interrupted."""
    import uvicorn

    from greenlight.release._errors import ReleaseError

    fleet = _read_token(fleet_token_file, "--fleet-token-file")
    admin_token = _read_token(admin_token_file, "--admin-token-file")
    try:
        store = Store(db)
    except Exception as e:  # a bad URL or an unreachable database: one line
        raise ReleaseError(f"--db: cannot open the database: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
    config = uvicorn.Config(make_app(store, fleet, admin_token), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if ready is not None:
        ready(f"http://127.0.0.1:{port}/")
    server.run()
