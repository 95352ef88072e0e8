"""The fleet's Greenlight versions, as `release status --collector` shows them and as
`release publish --collector` checks a release against them.

A collector's census (`GET /v1/census`, `release/fleet/_census.py`) says which Greenlight
versions the machines on each channel run, and how each is installed. A release whose signed
`requires` is newer than what some of them run strands those machines (they refuse the
entry, exit 17, and stay where they are) unless they can move first: publish refuses it, in
one line, while channel `greenlight-<channel>` carries no updater release that satisfies it.
`--force REASON` publishes anyway and appends the override to `OVERRIDES` in the
repository's folder (never served: `release serve` and `release sync` send only `metadata/`
and `targets/`).
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenlight.channels import is_newer, now, sort_versions
from greenlight.release._errors import ReleaseError, UsageError

if TYPE_CHECKING:
    from greenlight.channels import ChannelFile
    from greenlight.release.repository._repository import FileRepository
    from greenlight.release.repository._status import RepositoryStatus

__all__ = ["OVERRIDES", "CensusGate", "census_text", "checked_collector", "older_than",
           "with_census"]

OVERRIDES = "publish-overrides.jsonl"
"""the append-only record of publishes forced over the census, one JSON object a line"""
_KIND_WORDS = {"exe": "exe", "python": "python (pip moves it)",
               "copy": "copy (a newer offline installer moves it)", "none": "none",
               "unknown": "kind not said"}


def checked_collector(url: str | None, token: Path | None, force: str | None = None) -> None:
    """The collector options of `status` and `publish`, given together or not at all.

    Raises:
        UsageError: one without the other, or --force without --collector or a reason.
    """
    if url is not None and token is None:
        raise UsageError("--collector needs --admin-token-file FILE (the collector's admin "
                         "token)")
    if url is None and token is not None:
        raise UsageError("--admin-token-file goes with --collector URL")
    if force is not None and url is None:
        raise UsageError("--force goes with --collector URL: it publishes over the census")
    if force is not None and not force.strip():
        raise UsageError("--force REASON: say why the machines may be left behind")


def older_than(row: dict[str, Any], requires: str | None
               ) -> tuple[int, dict[str, int], dict[str, int]]:
    """The machines of a channel's census that run a Greenlight older than `requires`: how
    many, how many on each version, and of each kind."""
    versions: dict[str, int] = {}
    kinds: dict[str, int] = {}
    if requires is None:
        return 0, versions, kinds
    for version, by_kind in row["greenlight"].items():
        if is_newer(requires, version):
            versions[version] = sum(by_kind.values())
            for kind, n in by_kind.items():
                kinds[kind] = kinds.get(kind, 0) + n
    return sum(versions.values()), versions, kinds


def _kinds_text(kinds: dict[str, int]) -> str:
    return ", ".join(f"{n} {_KIND_WORDS.get(k, k)}" for k, n in
                     sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])) if n)


def census_text(row: dict[str, Any]) -> str:
    """`5 machines: 0.3.0 on 3 (2 exe, 1 python (pip moves it)), 0.2.0 on 2 (2 kind not
    said)`, newest first."""
    parts = [f"{v} on {sum(row['greenlight'][v].values())} "
             f"({_kinds_text(row['greenlight'][v])})"
             for v in reversed(sort_versions(row["greenlight"]))]
    machines = row["machines"]
    return (f"{machines} machine{'' if machines == 1 else 's'}"
            + (f": {', '.join(parts)}" if parts else " reporting"))


def with_census(report: "RepositoryStatus", url: str, token: Path) -> "RepositoryStatus":
    """`report` with each product channel's census from the collector at `url` (a channel
    that carries the updater is counted with the channel it serves).

    Raises:
        RemoteError: the collector is unreachable, refuses, or answers no census.
    """
    from greenlight.release.fleet import fetch_census
    from greenlight.release.repository._status import ChannelCensus

    channels = []
    for c in report.channels:
        if c.updater_for is None:
            row = fetch_census(url, token, c.channel)[c.channel]
            c = c.model_copy(update={"census": ChannelCensus(
                machines=row["machines"], greenlight=row["greenlight"],
                older=older_than(row, c.requires)[0])})
        channels.append(c)
    return report.model_copy(update={"channels": channels})


class CensusGate:
    """`publish`'s check of the entry it is about to sign against the census of its channel
    (`row`): refuses (`ReleaseError`, exit 1) a `requires` that machines reporting there lack
    while `greenlight-<channel>` carries no updater release that satisfies it; with `force`
    (the reason), lets it through and records the override (`override`)."""

    def __init__(self, repo: "FileRepository", channel: str, row: dict[str, Any],
                 force: str | None) -> None:
        self.repo, self.channel, self.row, self.force = repo, channel, row, force
        self.override: dict[str, Any] | None = None

    def _updater(self, requires: str) -> str | None:
        """The updater release `greenlight-<channel>` carries that satisfies `requires`."""
        from greenlight.channels import updater_channel
        from greenlight.release.repository._channels import current_channel_file

        try:
            name = updater_channel(self.channel)
        except ValueError:  # too long a name to have an updater channel
            return None
        carried = current_channel_file(self.repo, name)
        if carried is None or carried.is_revoked(carried.release) \
                or is_newer(requires, carried.release):
            return None
        return carried.release

    def __call__(self, entry: "ChannelFile") -> None:
        from greenlight.channels import UPDATER_PREFIX

        n, versions, kinds = older_than(self.row, entry.requires)
        if not n or entry.requires is None or self._updater(entry.requires) is not None:
            return
        updater = UPDATER_PREFIX + self.channel
        said = ", ".join(f"{v} on {versions[v]}" for v in reversed(sort_versions(versions)))
        line = (f"{self.channel} {entry.release} needs Greenlight >= {entry.requires}, and "
                f"{n} of the {self.row['machines']} machines reporting on {self.channel} run "
                f"older ({said}; by kind: {_kinds_text(kinds)}), while {updater} carries no "
                f"updater >= {entry.requires}: publish one there first (release "
                "publish-updater), or pass --force REASON to publish anyway (recorded)")
        if self.force is None:
            raise ReleaseError(line)
        self.override = {
            "at": now().isoformat(), "channel": self.channel, "release": entry.release,
            "requires": entry.requires, "by": _person(),
            "census": {"machines": self.row["machines"], "older": n, "versions": versions,
                       "kinds": kinds},
            "reason": " ".join(self.force.split())[:500], "refusal": line}
        self._record()

    def _record(self) -> None:
        """Append the override to `OVERRIDES`, through the repository's own writes: the
        publish that fails after it takes the line back with everything else it wrote."""
        self.repo.append_line(self.repo.path / OVERRIDES, self.override)


def _person() -> str:
    from greenlight.release.repository._rollouts import person

    return person()
