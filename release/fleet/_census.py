"""The census of Greenlight versions across the fleet: which Greenlight (and installed how)
the machines on each channel run, each machine counted once, by its latest report.

A report names the Greenlight that made it (`greenlight`, 0.3.0 on) and how it is installed
(`greenlight_kind`); a report without them is from 0.2.0, the first Greenlight that signs
its reports, and counts as `SILENT_VERSION` of kind `SILENT_KIND`. A machine is on the
channel of its latest report (the last received), a report about its updater (channel
`greenlight-<channel>`) counting for `<channel>`; only the machine keys `Store.counting`
says count (active ones) are in it.

- `Census`: the store's queries (mixed into `Store`, through `Views`);
- `census_endpoint`: `GET /v1/census[?channel=C]`, `greenlight.census/1`, the admin token;
  one channel's answer also says which release its machines run now (`releases`) and the
  kinds of machine they are (`cohorts`), from each machine's latest report on the channel
  itself (`Census.channel_releases`);
- `checked_census`: a collector's answer, checked before the pipeline acts on it.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

__all__ = ["CENSUS_CHANNELS", "CENSUS_SCHEMA", "KINDS", "SILENT_KIND", "SILENT_VERSION",
           "Census", "census_endpoint", "checked_census", "fold_channel"]

CENSUS_SCHEMA = "greenlight.census/1"
SILENT_VERSION = "0.2.0"
"""what a report that names no Greenlight was made by: the only earlier version that signs
its reports (and so the only one a collector counts)"""
SILENT_KIND = "unknown"
"""the kind of a machine whose report did not say how its Greenlight is installed"""
KINDS = ("exe", "python", "copy", "none", SILENT_KIND)
CENSUS_CHANNELS = 200
"""channels in one census answer, at most (in name order; `more` says when there are more)"""


def fold_channel(channel: str) -> str:
    """The channel a machine is on, from the channel of a report: a report about its updater
    (`greenlight-<channel>`) is from a machine on `<channel>`."""
    from greenlight.channels import UPDATER_PREFIX

    return channel.removeprefix(UPDATER_PREFIX) or channel


def _add(into: dict[str, dict[str, int]], version: str | None, kind: str | None,
         n: int) -> None:
    kinds = into.setdefault(version or SILENT_VERSION, {})
    kinds[kind or SILENT_KIND] = kinds.get(kind or SILENT_KIND, 0) + int(n)


def _newest_first(versions: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    from greenlight.channels import sort_versions

    return {v: dict(sorted(versions[v].items())) for v in reversed(sort_versions(versions))}


class Census:
    """The census queries (mixed into `Store`, whose tables and engine they use, and the
    rule of which keys count, `_evidence.RuleEvidence.counting`, ahead of this stub)."""

    sa: Any
    engine: Any
    reports: Any
    machines: Any

    def counting(self, established_before: datetime | None = None,
                 about: str | None = None) -> Any:  # pragma: no cover (RuleEvidence's)
        raise NotImplementedError

    def _latest(self, ids: Any = None) -> Any:
        """Each machine's latest report (the last received): its id, installation, Greenlight
        and kind, as a subquery; of the counted machines, or of `ids` (a select or a list)."""
        sa = self.sa
        last, each = self.reports.alias("last"), self.reports.alias("each")
        ids = self.counting() if ids is None else ids
        newest = sa.select(sa.func.max(each.c.id)).where(
            each.c.installation.in_(ids)).group_by(each.c.installation)
        return sa.select(last.c.id, last.c.installation, last.c.channel, last.c.greenlight,
                         last.c.greenlight_kind).where(last.c.id.in_(newest)).subquery()

    def census(self, channel: str | None = None, limit: int = CENSUS_CHANNELS
               ) -> tuple[dict[str, dict[str, Any]], bool]:
        """Per channel (or only `channel`): the counted machines on it, and how many run each
        Greenlight version, by kind: {channel: {"machines": N, "greenlight": {version:
        {kind: n}}}}; at most `limit` channels in name order, and whether there were more."""
        sa = self.sa
        latest = self._latest()
        query = sa.select(latest.c.channel, latest.c.greenlight, latest.c.greenlight_kind,
                          sa.func.count()).group_by(
            latest.c.channel, latest.c.greenlight, latest.c.greenlight_kind)
        if channel is not None:
            from greenlight.channels import UPDATER_PREFIX

            query = query.where(latest.c.channel.in_([channel, UPDATER_PREFIX + channel]))
        with self.engine.connect() as c:
            rows = c.execute(query).all()
        found: dict[str, dict[str, Any]] = {}
        for reported, version, kind, n in rows:
            on = fold_channel(reported)
            if channel is not None and on != channel:
                continue
            row = found.setdefault(on, {"machines": 0, "greenlight": {}})
            row["machines"] += int(n)
            _add(row["greenlight"], version, kind, n)
        names = sorted(found)
        return ({name: {**found[name], "greenlight": _newest_first(found[name]["greenlight"])}
                 for name in names[:limit]}, len(names) > limit)

    def _field(self, table: Any, name: str) -> Any:
        """A top-level text field of a report's JSON body, read by the database (SQLite's
        json_extract, PostgreSQL's ->>): none when absent or null."""
        sa = self.sa
        if self.engine.dialect.name == "postgresql":
            return sa.cast(table.c.body, sa.JSON)[name].as_string()
        return sa.type_coerce(table.c.body, sa.JSON)[name].as_string()

    def channel_releases(self, channel: str) -> dict[str, dict[str, int]]:
        """The counted machines on `channel` (as `census` counts them), by the release they
        run now and by cohort: {"releases": {version: machines}, "cohorts": {cohort:
        machines}}, newest release first, cohorts in name order. Both come from each
        machine's latest report on `channel` itself (one about its updater, on
        `greenlight-<channel>`, says nothing of the release): the version of its `after`
        key, else of its `before`, and its cohort. A machine without such a report, key or
        cohort is in neither, nor is a version no release can have (not canonical); an
        updater's channel has no machines of its own (they are on the channel it serves)."""
        from greenlight.channels import UPDATER_PREFIX, canonical_version, sort_versions

        if fold_channel(channel) != channel:
            return {"releases": {}, "cohorts": {}}
        sa = self.sa
        latest = self._latest()
        on = sa.select(latest.c.installation).where(
            latest.c.channel.in_([channel, UPDATER_PREFIX + channel]))
        last, each = self.reports.alias("here_last"), self.reports.alias("here_each")
        newest = sa.select(sa.func.max(each.c.id)).where(
            each.c.channel == channel, each.c.installation.in_(on)).group_by(each.c.installation)
        keys = sa.select(sa.func.coalesce(self._field(last, "after"),
                                          self._field(last, "before")).label("key"),
                         last.c.cohort).where(last.c.id.in_(newest)).subquery()
        query = sa.select(keys.c.key, keys.c.cohort, sa.func.count()).group_by(
            keys.c.key, keys.c.cohort)
        releases: dict[str, int] = {}
        cohorts: dict[str, int] = {}
        with self.engine.connect() as c:
            rows = c.execute(query).all()
        for key, cohort, n in rows:
            if cohort is not None:
                cohorts[cohort] = cohorts.get(cohort, 0) + int(n)
            version = str(key or "").partition("@")[0]
            try:
                canonical_version(version)
            except ValueError:
                continue
            releases[version] = releases.get(version, 0) + int(n)
        return {"releases": {v: releases[v] for v in reversed(sort_versions(releases))},
                "cohorts": dict(sorted(cohorts.items()))}

    def row_census(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """Per (channel, release) of `pairs` (a release of None is ""): the counted machines
        that reported on it, by the Greenlight version and kind they run now (their latest
        report, whatever it was about)."""
        if not pairs:
            return {}
        sa, t = self.sa, self.reports
        release = sa.func.coalesce(t.c.release, "")
        latest = self._latest()
        query = (sa.select(t.c.channel, release, latest.c.greenlight, latest.c.greenlight_kind,
                           sa.func.count(sa.distinct(t.c.installation)))
                 .join(latest, latest.c.installation == t.c.installation)
                 .where(sa.tuple_(t.c.channel, release).in_(pairs))
                 .group_by(t.c.channel, release, latest.c.greenlight,
                           latest.c.greenlight_kind))
        out: dict[tuple[str, str], dict[str, dict[str, int]]] = {p: {} for p in pairs}
        with self.engine.connect() as c:
            for ch, r, version, kind, n in c.execute(query):
                _add(out[(ch, r)], version, kind, n)
        return {pair: _newest_first(versions) for pair, versions in out.items()}

    def machine_greenlight(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """The Greenlight version and kind each machine of `ids` named in its latest report
        (any state: for the list of machines)."""
        if not ids:
            return {}
        latest = self._latest(ids)
        with self.engine.connect() as c:
            rows = c.execute(self.sa.select(latest.c.installation, latest.c.greenlight,
                                            latest.c.greenlight_kind)).all()
        return {i: (v or SILENT_VERSION, k or SILENT_KIND) for i, v, k in rows}


def census_endpoint(store: Census) -> Callable[[Any], Awaitable[Any]]:
    """`GET /v1/census[?channel=C]` (behind the admin token): one channel's census, with
    the releases its machines run and their cohorts, or every channel's (at most
    `CENSUS_CHANNELS`, `more` when there are more)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    from greenlight.channels import check_channel_name, printable

    async def census(request: Any) -> Any:
        channel = request.query_params.get("channel")
        if channel is not None:
            try:
                check_channel_name(channel)
            except ValueError as e:
                return JSONResponse({"error": f"channel: {printable(str(e), 200)}"}, 422)
        found, more = await run_in_threadpool(store.census, channel)
        if channel is None:
            return JSONResponse({"schema": CENSUS_SCHEMA, "channels": found, "more": more})
        return JSONResponse({"schema": CENSUS_SCHEMA, "channel": channel,
                             **found.get(channel, {"machines": 0, "greenlight": {}}),
                             **await run_in_threadpool(store.channel_releases, channel)})

    return census


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 40:
        raise ValueError(f"a count of machines: {str(value)[:40]}")
    return value


def _counts(row: dict[str, Any], field: str, check: Callable[[str], Any]
            ) -> dict[str, int]:
    """An optional {name: machines} part of a channel's census (absent: {}), each name
    passing `check` (else ValueError) and each count a count."""
    part = row.get(field, {})
    if not isinstance(part, dict):
        raise ValueError(f"{field}: not a table of machines")
    out = {}
    for name, n in part.items():
        try:
            check(name)
        except ValueError:
            raise ValueError(f"{field}: not one: {str(name)[:80]}") from None
        out[name] = _count(n)
    return out


def _release(version: str) -> None:
    from greenlight.channels import canonical_version

    if len(version) > 64:
        raise ValueError(version)
    canonical_version(version)


def _cohort(cohort: str) -> None:
    import re

    from greenlight.channels import COHORT_PATTERN

    if not re.fullmatch(COHORT_PATTERN, cohort):
        raise ValueError(cohort)


def _one(row: Any) -> dict[str, Any]:
    """One channel's census as the pipeline uses it, every part checked; its releases and
    cohorts ({} when the answer has none: every channel's census, or an older collector's)."""
    import re

    from greenlight.channels import GREENLIGHT_PATTERN

    if not isinstance(row, dict) or not isinstance(row.get("greenlight"), dict):
        raise ValueError("a channel without its greenlight versions")
    versions: dict[str, dict[str, int]] = {}
    for version, kinds in row["greenlight"].items():
        if not re.match(GREENLIGHT_PATTERN, version) or len(version) > 64:
            raise ValueError(f"a Greenlight version that is not one: {version[:80]}")
        if not isinstance(kinds, dict) or any(k not in KINDS for k in kinds):
            raise ValueError(f"Greenlight {version}: kinds other than {', '.join(KINDS)}")
        versions[version] = {k: _count(n) for k, n in kinds.items()}
    return {"machines": _count(row.get("machines")), "greenlight": versions,
            "releases": _counts(row, "releases", _release),
            "cohorts": _counts(row, "cohorts", _cohort)}


def checked_census(answer: Any, channel: str | None = None) -> dict[str, dict[str, Any]]:
    """A collector's `greenlight.census/1` answer as {channel: {"machines": N, "greenlight":
    {version: {kind: n}}, "releases": {version: n}, "cohorts": {cohort: n}}}, every name,
    version and count checked (it came over the network); releases and cohorts are {} when
    the answer has none (every channel's census has none).

    Raises:
        ValueError: not such an answer (its message one line, what was wrong).
    """
    from greenlight.channels import check_channel_name

    if not isinstance(answer, dict) or answer.get("schema") != CENSUS_SCHEMA:
        raise ValueError(f"not a {CENSUS_SCHEMA}")
    if channel is not None:
        if answer.get("channel") != channel:
            raise ValueError(f"the census of another channel than {channel}")
        return {channel: _one(answer)}
    channels = answer.get("channels")
    if not isinstance(channels, dict):
        raise ValueError("no channels")
    return {check_channel_name(str(name)): _one(row) for name, row in channels.items()}
