"""The collector's store: the reports table, through SQLAlchemy Core (SQLite by default,
PostgreSQL at scale). Every answer comes from the database, so several collector processes
can share one."""

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.release.fleet._evidence import RuleEvidence
from greenlight.release.fleet._feedback_store import FeedbackStore
from greenlight.release.fleet._schema import served
from greenlight.release.fleet._views import FAILED, JUDGED, MACHINE_STATES, Views

__all__ = ["ENROLMENT_MODES", "FAILED", "FIRST_FREE", "JUDGED", "KEY_DAILY", "MACHINE_STATES",
           "NEWCOMER_AGE", "NEWCOMER_BUDGET", "NEWCOMER_KEY_BYTES", "Store", "report_id"]

ENROLMENT_MODES = ("open", "approved", "preauthorized")
"""How a new machine key is admitted: by the fleet token (open), by an admin afterwards
(approved: it waits, pending), or only when the operator loaded it (preauthorized)"""
KEY_DAILY = 200
"""reports kept from one machine key in any 24 hours; past them, 429"""
NEWCOMER_BUDGET = 16 << 20
"""bytes of reports kept in any 24 hours from all the keys that count for nothing yet
(pending, or enrolled openly less than `NEWCOMER_AGE` ago), together; past them, 429"""
NEWCOMER_AGE = timedelta(days=1)
NEWCOMER_KEY_BYTES = 128 << 10
"""bytes of reports kept in any 24 hours from one key that counts for nothing yet; past
them, 429: one key cannot spend the newcomers' budget alone"""
FIRST_FREE = 8 << 10
"""a new key's first report up to this size is taken whatever the newcomers' budget (new
keys are bounded by the enrolment rate): a flood of new keys never locks out a new machine"""


def report_id(report: Any, body: str) -> str:
    """The id a report is counted once by, for its key: the one the machine signed into it
    (the same on every send), or for a machine that names none, the digest of the body."""
    said: str | None = getattr(report, "id", None)
    return said if said else hashlib.sha256(body.encode()).hexdigest()[:32]


class Store(RuleEvidence, Views):
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
        # PostgreSQL keeps its own default: a batch is answered once its commit is flushed,
        # so no report answered 202 is lost when a collector or the database crashes (with a
        # standby, the database's synchronous_commit decides whether the standby must have
        # it too). Group commit pays one flush per batch, not per report.
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
            sa.Column("report_id", sa.String(32)),  # counted once per key (replays)
            sa.Column("upgrading_to", sa.String(80)),  # crashed-on-stop: the release tried
            sa.Column("greenlight", sa.String(64)),  # the Greenlight that sent it (0.3.0 on)
            sa.Column("greenlight_kind", sa.String(8)),  # how it is installed
            sa.Index("reports_release", "channel", "release"),
            sa.Index("reports_installation", "installation", "received"),
            sa.Index("reports_received", "received"),
        )
        sa.Index("reports_once", self.reports.c.installation, self.reports.c.report_id,
                 unique=True)  # (the schema's: `migrations/`)
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
        # made at this collector's schema when empty; refused, in one line, when another
        self.schema_note = served(self.engine, url)
        # The statements of a report's admission, built once: building them per report cost
        # more than running them (1.46 ms a report against 0.38 ms, on SQLite).
        t, m, bind = self.reports, self.machines, sa.bindparam
        def sent_since(name: str) -> Any:
            return sa.select(sa.func.count()).select_from(t).where(
                t.c.installation == m.c.id, t.c.received >= bind(name)).scalar_subquery()

        self._machines = sa.select(
            m.c.id, m.c.state, m.c.public_key, m.c.source, m.c.enrolled, sent_since("since"),
            sent_since("day")).where(m.c.id.in_(bind("ids", expanding=True)))
        self._seen = sa.select(t.c.installation, t.c.report_id).where(
            t.c.installation.in_(bind("ids", expanding=True)),
            t.c.report_id.in_(bind("rids", expanding=True)))
        newcomers = sa.select(m.c.id).where(sa.or_(
            m.c.state == "pending", sa.and_(m.c.source == "open",
                                            m.c.enrolled >= bind("young"))))
        self._newcomer_bytes = sa.select(sa.func.coalesce(sa.func.sum(
            sa.func.length(t.c.body)), 0)).where(t.c.received >= bind("day"),
                                                  t.c.installation.in_(newcomers))
        self._key_bytes = sa.select(sa.func.coalesce(sa.func.sum(
            sa.func.length(t.c.body)), 0)).where(t.c.installation == bind("id"),
                                                  t.c.received >= bind("day"))
        self._new_keys = sa.select(sa.func.count()).select_from(m).where(
            m.c.enrolled >= bind("since"))
        self._enrol = m.insert()
        self._store = t.insert()
        self.feedback = FeedbackStore(self, NEWCOMER_AGE)  # user feedback, beside the reports

    def accept(self, report: Any, body: str, received: datetime, rate: int, key: str,
               mode: str = "open", enrol_rate: int = 120) -> tuple[str, bool]:
        """Store one signed report (see `accept_many`)."""
        return self.accept_many([(report, body, received, key)], rate, mode, enrol_rate)[0]

    def accept_many(self, batch: list[tuple[Any, str, datetime, str]], rate: int,
                    mode: str = "open", enrol_rate: int = 120) -> list[tuple[str, bool]]:
        """Store signed reports (see `admit_many`): for each, what happened and whether its
        key was new."""
        return [(said, new) for said, new, _ in self.admit_many(batch, rate, mode,
                                                                enrol_rate)]

    def admit_many(self, batch: list[tuple[Any, str, datetime, str]], rate: int,
                   mode: str = "open", enrol_rate: int = 120
                   ) -> list[tuple[str, bool, bool]]:
        """Store signed reports ((report, body, received, public key), in the order they
        came), admitting their machine keys by `mode`; one transaction for the whole batch,
        and each report judged as if it had come alone, after those before it. For each,
        what happened and whether its key was new: "accepted"; "pending" (stored, from a
        key that awaits an admin: it counts for nothing until approved); or a refusal:
        "unknown" (a key the operator did not load), "revoked", "enrol-rate" (over
        `enrol_rate` new keys in the minute before), "rate" (its machine sent `rate`
        reports in the minute before), "quota" (`KEY_DAILY` in the day before),
        "key-budget" (a key that counts for nothing yet sent `NEWCOMER_KEY_BYTES` in the
        day before), "budget" (those keys together sent `NEWCOMER_BUDGET` bytes in the day
        before; a new key's first report up to `FIRST_FREE` bytes is taken whatever they
        sent); or "duplicate": a report its key sent already (by `report_id`), answered
        but neither stored nor counted again. And whether its key is established: active,
        and loaded, approved or enrolled over `NEWCOMER_AGE` before (it may be vouched for,
        and counted in the metrics).

        Raises:
            sqlalchemy.exc.IntegrityError: another process kept enrolling one of its keys,
                twice running; nothing of the batch is stored.
            sqlalchemy.exc.SQLAlchemyError: the database failed; nothing of the batch is
                stored.
        """
        sa = self.sa
        for attempt in (1, 2):  # another collector process may enrol the same key at once
            try:
                return self._accept(batch, rate, mode, enrol_rate)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _accept(self, batch: list[tuple[Any, str, datetime, str]], rate: int, mode: str,
                enrol_rate: int) -> list[tuple[str, bool, bool]]:
        # A few reads and two writes for the whole batch, whatever its size: a commit and
        # a statement cost more than the work of one report (measured in
        # bench/collector_load.py).
        ids = sorted({report.installation for report, _, _, _ in batch})
        rids = [report_id(report, body) for report, body, _, _ in batch]
        earliest = min(received for _, _, received, _ in batch)
        out: list[tuple[str, bool, bool]] = []
        enrol: list[dict[str, Any]] = []
        store: list[dict[str, Any]] = []
        with self.engine.begin() as c:
            # Each known key's state, and how many reports it sent since a minute (and a
            # day) before the batch's first: one round trip. A report's own minute starts a
            # little later, so a machine at its limit waits, at most, the batch's span longer.
            known: dict[str, tuple[str, str, bool]] = {}
            sent: dict[str, int] = {}
            daily: dict[str, int] = {}
            for id_, state, public_key, source, enrolled_at, recent, day in c.execute(
                    self._machines, {"ids": ids, "since": earliest - timedelta(minutes=1),
                                     "day": earliest - timedelta(days=1)}):
                newcomer = state == "pending" or (
                    source == "open" and _utc(enrolled_at) >= _utc(earliest) - NEWCOMER_AGE)
                known[id_] = (state, public_key, newcomer)
                sent[id_], daily[id_] = int(recent), int(day)
            seen = {(i, r) for i, r in c.execute(self._seen, {"ids": ids, "rids": rids})}
            enrolled: list[datetime] = []  # keys enrolled by this batch
            budget: list[int] = []  # bytes newcomers sent in the day, once asked

            def new_keys(since: datetime) -> int:  # asked only for a key not known yet
                return int(c.execute(self._new_keys, {"since": since}).scalar_one()) + sum(
                    at >= since for at in enrolled)

            def spent(size: int) -> bool:  # asked only for a newcomer's report
                if not budget:
                    budget.append(int(c.execute(self._newcomer_bytes, {
                        "day": earliest - timedelta(days=1),
                        "young": earliest - NEWCOMER_AGE}).scalar_one()))
                if budget[0] + size > NEWCOMER_BUDGET:
                    return True
                budget[0] += size
                return False

            key_bytes: dict[str, int] = {}  # bytes a newcomer key sent in the day, once asked

            def over(ident: str, size: int) -> bool:  # asked only for a newcomer's report
                if ident not in key_bytes:
                    key_bytes[ident] = int(c.execute(self._key_bytes, {
                        "id": ident, "day": earliest - timedelta(days=1)}).scalar_one())
                if key_bytes[ident] + size > NEWCOMER_KEY_BYTES:
                    return True
                key_bytes[ident] += size
                return False

            for (report, body, received, key), rid in zip(batch, rids, strict=True):
                minute_ago = received - timedelta(minutes=1)
                ident, row, new = report.installation, known.get(report.installation), False
                if row is None:
                    if mode == "preauthorized":
                        out.append(("unknown", False, False))
                        continue
                    if new_keys(minute_ago) >= enrol_rate:
                        out.append(("enrol-rate", False, False))
                        continue
                    if len(body) > FIRST_FREE and spent(len(body)):
                        out.append(("budget", False, False))
                        continue
                    key_bytes[ident] = len(body)
                    state, new = ("active" if mode == "open" else "pending"), True
                    known[ident] = (state, key, True)
                    enrolled.append(_utc(received))
                    enrol.append({"id": ident, "public_key": key,
                                  "state": state, "source": mode, "enrolled": received,
                                  "first_release_key": report.release_key})
                else:
                    state = row[0]
                    if row[1] != key:  # a 128-bit id collision
                        out.append(("unknown", False, False))
                        continue
                    if state == "revoked":
                        out.append(("revoked", False, False))
                        continue
                    if (ident, rid) in seen:  # a replay, or a resend: counted once
                        out.append(("duplicate", False, False))
                        continue
                    if sent.get(ident, 0) >= rate:
                        out.append(("rate", False, False))
                        continue
                    if daily.get(ident, 0) >= KEY_DAILY:
                        out.append(("quota", False, False))
                        continue
                    if row[2] and over(ident, len(body)):
                        out.append(("key-budget", False, False))
                        continue
                    if row[2] and spent(len(body)):
                        out.append(("budget", False, False))
                        continue
                seen.add((ident, rid))
                sent[ident] = sent.get(ident, 0) + 1
                daily[ident] = daily.get(ident, 0) + 1
                store.append({
                    "installation": ident, "channel": report.channel,
                    "release": report.release, "release_key": report.release_key,
                    "outcome": report.outcome, "at": report.at, "received": received,
                    "body": body, "cohort": report.cohort, "report_id": rid,
                    "upgrading_to": getattr(report, "upgrading_to", None),
                    "greenlight": getattr(report, "greenlight", None),
                    "greenlight_kind": getattr(report, "greenlight_kind", None)})
                out.append((("accepted" if state == "active" else "pending"), new,
                            state == "active" and not known[ident][2]))
            if enrol:
                c.execute(self._enrol, enrol)
            if store:
                c.execute(self._store, store)
        return out

    def prune(self, before: datetime, keep: set[tuple[str, str]]) -> int:
        """Delete reports received before `before`, except those about the (channel, release
        key)s of rollouts still under way, whose rules count them (see `prune_machines`)."""
        sa, t = self.sa, self.reports
        where: list[Any] = [t.c.received < before]
        for channel, key in keep:
            where.append(sa.not_(sa.and_(t.c.channel == channel, t.c.release_key == key)))
        with self.engine.begin() as c:
            return int(c.execute(t.delete().where(*where)).rowcount)

    def prune_machines(self, before: datetime) -> int:
        """Delete the rows of machine keys enrolled before `before` by the fleet token alone
        (open enrolment) or still waiting for an admin (pending), that have no report and no
        feedback kept: silent for the whole retention. Keys the operator loaded or an admin
        approved stay, and so do revoked keys (their revocation holds)."""
        sa, t, m = self.sa, self.reports, self.machines
        reported = sa.select(t.c.installation).where(t.c.installation == m.c.id).exists()
        wrote = self.feedback.kept().where(self.feedback.table.c.installation == m.c.id).exists()
        with self.engine.begin() as c:
            return int(c.execute(m.delete().where(
                m.c.enrolled < before, m.c.state != "revoked",
                sa.or_(m.c.source == "open", m.c.state == "pending"),
                sa.not_(reported), sa.not_(wrote))).rowcount)

    def counts(self, ident: str, now: datetime) -> bool:
        """Whether the machine key `ident` is established at `now`: one `counting` counts,
        and not a newcomer (enrolled by the fleet token less than `NEWCOMER_AGE` before). It
        may take the connections kept for the machines the collector counts."""
        m = self.machines
        with self.engine.connect() as c:
            return c.execute(self.counting(now - NEWCOMER_AGE).where(m.c.id == ident)
                             ).first() is not None

    def failed_after(self, last: int | None) -> tuple[set[str], int]:
        """The channels with a failure reported after report `last` (None: none yet, only the
        newest id is wanted), and the newest report's id: what the leading collector judges
        of the reports any collector took. Ids are handed out before commits, so a report
        committed late under a lower id is the periodic tick's to judge."""
        sa, t = self.sa, self.reports
        with self.engine.connect() as c:
            newest = int(c.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0)))
                         .scalar_one())
            if last is None or newest <= last:
                return set(), newest
            return {ch for (ch,) in c.execute(sa.select(t.c.channel).distinct().where(
                t.c.id > last, t.c.id <= newest, t.c.outcome.in_(FAILED)))}, newest

def _utc(at: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
