"""The upgrade's steps, each a `Step(name, do, undo)` over a `Transaction`:

    fetch -> stage -> preflight -> stop -> switch -> start -> post-check -> commit

`STEPS` is the one list that the engine, recovery and the crash tests all read. Handlers are
thin: they read what they need from the transaction and its journal, and undo reads only
the journal and the disk, so recovery by another process can run it."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenlight.channels import (
    FILES_SCHEMA,
    ChannelFile,
    ComponentArtifact,
    DeltaError,
    apply_delta,
    atomic_write,
    fsync_dir,
    remove_path,
    version_of,
)
from greenlight.updater._errors import ConfigError, GreenlightError, TrustError
from greenlight.updater.output import DeltaUse
from greenlight.updater.product import (
    Config,
    ProductManifest,
    ServiceControl,
    hand_over,
    hands_over,
    layered,
    load_manifest,
    preflight,
    runs_preflight,
    stop_shadows,
    stop_successors,
)
from greenlight.updater.store import FILE_LISTS, InstallRoot, Journal, Region, stage_release
from greenlight.updater.transaction._engine import Step
from greenlight.updater.trust import Downloads, Progress, TrustedRepository, verifying

__all__ = ["DELTA_PAYS", "REPAIR_STEPS", "ROLLBACK_STEPS", "STEPS", "STEPS_OF", "Transaction",
           "do_commit", "do_fetch", "do_post_check", "do_preflight", "do_stage", "do_start",
           "do_stop", "do_switch", "file_lists", "kept_file_lists", "undo_preflight",
           "undo_stage", "undo_start", "undo_stop", "undo_switch"]


@dataclass
class Transaction:
    """One upgrade (or rollback) in progress: its journal, and what its steps produce."""

    root: InstallRoot
    config: Config
    control: ServiceControl
    journal: Journal
    repo: TrustedRepository | None = None
    channel_file: ChannelFile | None = None
    progress: Progress | None = None
    bytes_fetched: int = 0
    pruned: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    deltas: list[DeltaUse] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    """what the undo handlers found and removed or stopped, said by recovery"""

    @property
    def new(self) -> str:
        """The key of the release the transaction goes to."""
        return self.journal.to_release

    @property
    def old(self) -> str | None:
        """The key of the release it leaves (None on a first install)."""
        return self.journal.from_release


DELTA_PAYS = 0.5  # take a delta only when it is clearly smaller than the full artifact


def _via_delta(txn: Transaction, name: str, artifact: ComponentArtifact,
               store: Downloads) -> DeltaUse:
    """Rebuild the artifact from a kept base and a verified delta; any failure says why and
    leaves the full download to the caller."""
    assert txn.repo is not None
    usable = [d for d in artifact.deltas
              if store.path(d.base_sha256).is_file() and d.length < DELTA_PAYS * artifact.length]
    if not usable:
        why = "no delta offered" if not artifact.deltas else "no base release kept in downloads/"
        return DeltaUse(component=name, used=False, reason=why)
    delta = min(usable, key=lambda d: d.length)
    use = DeltaUse(component=name, used=False, from_version=delta.from_version,
                   delta_bytes=delta.length, method=delta.method, reason="")
    try:
        info = txn.repo.target_info(delta.target)
        if info is None or info.hashes.get("sha256") != delta.sha256 or info.length != delta.length:
            raise TrustError(f"delta {delta.target}: not the signed target the channel file names")
        patch = txn.repo.download(info, store, txn.progress).read_bytes()
        txn.bytes_fetched += delta.length
        rebuilt = apply_delta(store.path(delta.base_sha256).read_bytes(), patch)
        digest = hashlib.sha256(rebuilt).hexdigest()
        if len(rebuilt) != artifact.length or digest != artifact.sha256:
            raise DeltaError("the rebuilt artifact does not match the signed sha256 and length")
        atomic_write(store.path(artifact.sha256), rebuilt)
    except (DeltaError, GreenlightError, OSError) as e:
        return use.model_copy(update={"reason": f"{type(e).__name__}: {e}"})
    return use.model_copy(update={"used": True, "reason": "delta applied and verified"})


def do_fetch(txn: Transaction) -> None:
    """The release into downloads/, what decides whether it is wanted first: its signed product
    manifest, verified and loaded as this machine will run it, and its components' signed file
    lists; only then each component's archive (by a delta where one pays). A manifest that is
    tampered, does not load or does not fit greenlight.toml fetches no archive."""
    assert txn.repo is not None and txn.channel_file is not None
    store = Downloads(txn.root.downloads)
    _fetch_manifest(txn, store)
    file_lists(txn.repo, txn.channel_file, store)
    for name, artifact in sorted(txn.channel_file.components.items()):
        info = txn.repo.artifact_info(name, artifact)
        if store.find(artifact.sha256, artifact.length) is not None:
            continue
        with verifying(f"artifact {artifact.target}"):
            if txn.repo.region(info) is not None:
                continue  # in an offline bundle: staged from there, hashed as it is read
        use = _via_delta(txn, name, artifact, store)
        txn.deltas.append(use)
        if not use.used:
            txn.bytes_fetched += artifact.length
            txn.repo.download(info, store, txn.progress)


def _fetch_manifest(txn: Transaction, store: Downloads) -> None:
    """The release's product manifest into downloads/, verified against the signed target
    the channel file names, loaded, and merged with greenlight.toml as `stage` will.

    Raises:
        TrustError: not the signed target (tampered on the mirror, or another one).
        ConfigError: it does not load, or does not fit this machine's greenlight.toml.
    """
    assert txn.repo is not None and txn.channel_file is not None
    ref = txn.channel_file.manifest
    if ref is None:
        return
    if store.find(ref.sha256, ref.length) is None:
        signed = txn.repo.target_info(ref.target)
        if (signed is None or signed.length != ref.length
                or signed.hashes.get("sha256") != ref.sha256):
            raise TrustError(f"manifest {ref.target} refused: not the signed target the "
                             "channel file names")
        txn.repo.download(signed, store)
    loaded = _loaded_product(txn, store)
    if loaded is not None:
        layered(txn.control.config, loaded[1], version_of(txn.new))


def _product(txn: Transaction, store: Downloads) -> bytes | None:
    """The release's verified product manifest, loaded as the machine will run it; None for
    a release without one.

    Raises:
        ConfigError: a manifest this machine cannot load (nothing was stopped yet).
    """
    loaded = _loaded_product(txn, store)
    return None if loaded is None else loaded[0]


def _loaded_product(txn: Transaction, store: Downloads) -> tuple[bytes, ProductManifest] | None:
    """`_product`, with the manifest it loaded."""
    assert txn.channel_file is not None
    ref = txn.channel_file.manifest
    if ref is None:
        return None
    kept = store.find(ref.sha256, ref.length)
    if kept is None:
        raise TrustError(f"manifest {ref.target}: not fetched and verified")
    data = kept.read_bytes()
    if hashlib.sha256(data).hexdigest() != ref.sha256:  # changed since it was verified
        kept.unlink()
        signed = txn.repo.target_info(ref.target) if txn.repo is not None else None
        if signed is None:
            raise TrustError(f"manifest {ref.target} refused: the copy kept in downloads/ no "
                             "longer matches its signed sha256")
        data = txn.repo.download(signed, store).read_bytes()  # type: ignore[union-attr]
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise TrustError(f"manifest {ref.target} refused: not its signed sha256")
    try:
        return data, load_manifest(data.decode(), f"the manifest of {txn.channel_file.release}")
    except UnicodeDecodeError:
        raise ConfigError(f"the manifest of {txn.channel_file.release} is not UTF-8 "
                          "text") from None


def file_lists(repo: TrustedRepository | None, channel_file: ChannelFile,
               store: Downloads) -> dict[str, bytes]:
    """Each component's signed file list, where it was published with one: fetched through
    TUF (or read from the bundle), its hash and length checked against the signed target,
    and the list checked to be about this component's archive.

    Raises:
        TrustError: a list that is not its signed target, or lists another archive.
    """
    from greenlight.channels import FileList, files_target

    lists: dict[str, bytes] = {}
    if repo is None:
        return lists
    for name, a in sorted(channel_file.components.items()):
        path = files_target(name, a.version, a.sha256)
        info = repo.target_info(path)
        if info is None:
            continue  # published before releases carried file lists
        sha = info.hashes.get("sha256", "")
        where = repo.region(info)
        if where is not None:  # in an offline bundle: read in place, never copied
            with where[0].open("rb") as f:
                f.seek(where[1])
                data = f.read(where[2])
        else:
            kept = store.find(sha, info.length)
            data = kept.read_bytes() if kept is not None else b""
            if hashlib.sha256(data).hexdigest() != sha:
                data = repo.download(info, store).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise TrustError(f"file list {path} refused: not its signed sha256")
        try:
            listed = FileList.model_validate_json(data)
        except ValueError:
            raise TrustError(f"file list {path} refused: not a {FILES_SCHEMA}") from None
        if listed.artifact != a.sha256:
            raise TrustError(f"file list {path} refused: it lists another archive")
        lists[name] = data
    return lists


def do_stage(txn: Transaction) -> None:
    assert txn.channel_file is not None
    if txn.root.manifest(txn.new) is None:
        txn.journal.staged_new = True
        txn.journal.save(txn.root)
    store = Downloads(txn.root.downloads)
    product = _product(txn, store)
    _stage(txn, store, product, file_lists(txn.repo, txn.channel_file, store))
    txn.control.layer(txn.new)  # the manifest under greenlight.toml: refused before any stop


def _stage(txn: Transaction, store: Downloads, product: bytes | None,
           lists: dict[str, bytes], **where: Any) -> None:
    """`stage_release` from the verified archives. A kept artifact that rotted, or was
    changed, since it was verified is caught as it is unpacked (each is hashed as it is
    read); those that do not match are discarded and fetched again, once."""
    assert txn.channel_file is not None
    try:
        stage_release(txn.root, txn.channel_file, _archives(txn, store), product, lists,
                      **where)
    except TrustError:
        if not _refetch_rotten(txn, store):
            raise
        stage_release(txn.root, txn.channel_file, _archives(txn, store), product, lists,
                      **where)


def _archives(txn: Transaction, store: Downloads) -> dict[str, Path | Region]:
    """Each component's archive, read where it is (kept in downloads/, or inside an offline
    bundle) and hashed against the signed sha256 and length as it is unpacked."""
    assert txn.channel_file is not None
    archives: dict[str, Path | Region] = {}
    for name, a in txn.channel_file.components.items():
        kept = store.find(a.sha256, a.length)
        where = None if kept is not None or txn.repo is None else txn.repo.region(
            txn.repo.artifact_info(name, a))
        archives[name] = (Region(store.path(a.sha256), 0, a.length, a.sha256, a.target,
                                 "kept in downloads/") if where is None else
                          Region(where[0], where[1], where[2], a.sha256, a.target))
    return archives


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refetch_rotten(txn: Transaction, store: Downloads) -> bool:
    """Discard the kept artifacts whose bytes no longer match their signed sha256, fetch
    each again (recorded in the report's deltas), and say whether any was."""
    assert txn.channel_file is not None
    rotten = []
    for name, a in sorted(txn.channel_file.components.items()):
        kept = store.find(a.sha256, a.length)
        if kept is not None and _sha256_of(kept) != a.sha256:
            kept.unlink()
            rotten.append((name, a))
    if not rotten or txn.repo is None:
        return False
    for name, a in rotten:
        with verifying(f"artifact {a.target}"):
            txn.repo.download(txn.repo.artifact_info(name, a), store, txn.progress)
        txn.bytes_fetched += a.length
        txn.deltas.append(DeltaUse(component=name, used=False, reason=(
            "the artifact kept in downloads/ no longer matched its signed sha256: discarded "
            "and fetched again")))
    return True


def undo_stage(txn: Transaction) -> None:
    staged = list(txn.root.releases.glob(f".staging-{txn.new}"))
    if txn.journal.staged_new and txn.root.installed_release() != txn.new:
        staged.append(txn.root.release_dir(txn.new))
    found = [path for path in staged if path.exists() or path.is_symlink()]
    for path in found:
        remove_path(path)
    if found:
        txn.undone.append(f"the staged {version_of(txn.new)} removed")


def do_preflight(txn: Transaction) -> None:
    """The new release proven beside the running one, on sockets of its own, before the
    running one is touched (a release that declares its sockets and can run twice)."""
    if txn.old is not None and runs_preflight(txn.control.config_for(txn.new)):
        preflight(txn.control, txn.new, txn.old)


def undo_preflight(txn: Transaction) -> None:
    try:
        names = [s.name for s in txn.control.config_for(txn.new).service]
    except GreenlightError:
        names = []  # its manifest is gone: the records alone say what ran
    stopped = stop_shadows(txn.root, names)
    if stopped:
        txn.undone.append(f"preflight's copies of {', '.join(stopped)} stopped")


def _handover(txn: Transaction) -> bool:
    """The switch is a handover (see product._handover): the old release keeps serving until
    each of its services' successors has taken over."""
    return hands_over(txn.control, txn.control.config_for(txn.new), txn.old)


def do_stop(txn: Transaction) -> None:
    """Stop the running release, or leave it serving for a handover (the start step stops it).

    Raises:
        HealthFailure: a service of the running release (not the new one) crashed when stopped."""
    if _handover(txn):
        txn.journal.handover = True  # the start step stops the old release, service by service
        txn.journal.save(txn.root)
        return
    outcomes = txn.control.stop_all(txn.old)
    crash = txn.control.stop_crash(txn.old, outcomes)
    if crash is not None:
        raise crash


def undo_stop(txn: Transaction) -> None:
    txn.control.start_all(txn.root.installed_release())


def do_switch(txn: Transaction) -> None:
    txn.root.switch_current(txn.new)


def undo_switch(txn: Transaction) -> None:
    if txn.old is None:
        txn.root.current.unlink(missing_ok=True)
    elif txn.root.installed_release() != txn.old:
        txn.root.switch_current(txn.old)


def do_start(txn: Transaction) -> None:
    if txn.journal.handover and txn.old is not None:
        hand_over(txn.control, txn.old, txn.new)
    else:
        txn.control.start_all(txn.new)


def undo_start(txn: Transaction) -> None:
    try:
        names = [s.name for s in txn.control.config_for(txn.new).service]
    except GreenlightError:
        names = []
    stop_successors(txn.control, names)  # a handover's successors not yet adopted
    txn.control.stop_all(txn.new)


def do_post_check(txn: Transaction) -> None:
    health = txn.control.config_for(txn.new).health  # the new release's own settings
    txn.control.post_check(txn.new, health.grace, health.soak)


def do_commit(txn: Transaction) -> None:
    txn.pruned = txn.root.prune(txn.config.keep_releases)


STEPS: list[Step[Transaction]] = [
    Step("fetch", do_fetch),
    Step("stage", do_stage, undo_stage),
    Step("preflight", do_preflight, undo_preflight),
    Step("stop", do_stop, undo_stop),
    Step("switch", do_switch, undo_switch),
    Step("start", do_start, undo_start),
    Step("post-check", do_post_check),
    Step("commit", do_commit),
]
ROLLBACK_STEPS = [s for s in STEPS if s.name not in ("fetch", "stage", "preflight")]


# --- repair: the installed release re-staged from verified bytes, in place ----------------
def _repairing(txn: Transaction) -> Path:
    return txn.root.releases / f".repair-{txn.new}"


def _damaged(txn: Transaction) -> Path:
    return txn.root.releases / f".damaged-{txn.new}"


def _do_restage(txn: Transaction) -> None:
    """The release unpacked anew beside itself, from archives hashed as they are read (kept
    in downloads/, else fetched through TUF) and its signed file lists."""
    assert txn.channel_file is not None
    store = Downloads(txn.root.downloads)
    needed = [(a.target, a.sha256, a.length) for a in txn.channel_file.components.values()]
    if txn.channel_file.manifest is not None:
        ref = txn.channel_file.manifest
        needed.append((ref.target, ref.sha256, ref.length))
    missing = [target for target, sha, length in needed if store.find(sha, length) is None]
    if missing and txn.repo is None:
        raise TrustError(f"cannot repair: {missing[0]} is not kept in downloads/ and this "
                         "root has no repository to fetch it from")
    if missing:
        do_fetch(txn)
    lists = kept_file_lists(txn.root, txn.new)
    if txn.repo is not None and len(lists) < len(txn.channel_file.components):
        lists = file_lists(txn.repo, txn.channel_file, store)
    product = _product(txn, store)
    try:
        kept = txn.root.manifest(txn.new)
    except GreenlightError:  # its release.json is part of the damage
        kept = None
    _stage(txn, store, product, lists, staging=_repairing(txn),
           installed_at=kept.installed_at if kept is not None else None)


def _undo_restage(txn: Transaction) -> None:
    remove_path(_repairing(txn))


def _do_swap(txn: Transaction) -> None:
    """The damaged tree out, the re-staged one in its place: two renames, then synced."""
    final, damaged = txn.root.release_dir(txn.new), _damaged(txn)
    if final.exists() and not damaged.exists():
        final.rename(damaged)
    _repairing(txn).rename(final)
    fsync_dir(txn.root.releases)


def _undo_swap(txn: Transaction) -> None:
    final, damaged = txn.root.release_dir(txn.new), _damaged(txn)
    if not damaged.exists():
        return  # never swapped, or already undone
    if final.exists():
        remove_path(_repairing(txn))
        final.rename(_repairing(txn))
    damaged.rename(final)
    fsync_dir(txn.root.releases)


def _do_discard_damaged(txn: Transaction) -> None:
    remove_path(_damaged(txn))
    remove_path(_repairing(txn))


REPAIR_STEPS: list[Step[Transaction]] = [
    Step("restage", _do_restage, _undo_restage),
    Step("stop", do_stop, undo_stop),
    Step("swap", _do_swap, _undo_swap),
    Step("start", do_start, undo_start),
    Step("post-check", do_post_check),
    Step("commit", _do_discard_damaged),
]
STEPS_OF = {"upgrade": STEPS, "rollback": STEPS, "repair": REPAIR_STEPS}
"""The steps a journal of each kind runs, undoes and commits by (recovery reads it)."""


def kept_file_lists(root: InstallRoot, key: str) -> dict[str, bytes]:
    """The file lists kept with an installed release whose bytes still match the sha256 its
    release.json recorded when they were verified; a list that does not is left out."""
    manifest = root.manifest(key)
    lists: dict[str, bytes] = {}
    for name, sha in (manifest.file_lists.items() if manifest is not None else ()):
        try:
            data = (root.release_dir(key) / FILE_LISTS / f"{name}.json").read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() == sha:
            lists[name] = data
    return lists
