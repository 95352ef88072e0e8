"""The collector's store: the reports table, through SQLAlchemy Core (SQLite by default,
PostgreSQL at scale). Every answer comes from the database, so several collector processes
can share one."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.release.fleet._judge import Evidence

__all__ = ["FAILED", "JUDGED", "Store"]

FAILED = ("rolled-back", "dead-end", "crash-loop")
"""Outcomes that count against a release: its checks failed, or it crash-looped once in use"""
JUDGED = ("upgraded", *FAILED)


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

    def judged(self, channel: str, release_key: str, since: datetime | None,
               established_before: datetime | None = None) -> Evidence:
        """For a rollout's halt rule: distinct machines that failed `release_key`, distinct
        machines that reported on it at all, and the most failed check with an example.
        With `established_before` (when the rollout began), only installations the collector
        heard from, about another release, before then count: ids invented for the occasion
        count for nothing."""
        sa, t = self.sa, self.reports
        where = [t.c.channel == channel, t.c.release_key == release_key,
                 t.c.outcome.in_(JUDGED)]
        if since is not None:
            where.append(t.c.received >= since)
        if established_before is not None:
            where.append(t.c.installation.in_(sa.select(t.c.installation).where(
                t.c.received < established_before, t.c.release_key != release_key)))
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
        return Evidence(failed, total, None if top is None else (top[0], top[1][0]))

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
                t.c.outcome.in_(FAILED))).all()
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
