"""What `release status` says of rehearsals: for each channel's current release, its last
rehearsal on that channel (`release rehearse`, kept in the repository's folder) and the
channel changes that started it without a passed one (`--without-rehearsal`).

`rehearsal_lines` gives the lines to print, every text that reached the records (a check's
summary, a person's reason) escaped for a terminal; `rehearsal_status` the same for --json.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["rehearsal_lines", "rehearsal_status"]


def _text(value: object) -> str:
    from greenlight.channels import terminal_lines

    return terminal_lines(str(value), one_line=True)


def _when(value: object) -> str:
    """`2026-12-07 15:20Z` for a time (in UTC), else the text as it is, escaped."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return _text(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return f"{value:%Y-%m-%d %H:%M}Z"
    return _text(value)


def _overrides(repo_path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The overrides' record by (channel, release), oldest first."""
    from greenlight.release.rehearsal import overrides

    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in overrides(repo_path):
        key = (str(item.get("channel")), str(item.get("release")))
        found.setdefault(key, []).append(item)
    return found


def rehearsal_status(repo_path: Path, channels: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per (channel, current release) of `channels`, in order: {"channel", "release",
    "rehearsal": none (never rehearsed) or {"passed", "started", "seconds", "paths",
    "failed", "summary", "first_failure": none or {"path", "outcome", "detail", "check",
    "summary"}}, "overrides": [{"at", "action", "by", "refusal", "reason"}, oldest first]}."""
    from greenlight.release.rehearsal import last_rehearsal, path_name

    started_without = _overrides(repo_path)
    out = []
    for channel, release in channels:
        record = last_rehearsal(repo_path, channel, release)
        rehearsal: dict[str, Any] | None = None
        if record is not None:
            bad = record.failures()
            first = None
            if bad:
                check = bad[0].failed_checks[0] if bad[0].failed_checks else None
                first = {"path": path_name(bad[0]), "outcome": bad[0].outcome,
                         "detail": bad[0].detail, "check": check.name if check else None,
                         "summary": check.summary if check else None}
            rehearsal = {"passed": record.passed, "started": record.started.isoformat(),
                         "seconds": record.seconds, "paths": len(record.paths),
                         "failed": len(bad), "summary": record.summary(),
                         "first_failure": first}
        out.append({"channel": channel, "release": release, "rehearsal": rehearsal,
                    "overrides": [{k: o.get(k) for k in ("at", "action", "by", "refusal",
                                                         "reason")}
                                  for o in started_without.get((channel, release), [])]})
    return out


def rehearsal_lines(repo_path: Path, channels: list[tuple[str, str]]) -> list[str]:
    """The lines `release status` prints, per (channel, current release) of `channels`:
    `  beta 1.6.14: rehearsal passed, 10 paths, 2026-12-07 15:20Z`, or `  beta 1.6.14:
    rehearsal FAILED 2 of 10 paths: 1.6.10 -> 1.6.14 [default]: core-ping: SUMMARY`, or
    `  beta 1.6.14: never rehearsed`; then, for each change that started that release on
    that channel without a passed rehearsal, `    started without a rehearsal: promote by
    alice at 2026-12-07 16:00Z: REASON`. Every line escaped for a terminal."""
    lines = []
    for row in rehearsal_status(repo_path, channels):
        head = f"  {_text(row['channel'])} {_text(row['release'])}: "
        r = row["rehearsal"]
        if r is None:
            lines.append(head + "never rehearsed")
        elif not r["failed"] and r["passed"]:
            lines.append(head + f"rehearsal passed, {r['paths']} path"
                         f"{'' if r['paths'] == 1 else 's'}, {_when(r['started'])}")
        elif not r["failed"]:  # no path failed, and yet not passed (a path is missing)
            lines.append(head + f"rehearsal did not pass ({_when(r['started'])}): "
                         + _text(r["summary"]))
        else:
            first = r["first_failure"]
            why = (f"{first['check']}: {first['summary']}" if first["check"]
                   else f"{first['outcome']}: {first['detail']}" if first["detail"]
                   else first["outcome"])
            lines.append(head + f"rehearsal FAILED {r['failed']} of {r['paths']} paths: "
                         + _text(f"{first['path']}: {why}"))
        for o in row["overrides"]:
            reason = o["reason"] or "(no reason)"
            lines.append(f"    started without a rehearsal: {_text(o['action'] or 'a change')} "
                         f"by {_text(o['by'] or 'someone')} at {_when(o['at'])}: "
                         f"{_text(reason)}")
    return lines
