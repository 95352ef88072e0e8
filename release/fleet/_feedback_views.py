"""The admin's views of user feedback: the dashboard's groups, each release and cohort's
feedback beside its outcome counts (`FeedbackViews.groups`, `GET /v1/feedback/groups`), and
feedback as CSV (`feedback_csv`), every cell that a spreadsheet would read as a formula
neutralised.

What machines wrote is data: the groups carry it as the store sanitised it (control
characters escaped, a line break kept in the person's text), cut to `TEXT_SHOWN`
characters; the page sets it as text, never as markup. Only the keys `Store.counting` says
count (active ones) are in the groups, as in every view.
"""

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from greenlight.release.fleet._views import FAILED

__all__ = ["CSV_COLUMNS", "GROUPS", "LATEST", "TEXT_SHOWN", "FeedbackViews", "feedback_csv",
           "neutralised"]

GROUPS = 100
"""release and cohort groups in one answer, the most recently written to first"""
LATEST = 5
"""the latest feedback shown in each group"""
TEXT_SHOWN = 600
"""characters of a text (and of a check's evidence) in the groups; the whole in GET
/v1/feedback/{id}"""
_REPORT_BODIES = 20
"""a group's latest failure reports read for its failed checks"""
CSV_COLUMNS = ("received", "at", "id", "machine", "channel", "release", "release_key",
               "cohort", "check", "incident_release", "about_channel", "about", "source",
               "text")
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""what a spreadsheet may take a cell starting with (after spaces) for a formula (OWASP's
list, and the full-width forms some read as the same)"""


def neutralised(cell: object) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts (after spaces) like a formula
    gets a leading apostrophe."""
    text = "" if cell is None else str(cell)
    return "'" + text if text.lstrip(" ")[:1] in _FORMULA and text else text


def feedback_csv(rows: list[dict[str, Any]], header: bool = True) -> str:
    """Feedback entries (as `GET /v1/feedback` lists them) as CSV, `CSV_COLUMNS`, each cell
    neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([neutralised(row.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()


def _cut(text: object, limit: int = TEXT_SHOWN) -> str:
    said = "" if text is None else str(text)
    return said if len(said) <= limit else said[:limit - 1] + "…"


def _evidence(document: dict[str, Any], check: str | None) -> dict[str, Any] | None:
    """The failing check's last result as the machine sent it (name, summary, evidence),
    else what its last incident said of it."""
    for c in document.get("checks") or []:
        if isinstance(c, dict) and not c.get("ok") and (check is None or c.get("name") == check):
            return {"check": c.get("name"), "summary": _cut(c.get("summary")),
                    "evidence": _cut(c.get("evidence")), "at": c.get("at")}
    incident = document.get("incident")
    if isinstance(incident, dict):
        return {"check": incident.get("check"), "summary": _cut(incident.get("summary")),
                "evidence": "", "at": incident.get("at"), "incident": incident.get("event"),
                "release": incident.get("release")}
    return None


class FeedbackViews:
    """The dashboard's view of feedback (mixed into `FeedbackStore`, whose table, engine,
    reports and `counting` it uses)."""

    sa: Any
    engine: Any
    table: Any
    reports: Any

    def counting(self, established_before: datetime | None = None,
                 about: str | None = None) -> Any:  # pragma: no cover (the Store's)
        raise NotImplementedError

    def groups(self) -> list[dict[str, Any]]:
        """Per channel, release (the one it is about, `about`) and cohort, the most recently
        written to first (at most `GROUPS`): the feedback and the distinct machines that
        wrote, the checks it is filed under, the latest `LATEST` with the failing check's
        evidence, and beside them the group's outcomes from the reports (distinct machines
        reporting, failed, the most failed checks with an example)."""
        sa, f = self.sa, self.table
        key = (sa.func.coalesce(f.c.about_channel, ""), sa.func.coalesce(f.c.about, ""),
               sa.func.coalesce(f.c.cohort, ""))
        counted = f.c.installation.in_(self.counting())
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        with self.engine.connect() as c:
            for ch, rel, coh, n, machines, last in c.execute(
                    sa.select(*key, sa.func.count(), sa.func.count(sa.distinct(
                        f.c.installation)), sa.func.max(f.c.received))
                    .where(counted).group_by(*key)
                    .order_by(sa.func.max(f.c.received).desc()).limit(GROUPS)):
                out[(ch, rel, coh)] = {
                    "channel": ch or None, "release": rel or None, "cohort": coh or None,
                    "feedback": int(n), "machines": int(machines),
                    "latest_at": _utc(last).isoformat(), "checks": [], "latest": [],
                    "outcomes": {"machines": 0, "failed": 0, "checks": []}}
            if not out:
                return []
            chosen = sa.tuple_(*key).in_(list(out))
            for ch, rel, coh, check, n in c.execute(
                    sa.select(*key, f.c.failing_check, sa.func.count()).where(counted, chosen)
                    .group_by(*key, f.c.failing_check).order_by(sa.func.count().desc())):
                if check is not None:
                    out[(ch, rel, coh)]["checks"].append({"name": check, "feedback": int(n)})
            numbered = sa.select(*(k.label(n) for k, n in zip(key, ("ch", "rel", "coh"),
                                                            strict=True)),
                                 f, sa.func.row_number().over(
                                     partition_by=key, order_by=f.c.seq.desc()).label("n")
                                 ).where(counted, chosen).subquery()
            for r in c.execute(sa.select(numbered).where(numbered.c.n <= LATEST)
                               .order_by(numbered.c.seq.desc())):
                document = json.loads(r.document)
                out[(r.ch, r.rel, r.coh)]["latest"].append({
                    "id": r.feedback_id, "machine": r.installation,
                    "at": _utc(r.at).isoformat(), "received": _utc(r.received).isoformat(),
                    "source": r.source, "check": r.failing_check,
                    "incident_release": r.incident_release, "text": _cut(r.text),
                    "evidence": _evidence(document, r.failing_check)})
            self._outcomes(c, out)
        return list(out.values())

    def _outcomes(self, c: Any, out: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        """Each group's outcomes from the reports of the keys that count."""
        sa, t = self.sa, self.reports
        key = (t.c.channel, sa.func.coalesce(t.c.release, ""),
               sa.func.coalesce(t.c.cohort, ""))
        where = [sa.tuple_(*key).in_(list(out)), t.c.installation.in_(self.counting())]
        failing = sa.func.count(sa.distinct(sa.case((t.c.outcome.in_(FAILED),
                                                     t.c.installation))))
        for ch, rel, coh, n, failed in c.execute(
                sa.select(*key, sa.func.count(sa.distinct(t.c.installation)), failing)
                .where(*where).group_by(*key)):
            out[(ch, rel, coh)]["outcomes"].update(machines=int(n), failed=int(failed))
        latest = sa.select(*(k.label(n) for k, n in zip(key, ("ch", "rel", "coh"),
                                                        strict=True)),
                           t.c.body, sa.func.row_number().over(
                               partition_by=key, order_by=t.c.id.desc()).label("n")
                           ).where(*where, t.c.outcome.in_(FAILED)).subquery()
        ranked: dict[tuple[str, str, str], dict[str, list[str]]] = {}
        for ch, rel, coh, body in c.execute(
                sa.select(latest.c.ch, latest.c.rel, latest.c.coh, latest.c.body)
                .where(latest.c.n <= _REPORT_BODIES)):
            for check in json.loads(body).get("failed_checks", []):
                ranked.setdefault((ch, rel, coh), {}).setdefault(
                    check["name"], []).append(check["summary"])
        for group, checks in ranked.items():
            out[group]["outcomes"]["checks"] = [
                {"name": name, "reports": len(s), "example": _cut(s[0], 300)}
                for name, s in sorted(checks.items(), key=lambda kv: -len(kv[1]))[:3]]


def _utc(at: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
