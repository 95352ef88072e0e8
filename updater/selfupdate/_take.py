"""Take a new Greenlight: fetch it with the root's own trust, put it beside the others,
let it qualify against this root, then activate it in one journaled step; and the way back,
for a version whose first cycles fail.

    self_update(root, repo)  ->  SelfUpdateReport   (fetch, stage, qualify, activate)
    fall_back(root, reason)  ->  SelfUpdateReport   (the previous version again; this one
                                                     quarantined)
    cycle_ended(root)                               (a clean agent cycle counts towards the
                                                     active version's probation)
"""

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from greenlight.channels import VERSION, is_newer, now, updater_channel
from greenlight.updater._errors import ArchiveError, StoreError
from greenlight.updater.output import SelfUpdateReport
from greenlight.updater.selfupdate._find import Candidate, find
from greenlight.updater.store import (
    PROBATION_CYCLES,
    HistoryEntry,
    InstallRoot,
    Limits,
    UpdaterState,
    UpdaterVersion,
    active_channel,
    entry_point,
    exe_path,
    extract,
    fsync_tree,
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
from greenlight.updater.trust import Downloads, TrustedRepository

__all__ = ["QUALIFY_LIMIT", "cycle_ended", "fall_back", "from_bundle", "place",
           "self_update"]

QUALIFY_LIMIT = 120.0
"""Seconds a new version has to qualify (it reads the root; it fetches nothing)."""
UNMANAGED = {
    "python": "Greenlight runs from a Python environment here: its package manager moves it "
              "(docs/compatibility.md)",
    "copy": "bin/updater is an offline installer's copy of another Greenlight than this one: "
            "run a newer offline installer with --root on this root (docs/compatibility.md)",
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


def _is_this_program(root: InstallRoot) -> bool:
    """bin/updater is the very executable running now (an installer's copy of itself)."""
    import sys

    try:
        return bool(getattr(sys, "frozen", False)) and os.path.samefile(sys.executable,
                                                                         entry_point(root))
    except OSError:
        return False


def _folder(path: Path) -> Path:
    """A folder of the root Greenlight writes in, never through a link planted there.

    Raises:
        StoreError: a link or a file sits where the folder is.
    """
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise StoreError(f"{path}: not a folder (a link or a file is in its place); remove it")
    path.mkdir(mode=0o755, exist_ok=True)
    return path


def _adopt(root: InstallRoot, state: UpdaterState) -> UpdaterState:
    """The record of the version running now, for a root whose bin/updater is an offline
    installer's copy (made before Greenlight kept its versions side by side): the copy is
    moved beside the new one, as the previous version."""
    linked = managed_version(root)
    if linked is not None:
        return state.model_copy(update={"active": UpdaterVersion(
            version=linked, sha256=sha256_of(exe_path(root, linked)))})
    point, home = entry_point(root), exe_path(root, VERSION)
    _folder(_folder(root.path / "updater") / VERSION)
    part = home.with_name(".updater.part")
    shutil.copyfile(point, part)
    os.chmod(part, 0o755)
    fsync_tree(part.parent)
    os.replace(part, home)
    return state.model_copy(update={"active": UpdaterVersion(version=VERSION,
                                                             sha256=sha256_of(home))})


def _stage(root: InstallRoot, repo: TrustedRepository, found: Candidate) -> UpdaterVersion:
    """The new version's executable in updater/<version>/, whole and synced.

    Raises:
        TrustError, NetworkError: the artifact refused or unreachable.
        ArchiveError: the archive has no executable `updater` at its top.
    """
    info = repo.artifact_info(found.component, found.artifact)
    archive = repo.download(info, Downloads(root.downloads))
    folder = _folder(root.path / "updater")
    _folder(root.path / "bin")
    staging = folder / f".staging-{found.version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract(archive, staging, Limits(max_total_bytes=2 * 1024**3, max_members=64),
                found.artifact.strip_prefix)
        exe = staging / "updater"
        if exe.is_symlink() or not exe.is_file():
            raise ArchiveError(f"{found.artifact.target}: no file 'updater' at its top: "
                               "not a Greenlight updater release")
        os.chmod(exe, 0o755)
        fsync_tree(staging)
        dest = folder / found.version
        if dest.exists() or dest.is_symlink():
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        os.replace(staging, dest)
        from greenlight.channels import fsync_dir

        fsync_dir(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return UpdaterVersion(version=found.version, sha256=sha256_of(exe_path(root, found.version)),
                          key=found.key)


def _qualify(root: InstallRoot, new: UpdaterVersion) -> str | None:
    """Run the new version against this root, read-only (`updater qualify`); None when it
    qualified, else what it said (one line)."""
    exe = exe_path(root, new.version)
    try:
        done = subprocess.run([str(exe), "qualify", "--root", str(root.path), "--json"],
                              capture_output=True, timeout=QUALIFY_LIMIT, stdin=subprocess.DEVNULL,
                              env={k: v for k, v in os.environ.items()
                                   if not k.startswith("GREENLIGHT_")})
    except subprocess.TimeoutExpired:
        return f"it did not finish within {QUALIFY_LIMIT:.0f}s"
    except OSError as e:
        return f"it could not run: {e.strerror or e}"
    try:
        said = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        why = f"died of signal {-done.returncode}" if done.returncode < 0 else \
            f"exited {done.returncode}"
        return f"it {why} without a qualification report" + (
            f": {tail[-1][:200]}" if tail else "")
    if not isinstance(said, dict) or said.get("schema") != "greenlight.qualify/1":
        return "it did not answer with greenlight.qualify/1"
    if said.get("version") != new.version:
        return f"it says it is Greenlight {str(said.get('version'))[:40]!r}, not {new.version}"
    failed = [c for c in said.get("checks", []) if isinstance(c, dict) and not c.get("ok")]
    if done.returncode != 0 or failed or not said.get("ok"):
        first = failed[0] if failed else {}
        return (f"{str(first.get('name', 'qualify'))[:60]}: "
                f"{' '.join(str(first.get('detail', 'refused')).split())[:300]}")
    return None


def _activate(root: InstallRoot, state: UpdaterState, new: UpdaterVersion) -> UpdaterState:
    """bin/updater moved to `new` in one journaled step: `pending` recorded (synced), the link
    turned (one rename, synced), the record completed. A crash anywhere is settled by the next
    command (`store.settle`): finished when the link was turned, else undone."""
    write_updaters(root, state.model_copy(update={"pending": new}))
    turn_link(root, new.version)
    done = state.model_copy(update={"active": new, "previous": state.active, "pending": None,
                                    "probation": PROBATION_CYCLES, "since": now()})
    write_updaters(root, done)
    return done


def _prune(root: InstallRoot, state: UpdaterState) -> None:
    """Versions left behind remove themselves: only the active one and its fallback stay."""
    keep = {v.version for v in (state.active, state.previous, state.pending) if v}
    folder = root.path / "updater"
    if not folder.is_dir():
        return
    for part in folder.iterdir():
        if part.name not in keep and not part.name.startswith("."):
            shutil.rmtree(part, ignore_errors=True) if part.is_dir() else part.unlink()


def self_update(root: InstallRoot, repo: TrustedRepository,
                told: Callable[[str], None] = lambda line: None,
                rollouts: bool = True) -> SelfUpdateReport:
    """Move this root's Greenlight to the newest release of its updater channel, if it may
    (`rollouts`: see `find`).

    Raises:
        BusyError: another updater holds the root.
        TrustError, NetworkError, ArchiveError, StoreError: one line each; nothing changed
            (a fetched version that fails is quarantined, which is reported, not raised).
    """
    kind = greenlight_kind(root)
    with locked(root):
        settle(root)
        found = find(root, repo, rollouts)
        if found.candidate is None:
            outcome: Outcome = "up-to-date" if found.available is None or not is_newer(
                found.available, VERSION) else "held"
            return _report(root, outcome, found.note, found.channel, found.available)
        if kind in UNMANAGED and not (kind == "copy" and _is_this_program(root)):
            return _report(root, "unmanaged", f"{found.note}; {UNMANAGED[kind]}",
                           found.channel, found.available)
        candidate = found.candidate
        state = read_updaters(root)
        if state.active is not None and not is_newer(candidate.version, state.active.version):
            return _report(root, "up-to-date", f"Greenlight {state.active.version} is active "
                           f"here (this program is {VERSION})", found.channel,
                           found.available)
        told(f"fetching Greenlight {candidate.version} from {found.channel}")
        if state.active is None:
            state = _adopt(root, state)
        new = _stage(root, repo, candidate)
        told(f"qualifying Greenlight {candidate.version} against {root.path}")
        refused = _qualify(root, new)
        channel = found.channel
        old_key = state.active.release_key if state.active else None
        if refused is not None:
            write_updaters(root, state.model_copy(update={"quarantined": [
                *state.quarantined, quarantine_record(new, f"failed to qualify: {refused}",
                                                      now())]}))
            shutil.rmtree(exe_path(root, new.version).parent, ignore_errors=True)
            summary = (f"Greenlight {new.version} failed to qualify and was quarantined: "
                       f"{refused}; {VERSION} stays")
            _queue(root, HistoryEntry(event="greenlight-quarantined", channel=channel,
                                      from_version=new.version, to_version=VERSION,
                                      from_release=candidate.key, to_release=old_key,
                                      summary=summary))
            return _report(root, "quarantined", summary, channel, candidate.version)
        state = _activate(root, state, new)
        _prune(root, state)
        summary = f"Greenlight {VERSION} -> {new.version} (qualified, activated)"
        _queue(root, HistoryEntry(event="greenlight-updated", channel=channel,
                                  from_version=VERSION, to_version=new.version,
                                  from_release=old_key, to_release=candidate.key,
                                  summary=summary))
        return _report(root, "updated", summary, channel, candidate.version)


def from_bundle(root: InstallRoot, bundle_path: Path,
                told: Callable[[str], None] = lambda line: None) -> SelfUpdateReport | None:
    """The Greenlight release an offline bundle carries (`release bundle --with-updater`),
    taken as online: verified against this root's trust, qualified, activated. None when the
    bundle carries none for this root's channel.

    Raises:
        ArchiveError: not a readable bundle; and what `self_update` raises.
    """
    from greenlight.channels import channel_target
    from greenlight.updater.store import index_tar
    from greenlight.updater.trust import open_bundle

    if not bundle_path.is_file():
        return None  # said by the sideload itself
    bundle_path = bundle_path.resolve()
    bundle = open_bundle(bundle_path, index_tar(bundle_path), root.metadata_dir,
                         bundle_path.name)
    channel = updater_channel(active_channel(root).channel)
    if bundle.manifest.greenlight is None or bundle.channel != active_channel(root).channel:
        return None  # bundle.json's word decides only whether to look: TUF verifies the rest
    if bundle.repository.target_info(channel_target(channel)) is None:
        return None
    return self_update(root, bundle.repository, told, rollouts=False)


def place(root: InstallRoot, source: Path) -> str:
    """This very Greenlight (`source`: the one-file executable running now) made the root's
    active version, as the offline installer leaves it: beside the others, activated in the
    same journaled step, the version before kept as the fallback. A root whose active version
    is newer keeps it (Greenlight never moves back by an installer). Returns a line for a
    person. The caller holds the root's lock."""
    settle(root)
    state = read_updaters(root)
    if state.active is not None and is_newer(state.active.version, VERSION):
        return f"bin/updater stays on Greenlight {state.active.version} (newer than {VERSION})"
    home = exe_path(root, VERSION)
    _folder(_folder(root.path / "updater") / VERSION)
    _folder(root.path / "bin")
    part = home.with_name(".updater.part")
    shutil.copyfile(source, part)
    os.chmod(part, 0o755)
    fsync_tree(part.parent)
    os.replace(part, home)
    new = UpdaterVersion(version=VERSION, sha256=sha256_of(home))
    if state.active is not None and state.active.version == VERSION:
        state = state.model_copy(update={"active": None})  # the same version, made again
    done = _activate(root, state, new)
    write_updaters(root, done.model_copy(update={"probation": 0}))
    _prune(root, done)
    return f"bin/updater enters Greenlight {VERSION}"


def _requirement(root: InstallRoot) -> str | None:
    """The Greenlight the installed release's signed channel entry requires, if any."""
    from greenlight.channels import ChannelFile

    channel = active_channel(root).channel
    try:
        entry = ChannelFile.model_validate_json((root.channels_dir / f"{channel}.json")
                                                .read_bytes())
    except (OSError, ValueError):
        return None
    installed = root.installed_version()
    if installed is None or entry.release != installed:
        return None
    return entry.requires


def fall_back(root: InstallRoot, reason: str) -> SelfUpdateReport:
    """The active version failed its first cycles (`reason`): the previous version takes
    over again, and this one is quarantined. Never below what the installed release's signed
    entry requires: then the version stays, and says why.

    Raises:
        BusyError: another updater holds the root.
        StoreError: state/updater.json is damaged.
    """
    with locked(root):
        settle(root)
        state = read_updaters(root)
        bad, back = state.active, state.previous
        if bad is None or back is None or state.probation <= 0:
            return _report(root, "up-to-date", "no Greenlight version is on probation here")
        channel = updater_channel(active_channel(root).chosen_channel)
        try:
            intact = sha256_of(exe_path(root, back.version)) == back.sha256
        except OSError:
            intact = False
        if not intact:
            return _report(root, "kept", f"Greenlight {bad.version} {reason}, but stays: "
                           f"{back.version}'s executable is missing or changed", channel)
        needed = _requirement(root)
        if needed is not None and is_newer(needed, back.version):
            return _report(root, "kept", f"Greenlight {bad.version} {reason}, but stays: the "
                           f"installed release needs Greenlight >= {needed}", channel)
        quarantined = [*state.quarantined, quarantine_record(bad, reason, now())]
        write_updaters(root, state.model_copy(update={"quarantined": quarantined}))
        state = _activate(root, state.model_copy(update={"quarantined": quarantined}), back)
        state = state.model_copy(update={"previous": None, "probation": 0})
        write_updaters(root, state)
        _prune(root, state)
        summary = (f"Greenlight {bad.version} {reason}: quarantined, back on "
                   f"{back.version}")
        _queue(root, HistoryEntry(event="greenlight-quarantined", channel=channel,
                                  from_version=bad.version, to_version=back.version,
                                  from_release=bad.release_key,
                                  to_release=back.release_key,
                                  summary=summary))
        return _report(root, "fell-back", summary, channel)


def cycle_ended(root: InstallRoot) -> None:
    """An agent cycle of this version ended without an internal error: one step of its
    probation done. Never raises."""
    try:
        state = read_updaters(root)
        if state.probation <= 0 or state.active is None or state.active.version != VERSION:
            return
        with locked(root):
            state = read_updaters(root)
            if state.probation > 0 and state.active and state.active.version == VERSION:
                write_updaters(root, state.model_copy(update={"probation": state.probation - 1}))
    except Exception:  # noqa: BLE001 - a probation step must never fail the cycle
        return
