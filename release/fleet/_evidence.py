"""What counts as evidence for a planned rollout's halt rule, said once, beside the pure
rule (`_judge.judge`) that weighs it: which machine keys count (`counting`), which of their
reports a rollout's rule counts (`_counted`), and the counts the guard hands the judge
(`judged`, per cohort `by_cohort`, the cohorts known `cohorts`). A mixin of the collector's
`Store` (its `sa`, `engine`, `reports` and `machines`); every view counts by the same rule."""

import json
from datetime import datetime
from typing import Any

from greenlight.release.fleet._judge import Evidence
from greenlight.release.fleet._views import FAILED, JUDGED

__all__ = ["RuleEvidence"]


class RuleEvidence:
    """The evidence queries of the halt rule (see the module's text)."""

    sa: Any
    engine: Any
    reports: Any
    machines: Any

    def counting(self, established_before: datetime | None = None,
                 about: str | None = None) -> Any:
        """The one rule of which machine keys count, for the judge and for every view: a
        key that is active (neither pending approval nor revoked); and with
        `established_before` (when a rollout began), a key admitted by open enrolment only
        if it was enrolled before then, and by a report about another release than `about`
        (keys minted for the occasion count for nothing, whatever they report). Keys an
        admin approved or the operator loaded count from the start. A select of their ids."""
        sa, m = self.sa, self.machines
        counted = sa.select(m.c.id).where(m.c.state == "active")
        if established_before is not None:
            history = m.c.enrolled < established_before
            if about is not None:
                history = sa.and_(history, sa.func.coalesce(m.c.first_release_key, "") != about)
            counted = counted.where(sa.or_(m.c.source != "open", history))
        return counted

    def _counted(self, channel: str, release_key: str, since: datetime | None,
                 established_before: datetime | None, without: list[str] | None,
                 baseline: bool = False) -> list[Any]:
        """The conditions on the reports a rollout's rule counts (see `judged`)."""
        sa, t = self.sa, self.reports
        where = [t.c.channel == channel, t.c.release_key == release_key,
                 t.c.outcome.in_(JUDGED)]
        if since is not None:
            where.append(t.c.received >= since)
        where.append(t.c.installation.in_(self.counting(
            established_before, None if baseline else release_key)))
        if without:  # cohorts held already: judged apart
            where.append(sa.or_(t.c.cohort.is_(None), t.c.cohort.not_in(without)))
        return where

    def judged(self, channel: str, release_key: str, since: datetime | None,
               established_before: datetime | None = None,
               without: list[str] | None = None, baseline: bool = False) -> Evidence:
        """For a rollout's halt rule: distinct machines that failed `release_key` (and by
        which outcome), distinct machines that reported on it at all, and the most failed
        check with an example.
        Only the keys `counting` says count: active ones (not pending or revoked); with
        `established_before` (when the rollout began), a key admitted by open enrolment
        counts only if it was enrolled before then by a report about another release: keys
        minted for the occasion count for nothing, and the rule survives the pruning of
        reports. Keys an admin approved or the operator loaded count from the start. For
        the `baseline` (the previous release's record), a key enrolled by a report about it
        counts, if it was enrolled before the rollout began."""
        sa, t = self.sa, self.reports
        where = self._counted(channel, release_key, since, established_before, without,
                              baseline)
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
        return Evidence(failed, total, None if top is None else (top[0], top[1][0]),
                        kinds=_kinds(rows))

    def cohorts(self, channel: str, established_before: datetime | None = None,
                about: str | None = None) -> set[str]:
        """The cohorts the channel's counting machines (`counting`, as the rollout of
        `about` counts them) named in a report still kept: a key minted for the occasion
        cannot make a cohort known, so cannot turn a halt into one cohort's hold."""
        sa, t = self.sa, self.reports
        with self.engine.connect() as c:
            return {row for row in c.execute(sa.select(t.c.cohort).distinct().where(
                t.c.channel == channel, t.c.cohort.is_not(None),
                t.c.installation.in_(self.counting(established_before, about))))
                .scalars().all()}

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
            kinds: dict[str | None, list[tuple[str, int]]] = {}
            for cohort, outcome, n in c.execute(
                    sa.select(t.c.cohort, t.c.outcome, sa.func.count(sa.distinct(
                        t.c.installation))).where(*where).group_by(t.c.cohort, t.c.outcome)):
                kinds.setdefault(cohort, []).append((outcome, n))
        return {cohort: Evidence(int(f), int(n), kinds=_kinds(kinds.get(cohort, [])))
                for cohort, f, n in rows}


def _kinds(rows: Any) -> tuple[tuple[str, int], ...]:
    """(outcome, distinct machines) of the failures among `rows`, in `FAILED`'s order."""
    found = {outcome: int(n) for outcome, n in rows if outcome in FAILED and n}
    return tuple((o, found[o]) for o in FAILED if o in found)


