"""The collector's admin views of its store, each answer bounded whatever the fleet sent:
the machines (a page of at most `MACHINES_PAGE` keys), the enrolment counts, and the
releases reported on (a page of at most `ROLLOUTS_PAGE`, with at most `CHECK_BODIES`
failure bodies a release and `BODY_BUDGET` bytes of them a page, and the latest
`TIMELINE_ROWS` outcomes). What they count comes from the machine keys `Store.counting`
says count: a revoked or pending key's reports are in none of them."""

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.release.fleet._census import Census

__all__ = ["BODY_BUDGET", "CHECK_BODIES", "MACHINES_PAGE", "ROLLOUTS_PAGE", "TIMELINE_ROWS",
           "Views", "decode_cursor", "empty_row", "encode_cursor", "failure_text"]

MACHINES_PAGE = 1000
"""machine keys in one answer of `GET /v1/machines`, at most"""
ROLLOUTS_PAGE = 200
"""channel and release rows in one answer of `GET /v1/rollouts`, at most"""
CHECK_BODIES = 50
"""a release's latest failure reports read to rank its failed checks"""
BODY_BUDGET = 2 << 20
"""bytes of failure reports read for one page, at most"""
TIMELINE_ROWS = 20_000
"""the latest outcomes drawn minute by minute, for one page"""

CURSOR_MAX = 1200
"""characters of a page cursor at most (two parts of at most 200 characters, encoded)"""

FAILED = ("rolled-back", "dead-end", "crash-loop", "crashed-on-stop")
"""Outcomes that count against the release a report names (`crashed-on-stop`: the release
being left, which crashed when stopped for an upgrade; never the release tried)."""
JUDGED = ("upgraded", *FAILED)
MACHINE_STATES = ("active", "pending", "revoked")


def failure_text(outcome: str, release: str | None, upgrading_to: str | None = None) -> str:
    """One failure in words, against the release it belongs to (`release`, a version); for
    `crashed-on-stop`, the release left, which died when stopped for the upgrade to
    `upgrading_to` (a version or release key; unknown from a machine that predates it)."""
    name = release or "an unnamed release"
    if outcome == "crashed-on-stop":
        return f"{name} crashed on stop " + (
            f"(upgrading to {upgrading_to.split('@')[0]})" if upgrading_to
            else "(during an upgrade)")
    return f"{name} " + {"rolled-back": "failed and was rolled back",
                         "dead-end": "failed and could not be rolled back (a dead end)",
                         "crash-loop": "went into a crash loop"}.get(outcome, outcome)


def empty_row(channel: str, release: str | None) -> dict[str, Any]:
    """A release's row of `/v1/rollouts` before anything counted was reported on it."""
    return {"channel": channel, "release": release or None, "machines": 0, "outcomes": {},
            "failures": [], "checks": [], "cohorts": [], "timeline": [], "greenlight": {}}


def encode_cursor(*parts: str) -> str:
    """An opaque cursor naming the last row of a page."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> tuple[str, ...]:
    """The parts of a cursor made by `encode_cursor`.

    Raises:
        ValueError: not such a cursor.
    """
    if len(cursor) > CURSOR_MAX:  # before decoding: a nested one would recurse
        raise ValueError("not a cursor this collector gave")
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, RecursionError, binascii.Error):  # every way a decoding fails
        raise ValueError("not a cursor this collector gave") from None
    if not (isinstance(parts, list) and len(parts) == n
            and all(isinstance(p, str) and len(p) <= 200 for p in parts)):
        raise ValueError("not a cursor this collector gave")
    return tuple(parts)


class Views(Census):
    """The admin's reads and writes of machine keys, and the rollout views (mixed into
    `Store`, whose tables, engine and `counting` they use); with the census of Greenlight
    versions (`Census`)."""

    # --- machines ----------------------------------------------------------------------
    def machine_list(self, state: str | None = None, limit: int = MACHINES_PAGE,
                     after: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        """Machine keys, newest first; a page of `limit` after the key `after` names
        (its enrolment time, ISO, and id)."""
        sa, m = self.sa, self.machines
        query = sa.select(m.c.id, m.c.public_key, m.c.state, m.c.source, m.c.enrolled)
        if state is not None:
            query = query.where(m.c.state == state)
        if after is not None:
            at = datetime.fromisoformat(after[0])
            query = query.where(sa.or_(m.c.enrolled < at,
                                       sa.and_(m.c.enrolled == at, m.c.id < after[1])))
        with self.engine.connect() as c:
            rows = c.execute(query.order_by(m.c.enrolled.desc(), m.c.id.desc())
                             .limit(min(limit, MACHINES_PAGE))).all()
        runs = self.machine_greenlight([r.id for r in rows])
        return [{"id": r.id, "key": r.public_key, "state": r.state, "source": r.source,
                 "enrolled": _utc(r.enrolled).isoformat(),
                 "greenlight": runs.get(r.id, (None, None))[0],
                 "greenlight_kind": runs.get(r.id, (None, None))[1]} for r in rows]

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

    # --- rollouts ----------------------------------------------------------------------
    def release_pairs(self, after: tuple[str, str] | None, limit: int) -> list[tuple[str, str]]:
        """The (channel, release) pairs counted keys reported on, in order, `limit` after
        `after` (a release of None is "")."""
        sa, t = self.sa, self.reports
        release = sa.func.coalesce(t.c.release, "")
        query = sa.select(t.c.channel, release).distinct().where(
            t.c.installation.in_(self.counting()))
        if after is not None:
            query = query.where(sa.tuple_(t.c.channel, release) > sa.tuple_(*after))
        with self.engine.connect() as c:
            return [(ch, r) for ch, r in c.execute(
                query.order_by(t.c.channel, release).limit(min(limit, ROLLOUTS_PAGE + 1)))]

    def rollout_rows(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """Per (channel, release) of `pairs`: distinct counted machines per outcome and per
        cohort, the failures (each against the release it belongs to, in words: a
        `crashed-on-stop` with the release the machine was upgrading to), the failing checks
        ranked, and the outcomes minute by minute; bounded."""
        if not pairs:
            return {}
        sa, t = self.sa, self.reports
        release = sa.func.coalesce(t.c.release, "")
        where = [sa.tuple_(t.c.channel, release).in_(pairs),
                 t.c.installation.in_(self.counting())]
        machines = sa.func.count(sa.distinct(t.c.installation))
        failing = sa.func.count(sa.distinct(sa.case((t.c.outcome.in_(FAILED),
                                                     t.c.installation))))
        latest = sa.select(t.c.channel, release.label("release"), t.c.body, sa.func.row_number()
                           .over(partition_by=(t.c.channel, release), order_by=t.c.id.desc())
                           .label("n")).where(*where, t.c.outcome.in_(FAILED)).subquery()
        out: dict[tuple[str, str], dict[str, Any]] = {p: empty_row(*p) for p in pairs}
        ranked: dict[tuple[str, str], dict[str, list[str]]] = {}
        with self.engine.connect() as c:
            for ch, r, n in c.execute(sa.select(t.c.channel, release, machines)
                                      .where(*where).group_by(t.c.channel, release)):
                out[(ch, r)]["machines"] = int(n)
            for ch, r, outcome, n in c.execute(
                    sa.select(t.c.channel, release, t.c.outcome, machines).where(*where)
                    .group_by(t.c.channel, release, t.c.outcome)):
                out[(ch, r)]["outcomes"][outcome] = int(n)
            for ch, r, outcome, to, n in c.execute(
                    sa.select(t.c.channel, release, t.c.outcome, t.c.upgrading_to, machines)
                    .where(*where, t.c.outcome.in_(FAILED))
                    .group_by(t.c.channel, release, t.c.outcome, t.c.upgrading_to)
                    .order_by(t.c.channel, release, machines.desc(), t.c.outcome)):
                out[(ch, r)]["failures"].append({
                    "outcome": outcome, "machines": int(n), "release": r or None,
                    "upgrading_to": to.split("@")[0] if to else None,
                    "text": failure_text(outcome, r or None, to)})
            for ch, r, cohort, n, f in c.execute(
                    sa.select(t.c.channel, release, t.c.cohort, machines, failing)
                    .where(*where).group_by(t.c.channel, release, t.c.cohort)):
                out[(ch, r)]["cohorts"].append({"cohort": cohort, "machines": int(n),
                                                "failed": int(f)})
            spent = 0
            for ch, r, body in c.execute(sa.select(latest.c.channel, latest.c.release,
                                                   latest.c.body)
                                         .where(latest.c.n <= CHECK_BODIES)):
                spent += len(body)
                if spent > BODY_BUDGET:
                    break
                for check in json.loads(body).get("failed_checks", []):
                    ranked.setdefault((ch, r), {}).setdefault(
                        check["name"], []).append(check["summary"])
            points = c.execute(sa.select(t.c.channel, release, t.c.outcome, t.c.received)
                               .where(*where, t.c.outcome.in_(JUDGED))
                               .order_by(t.c.id.desc()).limit(TIMELINE_ROWS)).all()
        for key, checks in ranked.items():
            out[key]["checks"] = [{"name": name, "reports": len(s), "example": s[0]}
                                  for name, s in sorted(checks.items(),
                                                        key=lambda kv: -len(kv[1]))[:10]]
        series: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for ch, r, outcome, received in points:
            minute = _utc(received).replace(second=0, microsecond=0).isoformat()
            point = series.setdefault((ch, r), {}).setdefault(
                minute, {"t": minute, **{o: 0 for o in JUDGED}})
            point[outcome] += 1
        for key, minutes in series.items():
            out[key]["timeline"] = sorted(minutes.values(), key=lambda p: p["t"])
        for key, runs in self.row_census(pairs).items():  # what its machines run now
            out[key]["greenlight"] = runs
        return out


def _utc(at: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
