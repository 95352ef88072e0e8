"""Take a new Greenlight: fetch it with the root's own trust, put it beside the others,
let it qualify against this root, then activate it in one journaled step; and the way back,
for a version whose first cycles fail.

    self_update(root, repo)  ->  SelfUpdateReport   (fetch, stage, qualify, activate)
    fall_back(root, reason)  ->  SelfUpdateReport   (the previous version again; this one
                                                     quarantined)
    cycle_ended(root, ok)                           (an agent cycle of the active version on
                                                     probation: one step done, or a strike)
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from greenlight.channels import VERSION, is_newer, now, updater_channel
from greenlight.updater.output import SelfUpdateReport
from greenlight.updater.selfupdate._find import find
from greenlight.updater.selfupdate._judge import QUALIFY_LIMIT, judge
from greenlight.updater.selfupdate._stage import copy_in, prune, stage
from greenlight.updater.store import (
    PROBATION_CYCLES,
    EventKind,
    HistoryEntry,
    InstallRoot,
    UpdaterState,
    UpdaterVersion,
    active_channel,
    exe_path,
    greenlight_kind,
    locked,
    managed_version,
    quarantine_record,
    queue_event,
    read_updaters,
    record,
    settle,
    sha256_of,
    turn_link,
    write_updaters,
)
from greenlight.updater.trust import TrustedRepository

__all__ = ["QUALIFY_LIMIT", "STRIKES", "cycle_ended", "fall_back", "from_bundle", "lift",
           "place", "self_update"]

STRIKES = 3
"""Agent cycles in a row a version on probation may end in an error (the repository not
verified, say) before it is put aside: a clean cycle clears them."""
UNMANAGED = {
    "python": "Greenlight runs from a Python environment here: its package manager moves it "
              "(docs/compatibility.md)",
    "copy": "bin/updater is an offline installer's copy from before 0.3.0: run a newer "
            "offline installer with --root on this root (docs/compatibility.md)",
    "none": "this root has no bin/updater: run the offline installer of a newer Greenlight "
            "with --root on it (docs/compatibility.md)",
}


Outcome = Literal["updated", "up-to-date", "held", "quarantined", "unmanaged", "fell-back",
                  "kept"]


def _report(root: InstallRoot, outcome: Outcome, note: str, channel: str | None = None,
            available: str | None = None) -> SelfUpdateReport:
    state = read_updaters(root)
    return SelfUpdateReport(
        root=str(root.path), outcome=outcome, note=note, running=VERSION,
        active=managed_version(root) or (state.active.version if state.active else VERSION),
        previous=state.previous.version if state.previous else None,
        available=available, channel=channel, kind=greenlight_kind(root),
        probation=state.probation)


def _queue(root: InstallRoot, entry: HistoryEntry) -> None:
    from greenlight.updater.product import config_of

    record(root, entry)
    try:
        outbox = config_of(root).outbox_size
    except Exception:  # reporting must not fail what it reports
        return
    queue_event(root, entry, outbox)


def _adopt(root: InstallRoot, state: UpdaterState) -> UpdaterState:
    """The record of the version bin/updater enters, for a root linked without one."""
    linked = managed_version(root)
    assert linked is not None  # kind "exe"
    return state.model_copy(update={"active": UpdaterVersion(
        version=linked, sha256=sha256_of(exe_path(root, linked)))})


def _event(root: InstallRoot, event: EventKind, channel: str, left: UpdaterVersion | str,
           to: UpdaterVersion | str, summary: str) -> None:
    """A Greenlight move in the history and the report outbox: from `left` to `to` (each a
    version kept here, or a release key of the updater channel)."""
    def parts(v: UpdaterVersion | str) -> tuple[str, str]:
        return (v.version, v.release_key) if isinstance(v, UpdaterVersion) else \
            (v.partition("@")[0], v)

    (from_version, from_key), (to_version, to_key) = parts(left), parts(to)
    _queue(root, HistoryEntry(event=event, channel=channel,
                              from_version=from_version, to_version=to_version,
                              from_release=from_key, to_release=to_key, summary=summary))


def _activate(root: InstallRoot, state: UpdaterState, new: UpdaterVersion,
              **final: Any) -> UpdaterState:
    """bin/updater moved to `new` in one journaled step: `pending` recorded (synced), the link
    turned (one rename, synced), the record completed (with `final`'s fields) in one write. A
    crash anywhere is settled by the next command (`store.settle`): finished when the link
    was turned, else undone."""
    write_updaters(root, state.model_copy(update={"pending": new}))
    turn_link(root, new.version)
    done = state.model_copy(update={"active": new, "previous": state.active, "pending": None,
                                    "probation": PROBATION_CYCLES, "since": now(),
                                    "strikes": 0, **final})
    write_updaters(root, done)
    return done


def self_update(root: InstallRoot, repo: TrustedRepository | Callable[[], TrustedRepository],
                told: Callable[[str], None] = lambda line: None,
                rollouts: bool = True) -> SelfUpdateReport:
    """Move this root's Greenlight to the newest release of its updater channel, if it may
    (`rollouts`: see `find`). `repo` may be made under the root's lock (a bundle's).

    Raises:
        BusyError: another updater holds the root.
        TrustError, NetworkError, ArchiveError, StoreError: one line each; nothing changed
            (a fetched version that fails is quarantined, which is reported, not raised).
    """
    kind = greenlight_kind(root)
    with locked(root):
        settle(root)
        source = repo if isinstance(repo, TrustedRepository) else repo()
        found = find(root, source, rollouts)
        state = read_updaters(root)
        running = state.active.version if state.active else VERSION
        if found.candidate is None:
            outcome: Outcome = "up-to-date" if found.available is None or not is_newer(
                found.available, running) else "held"
            return _report(root, outcome, found.note, found.channel, found.available)
        if kind in UNMANAGED:
            return _report(root, "unmanaged", f"{found.note}; {UNMANAGED[kind]}",
                           found.channel, found.available)
        candidate = found.candidate
        if state.active is not None and not is_newer(candidate.version, state.active.version):
            return _report(root, "up-to-date", f"Greenlight {state.active.version} is active "
                           f"here (this program is {VERSION})", found.channel,
                           found.available)
        told(f"fetching Greenlight {candidate.version} from {found.channel}")
        if state.active is None:
            state = _adopt(root, state)
        assert state.active is not None
        old = state.active
        new = stage(root, source, candidate)
        told(f"qualifying Greenlight {candidate.version} against {root.path}")
        refused = judge(root, new.version)
        channel = found.channel
        if refused is not None:
            write_updaters(root, state.model_copy(update={"quarantined": quarantine_record(
                state, new, f"failed to qualify: {refused}", now())}))
            prune(root, read_updaters(root))
            summary = (f"Greenlight {new.version} failed to qualify and was quarantined: "
                       f"{refused}; {old.version} stays")
            _event(root, "greenlight-quarantined", channel, candidate.key, old, summary)
            return _report(root, "quarantined", summary, channel, candidate.version)
        state = _activate(root, state, new)
        prune(root, state)
        summary = f"Greenlight {old.version} -> {new.version} (qualified, activated)"
        _event(root, "greenlight-updated", channel, old, candidate.key, summary)
        return _report(root, "updated", summary, channel, candidate.version)


def from_bundle(root: InstallRoot, bundle_path: Path,
                told: Callable[[str], None] = lambda line: None) -> SelfUpdateReport | None:
    """The Greenlight release an offline bundle carries (`release bundle --with-updater`),
    taken as online: verified against this root's trust (under its lock), qualified,
    activated. None when the bundle carries none for this root's channel.

    Raises:
        ArchiveError: not a readable bundle; and what `self_update` raises.
    """
    from greenlight.channels import BUNDLE_MANIFEST, BundleManifest
    from greenlight.updater.store import index_tar
    from greenlight.updater.trust import open_bundle

    if not bundle_path.is_file():
        return None  # said by the sideload itself
    bundle_path = bundle_path.resolve()
    index = index_tar(bundle_path)
    where = index.get(BUNDLE_MANIFEST)
    try:
        with bundle_path.open("rb") as f:
            f.seek(where[0] if where else 0)
            hint = BundleManifest.from_json(f.read(min(where[1], 65536))) if where else None
    except (OSError, ValueError):
        hint = None
    # bundle.json's word decides only whether to look: TUF verifies the rest, under the lock.
    if hint is None or hint.greenlight is None or hint.channel != active_channel(root).channel:
        return None
    return self_update(root, lambda: open_bundle(bundle_path, index, root.metadata_dir,
                                                 bundle_path.name).repository,
                       told, rollouts=False)


def place(root: InstallRoot, source: Path) -> str:
    """This very Greenlight (`source`: the one-file executable running now) made the root's
    active version, as the offline installer leaves it: beside the others, activated in the
    same journaled step, the version before kept as the fallback. A root whose Greenlight is
    newer keeps it (an installer never moves Greenlight back). Returns a line for a person.
    The caller holds the root's lock."""
    settle(root)
    state = read_updaters(root)
    current = managed_version(root) or (state.active.version if state.active else None)
    if current is not None and is_newer(current, VERSION):
        return f"bin/updater stays on Greenlight {current} (newer than {VERSION})"
    if state.active is not None and state.active.version == VERSION and \
            managed_version(root) == VERSION:
        return f"bin/updater enters Greenlight {VERSION}"
    if state.active is None and current is not None:
        state = _adopt(root, state)
    if state.active is not None and state.active.version == VERSION:
        state = state.model_copy(update={"active": state.previous, "previous": None})
    new = copy_in(root, source, VERSION)
    done = _activate(root, state, new, probation=0)
    prune(root, done)
    return f"bin/updater enters Greenlight {VERSION}"


def _requirement(root: InstallRoot) -> str | None:
    """The Greenlight the installed release's signed entry required, if any (recorded with
    the release; for one staged before 0.3.0, the kept entry of the active channel when it
    still carries that release)."""
    from greenlight.channels import ChannelFile

    key = root.installed_release()
    if key is None:
        return None
    staged = root.manifest(key)
    if staged is not None and staged.requires is not None:
        return staged.requires
    channel = active_channel(root).channel
    try:
        entry = ChannelFile.model_validate_json((root.channels_dir / f"{channel}.json")
                                                .read_bytes())
    except (OSError, ValueError):
        return None
    return entry.requires if entry.identity.key == key else None


def fall_back(root: InstallRoot, reason: str, version: str | None = None) -> SelfUpdateReport:
    """Put the active version aside (`reason`: its first cycles failed, or a person says so)
    and go back to the one before: quarantined, and the previous version active again, in
    one journaled step. With `version`, only when that is the active one (the loop names the
    version whose cycle failed). Never to a quarantined or damaged version, and never below
    what the installed release's signed entry requires: then the version stays, and says why.

    Raises:
        BusyError: another updater holds the root.
        StoreError: state/updater.json is damaged, or a link is planted in the root.
    """
    with locked(root):
        settle(root)
        state = read_updaters(root)
        bad, back = state.active, state.previous
        channel = updater_channel(active_channel(root).chosen_channel)
        if bad is None or back is None or (version is not None and bad.version != version):
            return _report(root, "up-to-date", f"nothing to fall back from: Greenlight "
                           f"{bad.version if bad else VERSION} is active"
                           + ("" if back else ", with no version before it kept"), channel)
        try:
            intact = sha256_of(exe_path(root, back.version)) == back.sha256
        except OSError:
            intact = False
        keeps = (f"{back.version} is quarantined here" if state.is_quarantined(
                     back.version, back.key) else
                 f"{back.version}'s executable is missing or changed" if not intact else None)
        needed = _requirement(root)
        if keeps is None and needed is not None and is_newer(needed, back.version):
            keeps = f"the installed release needs Greenlight >= {needed}"
        if keeps is not None:
            return _report(root, "kept", f"Greenlight {bad.version} {reason}, but stays: "
                           f"{keeps}", channel)
        quarantined = quarantine_record(state, bad, reason, now())
        state = _activate(root, state.model_copy(update={"quarantined": quarantined}), back,
                          previous=None, probation=0)
        prune(root, state)
        summary = f"Greenlight {bad.version} {reason}: quarantined, back on {back.version}"
        _event(root, "greenlight-quarantined", channel, bad, back, summary)
        return _report(root, "fell-back", summary, channel)


def lift(root: InstallRoot, version: str) -> SelfUpdateReport:
    """A Greenlight version quarantined here may be taken again (a person says its cause is
    gone).

    Raises:
        NotFound: the version is not quarantined here.
        BusyError: another updater holds the root.
        StoreError: state/updater.json is damaged.
    """
    from greenlight.updater._errors import NotFound

    with locked(root):
        state = read_updaters(root)
        if state.is_quarantined(version) is None:
            raise NotFound(f"Greenlight {version} is not quarantined here")
        write_updaters(root, state.lifted(version))
        return _report(root, "up-to-date", f"Greenlight {version} may be taken again")


def cycle_ended(root: InstallRoot, ok: bool) -> str | None:
    """An agent cycle of this version, the active one on probation, ended: cleanly (`ok`: one
    step of its probation done, its strikes cleared) or in an error (a strike). Returns why
    the version should be put aside once it has STRIKES in a row, for the agent's loop; never
    raises."""
    try:
        state = read_updaters(root)
        if state.probation <= 0 or state.active is None or state.active.version != VERSION:
            return None
        with locked(root):
            state = read_updaters(root)
            if state.probation <= 0 or state.active is None or \
                    state.active.version != VERSION:
                return None
            strikes = 0 if ok else state.strikes + 1
            write_updaters(root, state.model_copy(update={
                "probation": state.probation - 1 if ok else state.probation,
                "strikes": strikes}))
        return (f"its {strikes} agent cycles in a row ended in an error"
                if strikes >= STRIKES else None)
    except Exception:  # noqa: BLE001 - a probation step must never fail the cycle
        return None

