"""`release collector`: where machines send their fleet reports.

A Starlette application served by uvicorn on 127.0.0.1. It keeps nothing in memory between
requests (every answer comes from the database), so several collector processes can share
one PostgreSQL; SQLite (a file, no set-up) is the default. SQLAlchemy Core speaks to both.

- `POST /v1/reports` needs the fleet token (`Authorization: Bearer ...`). A report is
  validated against the client's own model (`greenlight.report/1`); one installation may send
  at most `RATE` reports a minute (then 429, and the client backs off).
- `GET /v1/rollouts` needs the admin token: per channel and release, the machines reporting
  (distinct installation ids), upgraded, rolled back, dead ends, the failing checks ranked
  with an example summary, the outcomes minute by minute, and a planned rollout's step and
  who halted it and why.
- `GET /` is the dashboard: a page with no data of its own that asks `/v1/rollouts` with the
  admin token the person gives (kept in the page's session storage, never in a URL that
  reaches the server) and draws the table and a chart.

With `--repo` (and the keys of `rollout-<channel>`, snapshot and timestamp), the collector
guards planned rollouts (`Guard`): a report of a failure triggers a judgement of its channel
at once, and a timer every `--tick` seconds moves releases along their steps once each step
has soaked. A halt or a step is a signed `rollouts/<channel>.json` published with a new
snapshot and timestamp, under the repository's lock, so several collectors may share it.

Tokens are compared in constant time and never logged.
"""

import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["RATE", "Guard", "Store", "fetch_rollouts", "make_app", "serve_collector"]

FAILED = ("rolled-back", "dead-end")
JUDGED = ("upgraded", *FAILED)

RATE = 10  # reports per installation per minute


class Store:
    """The reports table, through SQLAlchemy Core (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        sqlite = url.startswith("sqlite")
        # Writes run on the event loop, one at a time: on two cores a thread pool cost more
        # in switching than it gained in concurrent commits, for PostgreSQL too (measured:
        # 664 -> 497 reports/s at 16 in flight).
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=False)
        if sqlite:
            # A write-ahead log, synced at checkpoints: a report accepted survives the
            # collector's crash; a power cut may lose the last few, which machines do not
            # resend. Several processes on one file wait for each other, not fail.
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(connection: Any, record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=5000")
                cursor.close()
        elif url.startswith("postgresql"):
            # The same trade on PostgreSQL: a commit does not wait for its WAL flush, so a
            # crash of the database may lose the last fraction of a second of reports, never
            # its consistency.
            @sa.event.listens_for(self.engine, "connect")
            def _async_commit(connection: Any, record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("SET synchronous_commit = off")
                cursor.close()
                connection.commit()
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

    def accept(self, report: Any, body: str, received: datetime, rate: int) -> bool:
        """Store a report unless its installation sent `rate` in the minute before: one
        transaction, one connection. Returns whether it was stored."""
        sa, t = self.sa, self.reports
        with self.engine.begin() as c:
            recent = c.execute(sa.select(sa.func.count()).select_from(t).where(
                t.c.installation == report.installation,
                t.c.received >= received - timedelta(minutes=1))).scalar_one()
            if int(recent) >= rate:
                return False
            c.execute(t.insert().values(
                installation=report.installation, channel=report.channel,
                release=report.release, release_key=report.release_key,
                outcome=report.outcome, at=report.at, received=received, body=body))
        return True

    def judged(self, channel: str, release_key: str, since: datetime | None
               ) -> tuple[int, int, tuple[str, str] | None]:
        """For a rollout's halt rule: distinct machines that failed `release_key`, distinct
        machines that reported on it at all, and the most failed check with an example."""
        sa, t = self.sa, self.reports
        where = [t.c.channel == channel, t.c.release_key == release_key,
                 t.c.outcome.in_(JUDGED)]
        if since is not None:
            where.append(t.c.received >= since)
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.outcome, sa.func.count(sa.distinct(
                t.c.installation))).where(*where).group_by(t.c.outcome)).all()
            total = int(c.execute(sa.select(sa.func.count(sa.distinct(t.c.installation)))
                                  .where(*where)).scalar_one())
            bodies = c.execute(sa.select(t.c.body).where(*where, t.c.outcome.in_(FAILED))
                               .limit(200)).scalars().all()
        failed = sum(int(n) for outcome, n in rows if outcome in FAILED)
        checks: dict[str, list[str]] = {}
        for body in bodies:
            for check in json.loads(body).get("failed_checks", []):
                checks.setdefault(check["name"], []).append(check["summary"])
        top = max(checks.items(), key=lambda kv: len(kv[1]), default=None)
        return failed, total, None if top is None else (top[0], top[1][0])

    def timeline(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Outcomes per minute received, per channel and release."""
        sa, t = self.sa, self.reports
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.channel, t.c.release, t.c.outcome, t.c.received)
                             .where(t.c.outcome.in_(JUDGED))).all()
        series: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for channel, version, outcome, received in rows:
            received = (received.astimezone(UTC) if received.tzinfo
                        else received.replace(tzinfo=UTC))
            minute = received.replace(second=0, microsecond=0).isoformat()
            point = series.setdefault((channel, version), {}).setdefault(
                minute, {"t": minute, **{o: 0 for o in JUDGED}})
            point[outcome] += 1
        return {k: sorted(v.values(), key=lambda p: p["t"]) for k, v in series.items()}

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
        for key, points in self.timeline().items():
            if key in out:
                out[key]["timeline"] = points
        return sorted(out.values(), key=lambda r: (r["channel"], r["release"] or ""))


class Guard:
    """Halts and advances planned rollouts, signing with the online `rollout-<channel>` key
    (and the snapshot and timestamp keys) found in `keys`."""

    def __init__(self, repo: Path, keys: Path | None, store: Store,
                 log: Callable[[str], None] = lambda line: None) -> None:
        from greenlight.release._keys import KeyStore
        from greenlight.release._repository import recorded_keys_folder

        self.path, self.store, self.log = repo, store, log
        self.keys = KeyStore(keys if keys is not None else recorded_keys_folder(repo))

    def _repo(self) -> Any:
        """The repository as it is on disk now (another collector may have changed it)."""
        from greenlight.release._repository import FileRepository

        return FileRepository(self.path, self.keys)

    def channels(self) -> list[str]:
        from greenlight.release._channels import channels

        return channels(self._repo())

    def judge(self, channel: str) -> str | None:
        """Halt the channel's planned rollout if its rule is met, else move it one step
        along if the step has soaked. Returns what it did, in one line, or None."""
        from greenlight.channels import now
        from greenlight.release._rollouts import locked, planned, write_state

        repo = self._repo()
        with locked(repo):
            plan = planned(repo, channel)
            if plan is None or plan.halted:
                return None
            rule = plan.plan.halt
            failed, total, top = self.store.judged(channel, plan.key, plan.counted_since)
            version = plan.channel_file.release
            if failed >= rule.rollbacks or (total >= rule.min_reports
                                            and failed / total > rule.failure_ratio):
                reason = (f"{failed} of {total} machines reporting on {version} rolled back"
                          + (f"; most failed check {top[0]}: {top[1]}" if top else ""))[:400]
                with repo.all_or_nothing():
                    write_state(repo, plan.next_state("collector", halted=True, reason=reason))
                line = f"halted {channel} {version} at {plan.plan.steps[plan.step]}%: {reason}"
            elif (plan.step < len(plan.plan.steps) - 1
                  and (now() - plan.step_began).total_seconds() >= plan.plan.soak):
                with repo.all_or_nothing():
                    write_state(repo, plan.next_state("collector", step=plan.step + 1))
                line = (f"advanced {channel} {version} to step {plan.step + 2} of "
                        f"{len(plan.plan.steps)} ({plan.plan.steps[plan.step + 1]}%)")
            else:
                return None
        self.log(line)
        return line

    def tick(self) -> list[str]:
        done = []
        for channel in self.channels():
            try:
                line = self.judge(channel)
            except Exception as e:  # one channel's trouble never stops the others
                line = f"cannot judge {channel}: {type(e).__name__}: {e}"
                self.log(line)
            if line:
                done.append(line)
        return done

    def plans(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each planned rollout's position, by channel and version, for `/v1/rollouts`."""
        from greenlight.release._rollouts import planned

        repo = self._repo()
        out = {}
        for channel in self.channels():
            plan = planned(repo, channel)
            if plan is None:
                continue
            signed = plan.channel_file.rollout
            state = plan.state
            halted_by_signers = signed is not None and signed.halted
            out[(channel, plan.channel_file.release)] = {
                "steps": plan.plan.steps, "step": plan.step,
                "percent": plan.plan.steps[plan.step], "soak": plan.plan.soak,
                "halted": plan.halted,
                "by": "the channel's signers" if halted_by_signers else
                      (state.by if state else None),
                "reason": "release rollout --halt" if halted_by_signers else
                          (state.reason if state else None),
                "at": state.at.isoformat() if state else None,
            }
        return out


def fetch_rollouts(url: str, admin_token_file: Path) -> dict[str, Any]:
    """`GET /v1/rollouts` of a collector, for `release rollout status`."""
    import httpx

    from greenlight.release._errors import ReleaseError

    token = _read_token(admin_token_file, "--admin-token-file")
    target = url.rstrip("/") + "/v1/rollouts"
    try:
        answer = httpx.get(target, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except httpx.HTTPError as e:
        raise ReleaseError(f"cannot reach the collector at {target}: {e}") from None
    if answer.status_code != 200:
        raise ReleaseError(f"the collector at {target} answered {answer.status_code}: "
                           f"{answer.text[:200]}")
    data: dict[str, Any] = answer.json()
    return data


def _bearer(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].encode(), token.encode())


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Greenlight fleet</title>
<style>
body{font-family:sans-serif;margin:1.5em}td,th{padding:4px 8px;text-align:left;vertical-align:top}
.halted{color:#b00;font-weight:bold}.chart{margin:.5em 0 1.5em}
</style></head><body>
<h1>Greenlight fleet</h1>
<form id="login" hidden><label>Admin token <input id="token" type="password"></label>
<button>Show</button></form>
<p id="status">loading...</p>
<table id="rollouts" hidden><thead><tr><th>channel</th><th>release</th><th>machines</th>
<th>upgraded</th><th>rolled back</th><th>dead ends</th><th>rollout</th>
<th>top failed checks</th></tr></thead><tbody></tbody></table>
<div id="charts"></div>
<script>
// The token comes from the fragment (#token=..., never sent to the server) or the form, and
// stays in this tab's session storage.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem("admin", fragment.get("token"));
  history.replaceState(null, "", location.pathname);
}
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
};
const SVG = "http://www.w3.org/2000/svg";
function chart(r) {
  // Outcomes per minute: a stacked bar each, upgraded (green) under failed (red).
  const points = r.timeline || [], w = 24, h = 80;
  const top = Math.max(1, ...points.map(p => p.upgraded + p["rolled-back"] + p["dead-end"]));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", Math.max(1, points.length) * w + 10);
  svg.setAttribute("height", h + 20);
  svg.setAttribute("class", "chart");
  svg.setAttribute("data-release", r.channel + " " + r.release);
  points.forEach((p, i) => {
    const failed = p["rolled-back"] + p["dead-end"];
    [[p.upgraded, "#3a3", 0], [failed, "#c33", p.upgraded]].forEach(([n, color, below]) => {
      if (!n) return;
      const bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("x", i * w + 5); bar.setAttribute("width", w - 4);
      bar.setAttribute("y", h - (below + n) / top * h); bar.setAttribute("height", n / top * h);
      bar.setAttribute("fill", color);
      const title = document.createElementNS(SVG, "title");
      title.textContent = p.t + ": " + n + (color === "#3a3" ? " upgraded" : " failed");
      bar.appendChild(title);
      svg.appendChild(bar);
    });
  });
  return svg;
}
async function show() {
  const token = sessionStorage.getItem("admin");
  if (!token) { document.getElementById("login").hidden = false;
                document.getElementById("status").textContent = "admin token needed"; return; }
  const answer = await fetch("/v1/rollouts", {headers: {Authorization: "Bearer " + token}});
  if (answer.status !== 200) {
    sessionStorage.removeItem("admin");
    document.getElementById("status").textContent = "refused: " + answer.status;
    document.getElementById("login").hidden = false;
    return;
  }
  const data = await answer.json();
  const body = document.querySelector("#rollouts tbody");
  body.replaceChildren();
  const charts = document.getElementById("charts");
  charts.replaceChildren();
  for (const r of data.rollouts) {
    const o = r.outcomes, row = el("tr");
    row.dataset.release = r.channel + " " + r.release;
    [r.channel, r.release, r.machines, o.upgraded || 0, o["rolled-back"] || 0,
     o["dead-end"] || 0].forEach(v => row.appendChild(el("td", String(v))));
    const plan = r.plan;
    row.appendChild(plan ? el("td", plan.halted ?
        "HALTED at " + plan.percent + "% by " + plan.by + ": " + plan.reason :
        "step " + (plan.step + 1) + " of " + plan.steps.length + " (" + plan.percent + "%)",
        plan.halted ? "halted" : "") : el("td", "-"));
    row.appendChild(el("td", r.checks.slice(0, 3).map(
        c => c.name + " (" + c.reports + "): " + c.example).join("; ") || "-"));
    body.appendChild(row);
    charts.appendChild(el("h3", r.channel + " " + r.release + ": outcomes per minute"));
    charts.appendChild(chart(r));
  }
  document.getElementById("rollouts").hidden = false;
  document.getElementById("status").textContent =
    data.rollouts.length + " releases reported on";
}
document.getElementById("login").addEventListener("submit", e => {
  e.preventDefault();
  sessionStorage.setItem("admin", document.getElementById("token").value);
  show();
});
show();
</script></body></html>
"""


def make_app(store: Store, fleet_token: str, admin_token: str,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC),
             guard: Guard | None = None, tick: float = 10.0) -> Any:
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

    from greenlight.channels import FleetReport

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
            return JSONResponse({"error": "the fleet token is missing or wrong"}, 401)
        body = (await request.body())[:65536]
        try:
            report = FleetReport.model_validate_json(body)
        except ValidationError as e:
            return JSONResponse({"error": f"not a greenlight.report/1: {e.errors()[0]['msg']}"},
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
        return HTMLResponse(_PAGE, headers={
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
                    ready: Callable[[str], None] | None = None, repo: Path | None = None,
                    keys: Path | None = None, tick: float = 10.0,
                    log: Callable[[str], None] = lambda line: None) -> None:
    """Run the collector on 127.0.0.1:`port` until interrupted; with `repo`, guarding its
    planned rollouts."""
    import uvicorn

    from greenlight.release._errors import ReleaseError

    if repo is not None and not (repo / "metadata" / "root.json").is_file():
        raise ReleaseError(f"--repo {repo}: no repository here")
    if tick <= 0:
        raise ReleaseError(f"--tick {tick:g}: expected a number of seconds above 0")

    fleet = _read_token(fleet_token_file, "--fleet-token-file")
    admin_token = _read_token(admin_token_file, "--admin-token-file")
    try:
        store = Store(db)
    except Exception as e:  # a bad URL or an unreachable database: one line
        raise ReleaseError(f"--db: cannot open the database: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
    guard = None if repo is None else Guard(repo, keys, store, log)
    config = uvicorn.Config(make_app(store, fleet, admin_token, guard=guard, tick=tick),
                            host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if ready is not None:
        ready(f"http://127.0.0.1:{port}/")
    server.run()
