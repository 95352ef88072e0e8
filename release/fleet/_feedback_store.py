"""The collector's store of user feedback (`greenlight.feedback/1`, `channels._feedback`): the
`feedback` table beside the reports, through SQLAlchemy Core (SQLite or PostgreSQL), with
its caps and its retention. Made by `Store` (`Store.feedback`), whose engine and machine keys
it shares: a machine key is admitted for feedback exactly as for reports (enrolment, the
enrolment rate, revocation), and counted by the same rule (`Store.counting`).

A feedback is stored once per machine key and id (a resend or a replay: "duplicate"). The
caps (`FeedbackLimits`) keep honest feedback from being lost to anyone else's flood:

- each machine key: at most `daily` feedback in any 24 hours (a flood from one machine
  costs the others nothing);
- keys that count for nothing yet (pending approval, or enrolled by the fleet token less
  than a day ago): at most `newcomer_key` each and `newcomers` all together in any 24 hours;
- the table: at most `rows`, the last quarter of them kept for established keys, so minted
  keys can never fill it;
- retention: a feedback received longer ago than `retention` is pruned by the collector's
  timer.

A refusal by a cap is a 429 or 503 the machine answers by keeping the feedback queued and
sending it again later: deferred, never dropped. The per-key caps do not apply to an
import of an air-gapped machine's export (the admin's act: its lines were written over
weeks); everything else does.
"""

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.channels import version_of
from greenlight.release.fleet._feedback_views import FeedbackViews

__all__ = ["FEEDBACK_DAILY", "FEEDBACK_NEWCOMERS", "FEEDBACK_NEWCOMER_KEY", "FEEDBACK_RETENTION",
           "FEEDBACK_ROWS", "FeedbackLimits", "FeedbackStore", "about"]

FEEDBACK_DAILY = 10
"""feedback taken from one machine key in any 24 hours"""
FEEDBACK_NEWCOMERS = 500
"""feedback taken in any 24 hours from all the keys that count for nothing yet, together"""
FEEDBACK_NEWCOMER_KEY = 3
"""feedback taken in any 24 hours from one key that counts for nothing yet"""
FEEDBACK_ROWS = 100_000
"""feedback kept at most; keys that are not established stop at three quarters of it"""
FEEDBACK_RETENTION = timedelta(days=90)
"""feedback received longer ago is pruned"""


@dataclass(frozen=True)
class FeedbackLimits:
    """The caps on feedback (`release collector --feedback-*`)."""

    daily: int = FEEDBACK_DAILY
    newcomers: int = FEEDBACK_NEWCOMERS
    newcomer_key: int = FEEDBACK_NEWCOMER_KEY
    rows: int = FEEDBACK_ROWS
    retention: timedelta = FEEDBACK_RETENTION


class FeedbackStore(FeedbackViews):
    """The feedback table of a `Store` (its `sa`, `engine`, `machines`, `reports` and
    `counting`)."""

    def __init__(self, store: Any, newcomer_age: timedelta) -> None:
        sa = self.sa = store.sa
        self.engine, self.machines, self.reports = store.engine, store.machines, store.reports
        self._store = store
        self.newcomer_age = newcomer_age
        self._admitting = threading.Lock()
        meta = sa.MetaData()
        self.table = sa.Table(
            "feedback", meta,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("feedback_id", sa.String(32), nullable=False),
            sa.Column("installation", sa.String(32), nullable=False),
            sa.Column("received", sa.DateTime(timezone=True), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("channel", sa.String(64)),
            sa.Column("release", sa.String(64)),
            sa.Column("release_key", sa.String(80)),
            sa.Column("cohort", sa.String(80)),
            sa.Column("failing_check", sa.String(80)),  # FeedbackReport.failing_check()
            sa.Column("incident_release", sa.String(80)),  # the last incident's release
            # the release it is about (`about`): the one grouped and filtered on
            sa.Column("about", sa.String(64)),
            sa.Column("about_channel", sa.String(64)),  # the channel of `about`
            sa.Column("source", sa.String(8), nullable=False),
            sa.Column("text", sa.Text, nullable=False),
            sa.Column("document", sa.Text, nullable=False),  # the whole of it, sanitised
            sa.Index("feedback_once", "installation", "feedback_id", unique=True),
            sa.Index("feedback_received", "received"),
            sa.Index("feedback_release", "channel", "release"),
        )

    def counting(self, established_before: datetime | None = None,
                 about: str | None = None) -> Any:
        """The store's one rule of which machine keys count (`Store.counting`)."""
        return self._store.counting(established_before, about)

    def admit(self, doc: Any, received: datetime, key: str, mode: str, enrol_rate: int,
              limits: FeedbackLimits, imported: bool = False) -> tuple[str, bool, bool]:
        """Store one verified feedback (`doc`, a FeedbackReport whose `installation` is the
        id of `key`, which signed it), admitting its key by `mode` as a report would, in one
        transaction. What happened: "accepted", "pending" (stored, from a key awaiting an
        admin), "duplicate" (its key sent this id already: answered, not stored again), or a
        refusal: "unknown" (a key the operator did not load), "revoked", "enrol-rate",
        "rate" (`limits.daily`), "newcomer-key", "newcomers", "full" (`limits.rows`); with
        whether its key is new and whether it is established. With `imported` (the admin's
        import of an export file), the enrolment rate and the per-key caps are not applied.

        Raises:
            sqlalchemy.exc.IntegrityError: another process kept enrolling the key or storing
                the id, twice running (the caller answers 503, the machine sends it again).
        """
        sa = self.sa
        for attempt in (1, 2):  # another process may enrol the key or store the id at once
            try:
                with self._admitting:  # the caps count, then insert: one at a time here
                    return self._admit(doc, received, key, mode, enrol_rate, limits,
                                       imported)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _admit(self, doc: Any, received: datetime, key: str, mode: str, enrol_rate: int,
               limits: FeedbackLimits, imported: bool) -> tuple[str, bool, bool]:
        sa, f, m = self.sa, self.table, self.machines
        ident = doc.installation
        day = received - timedelta(days=1)
        young = received - self.newcomer_age
        with self.engine.begin() as c:
            if self.engine.dialect.name == "postgresql":
                # collectors sharing the database: the caps' counts and the insert of one
                # admission at a time, across them too (held until this transaction ends)
                c.execute(sa.text("SELECT pg_advisory_xact_lock(4242001)"))
            row = c.execute(sa.select(m.c.state, m.c.public_key, m.c.source, m.c.enrolled)
                            .where(m.c.id == ident)).first()
            new = row is None
            if row is None:
                if mode == "preauthorized":
                    return "unknown", False, False
                recent = c.execute(sa.select(sa.func.count()).select_from(m).where(
                    m.c.enrolled >= received - timedelta(minutes=1))).scalar_one()
                if not imported and int(recent) >= enrol_rate:
                    return "enrol-rate", False, False
                state, newcomer = ("active" if mode == "open" else "pending"), True
            else:
                state = row.state
                if row.public_key != key:  # a 128-bit id collision
                    return "unknown", False, False
                if state == "revoked":
                    return "revoked", False, False
                newcomer = state == "pending" or (row.source == "open"
                                                  and _utc(row.enrolled) >= young)
                if c.execute(sa.select(f.c.seq).where(f.c.installation == ident,
                                                      f.c.feedback_id == doc.id)).first():
                    return "duplicate", False, False
            if not imported:
                sent = int(c.execute(sa.select(sa.func.count()).select_from(f).where(
                    f.c.installation == ident, f.c.received >= day)).scalar_one())
                if sent >= limits.daily:
                    return "rate", False, False
                if newcomer and sent >= limits.newcomer_key:
                    return "newcomer-key", False, False
                if newcomer and self._newcomers_sent(c, day, young) >= limits.newcomers:
                    return "newcomers", False, False
            kept = int(c.execute(sa.select(sa.func.count()).select_from(f)).scalar_one())
            if kept >= (limits.rows * 3 // 4 if newcomer else limits.rows):
                return "full", False, False
            if new:
                c.execute(m.insert(), {"id": ident, "public_key": key, "state": state,
                                       "source": mode, "enrolled": received,
                                       "first_release_key": doc.release_key})
            incident = doc.incident.release if doc.incident is not None else None
            about_channel, about_release = about(doc)
            c.execute(f.insert(), {
                "feedback_id": doc.id, "installation": ident, "received": received,
                "at": _utc(doc.at),
                "channel": doc.channel, "release": doc.release, "release_key": doc.release_key,
                "cohort": doc.cohort, "failing_check": doc.failing_check(),
                "incident_release": incident, "about": about_release,
                "about_channel": about_channel,
                "source": doc.source, "text": doc.text,
                "document": doc.model_dump_json(by_alias=True)})
        return ("accepted" if state == "active" else "pending"), new, (
            state == "active" and not newcomer)

    def _newcomers_sent(self, c: Any, day: datetime, young: datetime) -> int:
        """Feedback received since `day` from the keys that count for nothing yet."""
        sa, f, m = self.sa, self.table, self.machines
        newcomers = sa.select(m.c.id).where(sa.or_(
            m.c.state == "pending", sa.and_(m.c.source == "open", m.c.enrolled >= young)))
        return int(c.execute(sa.select(sa.func.count()).select_from(f).where(
            f.c.received >= day, f.c.installation.in_(newcomers))).scalar_one())

    def prune(self, before: datetime) -> int:
        """Delete feedback received before `before`; how many."""
        f = self.table
        with self.engine.begin() as c:
            return int(c.execute(f.delete().where(f.c.received < before)).rowcount)

    def kept(self) -> Any:
        """A select of the installations that sent feedback still kept (for the pruning of
        machine keys: a key with feedback kept is not silent)."""
        return self.sa.select(self.table.c.installation)

    def machines_wrote(self, channel: str, release_key: str, since: datetime,
                       established_before: datetime | None) -> int:
        """Distinct machines that wrote in about `release_key` on `channel` (running it, or
        rolled back from it by their last incident) since `since`: the keys a rollout's rule
        counts (`Store.counting`, established before the rollout began), never keys minted
        for the occasion."""
        sa, f = self.sa, self.table
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count(sa.distinct(f.c.installation))).where(
                # the channel it is about: a machine that rolled back and fell back to
                # another channel still wrote about this one
                sa.or_(f.c.channel == channel, f.c.about_channel == channel),
                sa.or_(f.c.release_key == release_key, f.c.incident_release == release_key),
                f.c.received >= since,
                f.c.installation.in_(self.counting(established_before, release_key)))
            ).scalar_one())

    def listed(self, filters: dict[str, Any], limit: int,
               after: tuple[str, str] | None = None, documents: bool = False
               ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """Feedback, newest received first, a page of `limit` after the row `after` names
        (its received time, ISO, and row number); filtered by `release`, `channel`,
        `cohort`, `check` (the failing check) and `since` (received at or after, aware); a
        revoked key's feedback left out. With `documents`, each with its whole document.
        And what names the page's last row, when the page is full (the next one's start)."""
        sa, f, m = self.sa, self.table, self.machines
        query = sa.select(f, m.c.state).select_from(
            f.outerjoin(m, m.c.id == f.c.installation)).where(
            sa.or_(m.c.state.is_(None), m.c.state != "revoked"))
        if filters.get("release") is not None:  # what it is about, or what the machine runs
            query = query.where(sa.or_(f.c.about == filters["release"],
                                       f.c.release == filters["release"]))
        for name, column in (("channel", f.c.channel), ("cohort", f.c.cohort),
                             ("check", f.c.failing_check)):
            if filters.get(name) is not None:
                query = query.where(column == filters[name])
        if filters.get("since") is not None:
            query = query.where(f.c.received >= filters["since"].astimezone(UTC))
        if after is not None:
            at, row = datetime.fromisoformat(after[0]).astimezone(UTC), int(after[1])
            query = query.where(sa.or_(f.c.received < at,
                                       sa.and_(f.c.received == at, f.c.seq < row)))
        with self.engine.connect() as c:
            rows = c.execute(query.order_by(f.c.received.desc(), f.c.seq.desc())
                             .limit(limit)).all()
        last = (_utc(rows[-1].received).isoformat(), str(rows[-1].seq)) \
            if rows and len(rows) == limit else None
        return [_entry(r, documents) for r in rows], last

    def found(self, feedback_id: str, machine: str | None = None) -> list[dict[str, Any]]:
        """The feedback of this id (one per machine key that sent it; of `machine` only),
        each with its whole document; a revoked key's left out."""
        sa, f, m = self.sa, self.table, self.machines
        query = sa.select(f, m.c.state).select_from(
            f.outerjoin(m, m.c.id == f.c.installation)).where(
            f.c.feedback_id == feedback_id, sa.or_(m.c.state.is_(None), m.c.state != "revoked"))
        if machine is not None:
            query = query.where(f.c.installation == machine)
        with self.engine.connect() as c:
            return [_entry(r, True) for r in c.execute(query.order_by(f.c.seq).limit(10))]


def about(doc: Any) -> tuple[str | None, str | None]:
    """The channel and release a feedback is about: while the machine still runs the release
    its last incident went back to, the person most likely wrote about that failure, so the
    release that failed and the channel it failed on (1.6.11 on beta in the seed's incident,
    not the 1.6.10 on stable it fell back to); else the release the machine runs, on its
    channel."""
    incident = doc.incident
    if (incident is not None and incident.release is not None
            and incident.back_to is not None and incident.back_to == doc.release_key):
        return incident.channel or doc.channel, version_of(incident.release)
    return doc.channel, doc.release


def _entry(r: Any, document: bool) -> dict[str, Any]:
    """One feedback as the admin's API says it."""
    out = {"id": r.feedback_id, "machine": r.installation, "machine_state": r.state,
           "received": _utc(r.received).isoformat(), "at": _utc(r.at).isoformat(),
           "channel": r.channel, "release": r.release, "release_key": r.release_key,
           "cohort": r.cohort, "check": r.failing_check, "incident_release": r.incident_release,
           "about": r.about, "about_channel": r.about_channel, "source": r.source,
           "text": r.text}
    if document:
        out["document"] = json.loads(r.document)
    return out


def _utc(at: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
