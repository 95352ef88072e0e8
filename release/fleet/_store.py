"""The collector's store: the reports table, through SQLAlchemy Core (SQLite by default,
PostgreSQL at scale). Every answer comes from the database, so several collector processes
can share one."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.release.fleet._judge import Evidence

__all__ = ["ENROLMENT_MODES", "FAILED", "JUDGED", "MACHINE_STATES", "Store"]

ENROLMENT_MODES = ("open", "approved", "preauthorized")
"""How a new machine key is admitted: by the fleet token (open), by an admin afterwards
(approved: it waits, pending), or only when the operator loaded it (preauthorized)"""
MACHINE_STATES = ("active", "pending", "revoked")

FAILED = ("rolled-back", "dead-end", "crash-loop")
"""Outcomes that count against a release: its checks failed, or it crash-looped once in use"""
JUDGED = ("upgraded", *FAILED)


class Store:
    """The reports table, through SQLAlchemy Core (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        sqlite = url.startswith("sqlite")
        # Reports are written by one thread, a batch at a time (the API's group commit): on
        # two cores a pool of writers cost more in switching than it gained in concurrent
        # commits, for PostgreSQL too (measured: 664 -> 497 reports/s at 16 in flight).
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
            sa.Column("cohort", sa.String(80)),
            sa.Index("reports_release", "channel", "release"),
            sa.Index("reports_installation", "installation", "received"),
            sa.Index("reports_received", "received"),
        )
        # One row per machine key, kept when its reports are pruned: who may report, since
        # when (the history a key needs to count in open enrolment), and its state.
        self.machines = sa.Table(
            "machines", meta,
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("public_key", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("enrolled", sa.DateTime(timezone=True), nullable=False),
            sa.Column("first_release_key", sa.String(80)),  # what its first report was about
            sa.Index("machines_enrolled", "enrolled"),
        )
        meta.create_all(self.engine)  # idempotent: each process may run it
        self._add_missing_columns()
        # The statements of a report's admission, built once: building them per report cost
        # more than running them (1.46 ms a report against 0.38 ms, on SQLite).
        t, m, bind = self.reports, self.machines, sa.bindparam
        recent = sa.select(sa.func.count()).select_from(t).where(
            t.c.installation == m.c.id, t.c.received >= bind("since")).scalar_subquery()
        self._machines = sa.select(m.c.id, m.c.state, m.c.public_key, recent).where(
            m.c.id.in_(bind("ids", expanding=True)))
        self._new_keys = sa.select(sa.func.count()).select_from(m).where(
            m.c.enrolled >= bind("since"))
        self._enrol = m.insert()
        self._store = t.insert()

    def _add_missing_columns(self) -> None:
        """A database made by an earlier collector gets the columns added since."""
        sa = self.sa
        have = {c["name"] for c in sa.inspect(self.engine).get_columns("reports")}
        if "cohort" not in have:
            try:
                with self.engine.begin() as c:
                    c.execute(sa.text("ALTER TABLE reports ADD COLUMN cohort VARCHAR(80)"))
            except sa.exc.DBAPIError:  # another collector process added it first
                pass

    def accept(self, report: Any, body: str, received: datetime, rate: int, key: str,
               mode: str = "open", enrol_rate: int = 120) -> tuple[str, bool]:
        """Store one signed report (see `accept_many`)."""
        return self.accept_many([(report, body, received, key)], rate, mode, enrol_rate)[0]

    def accept_many(self, batch: list[tuple[Any, str, datetime, str]], rate: int,
                    mode: str = "open", enrol_rate: int = 120) -> list[tuple[str, bool]]:
        """Store signed reports ((report, body, received, public key), in the order they
        came), admitting their machine keys by `mode`; one transaction for the whole batch,
        and each report judged as if it had come alone, after those before it. For each,
        what happened and whether its key was new: "accepted"; "pending" (stored, from a
        key that awaits an admin: it counts for nothing until approved); or a refusal:
        "unknown" (a key the operator did not load), "revoked", "enrol-rate" (over
        `enrol_rate` new keys in the minute before), "rate" (its machine sent `rate`
        reports in the minute before)."""
        sa = self.sa
        for attempt in (1, 2):  # another collector process may enrol the same key at once
            try:
                return self._accept(batch, rate, mode, enrol_rate)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _accept(self, batch: list[tuple[Any, str, datetime, str]], rate: int, mode: str,
                enrol_rate: int) -> list[tuple[str, bool]]:
        # Three reads and two writes for the whole batch, whatever its size: a commit and
        # a statement cost more than the work of one report (measured in
        # bench/collector_load.py).
        ids = sorted({report.installation for report, _, _, _ in batch})
        first = min(received for _, _, received, _ in batch) - timedelta(minutes=1)
        out: list[tuple[str, bool]] = []
        enrol: list[dict[str, Any]] = []
        store: list[dict[str, Any]] = []
        with self.engine.begin() as c:
            # Each known key's state, and how many reports it sent since a minute before
            # the batch's first: one round trip. A report's own minute starts a little
            # later, so a machine at its limit waits, at most, the batch's span longer.
            known: dict[str, tuple[str, str]] = {}
            sent: dict[str, int] = {}
            for id_, state, public_key, recent in c.execute(
                    self._machines, {"ids": ids, "since": first}):
                known[id_], sent[id_] = (state, public_key), int(recent)
            enrolled: list[datetime] = []  # keys enrolled by this batch

            def new_keys(since: datetime) -> int:  # asked only for a key not known yet
                return int(c.execute(self._new_keys, {"since": since}).scalar_one()) + sum(
                    at >= since for at in enrolled)

            for report, body, received, key in batch:
                minute_ago = received - timedelta(minutes=1)
                row, new = known.get(report.installation), False
                if row is None:
                    if mode == "preauthorized":
                        out.append(("unknown", False))
                        continue
                    if new_keys(minute_ago) >= enrol_rate:
                        out.append(("enrol-rate", False))
                        continue
                    state, new = ("active" if mode == "open" else "pending"), True
                    known[report.installation] = (state, key)
                    enrolled.append(_utc(received))
                    enrol.append({"id": report.installation, "public_key": key,
                                  "state": state, "source": mode, "enrolled": received,
                                  "first_release_key": report.release_key})
                else:
                    state = row[0]
                    if row[1] != key:  # a 128-bit id collision
                        out.append(("unknown", False))
                        continue
                    if state == "revoked":
                        out.append(("revoked", False))
                        continue
                    if sent.get(report.installation, 0) >= rate:
                        out.append(("rate", False))
                        continue
                sent[report.installation] = sent.get(report.installation, 0) + 1
                store.append({
                    "installation": report.installation, "channel": report.channel,
                    "release": report.release, "release_key": report.release_key,
                    "outcome": report.outcome, "at": report.at, "received": received,
                    "body": body, "cohort": report.cohort})
                out.append((("accepted" if state == "active" else "pending"), new))
            if enrol:
                c.execute(self._enrol, enrol)
            if store:
                c.execute(self._store, store)
        return out

    # --- machines ----------------------------------------------------------------------
    def machine_list(self, state: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        sa, m = self.sa, self.machines
        query = sa.select(m.c.id, m.c.public_key, m.c.state, m.c.source, m.c.enrolled)
        if state is not None:
            query = query.where(m.c.state == state)
        with self.engine.connect() as c:
            rows = c.execute(query.order_by(m.c.enrolled.desc()).limit(limit)).all()
        return [{"id": r.id, "key": r.public_key, "state": r.state, "source": r.source,
                 "enrolled": _utc(r.enrolled).isoformat()} for r in rows]

    def set_state(self, ids: list[str], state: str, only_from: str | None = None) -> int:
        """Approve (active) or revoke machines by id; the number changed."""
        m = self.machines
        where: list[Any] = [m.c.id.in_(ids)]
        if only_from is not None:
            where.append(m.c.state == only_from)
        with self.engine.begin() as c:
            return int(c.execute(m.update().where(*where).values(state=state)).rowcount)

    def preauthorize(self, keys: dict[str, str], at: datetime) -> int:
        """Load machine keys ({id: public key}) as active; keys already known keep their
        state (a revoked key stays revoked). The number added."""
        sa, m = self.sa, self.machines
        with self.engine.begin() as c:
            known = set(c.execute(sa.select(m.c.id).where(m.c.id.in_(list(keys))))
                        .scalars().all())
            fresh = [{"id": i, "public_key": k, "state": "active", "source": "preauthorized",
                      "enrolled": at} for i, k in keys.items() if i not in known]
            if fresh:
                c.execute(m.insert(), fresh)
        return len(fresh)

    def enrolment(self, now: datetime) -> dict[str, Any]:
        """Machines by state, keys enrolled in the last hour, and whether that is a spike:
        over 20 and over three times the hourly average of the week before."""
        sa, m = self.sa, self.machines
        with self.engine.connect() as c:
            states = dict(c.execute(sa.select(m.c.state, sa.func.count())
                                    .group_by(m.c.state)).all())
            hour = int(c.execute(sa.select(sa.func.count()).select_from(m).where(
                m.c.enrolled >= now - timedelta(hours=1))).scalar_one())
            week = int(c.execute(sa.select(sa.func.count()).select_from(m).where(
                m.c.enrolled >= now - timedelta(days=7),
                m.c.enrolled < now - timedelta(hours=1))).scalar_one())
        average = week / (7 * 24 - 1)
        return {**{s: int(states.get(s, 0)) for s in MACHINE_STATES},
                "last_hour": hour, "hourly_average": round(average, 2),
                "spike": hour > 20 and hour > 3 * average}

    def prune(self, before: datetime, keep: set[tuple[str, str]]) -> int:
        """Delete reports received before `before`, except those about the (channel, release
        key)s of rollouts still under way, whose rules count them. Machines stay."""
        sa, t = self.sa, self.reports
        where: list[Any] = [t.c.received < before]
        for channel, key in keep:
            where.append(sa.not_(sa.and_(t.c.channel == channel, t.c.release_key == key)))
        with self.engine.begin() as c:
            return int(c.execute(t.delete().where(*where)).rowcount)

    def _counted(self, channel: str, release_key: str, since: datetime | None,
                 established_before: datetime | None, without: list[str] | None) -> list[Any]:
        """The conditions on the reports a rollout's rule counts (see `judged`)."""
        sa, t, m = self.sa, self.reports, self.machines
        where = [t.c.channel == channel, t.c.release_key == release_key,
                 t.c.outcome.in_(JUDGED)]
        if since is not None:
            where.append(t.c.received >= since)
        counted = sa.select(m.c.id).where(m.c.state == "active")
        if established_before is not None:
            counted = counted.where(sa.or_(
                m.c.source != "open",
                sa.and_(m.c.enrolled < established_before,
                        sa.func.coalesce(m.c.first_release_key, "") != release_key)))
        where.append(t.c.installation.in_(counted))
        if without:  # cohorts held already: judged apart
            where.append(sa.or_(t.c.cohort.is_(None), t.c.cohort.not_in(without)))
        return where

    def judged(self, channel: str, release_key: str, since: datetime | None,
               established_before: datetime | None = None,
               without: list[str] | None = None) -> Evidence:
        """For a rollout's halt rule: distinct machines that failed `release_key`, distinct
        machines that reported on it at all, and the most failed check with an example.
        Only active machine keys count (not pending or revoked ones); with
        `established_before` (when the rollout began), a key admitted by open enrolment
        counts only if it was enrolled before then by a report about another release: keys
        minted for the occasion count for nothing, and the rule survives the pruning of
        reports. Keys an admin approved or the operator loaded count from the start."""
        sa, t = self.sa, self.reports
        where = self._counted(channel, release_key, since, established_before, without)
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

    def cohorts(self, channel: str) -> set[str]:
        """The cohorts the channel's machines ever named in a report still kept."""
        sa, t = self.sa, self.reports
        with self.engine.connect() as c:
            return {row for row in c.execute(sa.select(t.c.cohort).distinct().where(
                t.c.channel == channel, t.c.cohort.is_not(None))).scalars().all()}

    def by_cohort(self, channel: str, release_key: str, since: datetime | None,
                  established_before: datetime | None = None,
                  without: list[str] | None = None) -> dict[str | None, Evidence]:
        """`judged`'s counts (no example check), per cohort the machines named."""
        sa, t = self.sa, self.reports
        where = self._counted(channel, release_key, since, established_before, without)
        failed_ = sa.func.count(sa.distinct(sa.case((t.c.outcome.in_(FAILED),
                                                     t.c.installation))))
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.cohort, failed_,
                                       sa.func.count(sa.distinct(t.c.installation)))
                             .where(*where).group_by(t.c.cohort)).all()
        return {cohort: Evidence(int(f), int(n)) for cohort, f, n in rows}

    def timeline(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Outcomes per minute received, per channel and release."""
        sa, t = self.sa, self.reports
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.channel, t.c.release, t.c.outcome, t.c.received)
                             .where(t.c.outcome.in_(JUDGED))).all()
        series: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for channel, version, outcome, received in rows:
            received = _utc(received)
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
            # the latest failures are enough to rank the checks: the answer stays bounded
            failing = c.execute(sa.select(t.c.channel, t.c.release, t.c.body).where(
                t.c.outcome.in_(FAILED)).order_by(t.c.id.desc()).limit(5000)).all()
            machines = c.execute(sa.select(
                t.c.channel, t.c.release, sa.func.count(sa.distinct(t.c.installation)),
            ).group_by(t.c.channel, t.c.release)).all()
            cohorts = c.execute(sa.select(
                t.c.channel, t.c.release, t.c.cohort,
                sa.func.count(sa.distinct(t.c.installation)),
                sa.func.count(sa.distinct(sa.case((t.c.outcome.in_(FAILED),
                                                   t.c.installation)))),
            ).group_by(t.c.channel, t.c.release, t.c.cohort)).all()
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for channel, version, total in machines:
            out[(channel, version)] = {"channel": channel, "release": version,
                                       "machines": int(total), "outcomes": {}, "checks": []}
        for channel, version, outcome, n in counts:
            out[(channel, version)]["outcomes"][outcome] = int(n)
        for channel, version, cohort, n, failed in cohorts:
            out[(channel, version)].setdefault("cohorts", []).append(
                {"cohort": cohort, "machines": int(n), "failed": int(failed)})
        ranked: dict[tuple[str, str], dict[str, list[str]]] = {}
        for channel, version, body in failing:
            for check in json.loads(body).get("failed_checks", []):
                ranked.setdefault((channel, version), {}).setdefault(
                    check["name"], []).append(check["summary"])
        for key, checks in ranked.items():
            out[key]["checks"] = [{"name": name, "reports": len(s), "example": s[0]}
                                  for name, s in sorted(checks.items(),
                                                        key=lambda kv: -len(kv[1]))[:10]]
        for key, points in self.timeline().items():
            if key in out:
                out[key]["timeline"] = points
        return sorted(out.values(), key=lambda r: (r["channel"], r["release"] or ""))


def _utc(at: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
