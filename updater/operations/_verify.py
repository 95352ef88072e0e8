"""`updater verify`: the installed release's tree against the file lists it was published
with (signed beside its archives, kept with the release when it was staged), and `--repair`,
which re-stages it from verified bytes through the transaction (REPAIR_STEPS: restage, stop,
swap, start, post-check, commit), undone like any transaction when it fails or is killed."""

from pathlib import Path

from greenlight.channels import (
    ChannelFile,
    Difference,
    FileList,
    compare,
    printable,
    version_of,
)
from greenlight.updater._errors import ArchiveError, NotFound, ServiceError, shielded
from greenlight.updater.output import VerifyReport
from greenlight.updater.product import HealthFailure, ServiceControl, config_of
from greenlight.updater.store import (
    FILE_LISTS,
    PRODUCT_MANIFEST,
    RELEASE_MANIFEST,
    HistoryEntry,
    InstallRoot,
    Journal,
    RecordedCheck,
    StepRecord,
    locked,
    queue_event,
    record,
)
from greenlight.updater.trust import TrustedRepository

__all__ = ["repair", "repair_from_bundle", "verify", "verify_and_record"]

_SHOWN = 5  # differences named in a one-line summary (all of them in --json)


def verify(root: InstallRoot, key: str | None = None) -> VerifyReport:
    """Compare a kept release (the installed one by default) with its signed file lists.

    Raises:
        NotFound: nothing installed, or no such release kept here.
    """
    import hashlib

    from greenlight.updater.transaction import kept_file_lists

    key = key or root.installed_release()
    if key is None:
        raise NotFound(f"{root.path}: nothing installed to verify")
    manifest = root.manifest(key)
    if manifest is None:
        raise NotFound(f"{root.path}: release {key} is not kept here")
    top = root.release_dir(key)
    lists = kept_file_lists(root, key)
    differences: list[Difference] = []
    verified, unlisted, checked = [], [], 0
    for name in sorted(manifest.components):
        if name in lists:
            entries = FileList.model_validate_json(lists[name]).entries
            checked += len(entries)
            differences += [d.model_copy(update={"path": name if d.path == "." else
                                                 f"{name}/{d.path}"})
                            for d in compare(entries, top / name)]
            verified.append(name)
        elif name in manifest.file_lists:  # verified once; the kept copy is gone or changed
            differences.append(Difference(kind="changed", path=f"{FILE_LISTS}/{name}.json",
                                          what="content"))
        else:
            unlisted.append(name)
    known = {*manifest.components, RELEASE_MANIFEST}
    if manifest.file_lists:
        known.add(FILE_LISTS)
        listed = {f"{name}.json" for name in manifest.file_lists}
        folder = top / FILE_LISTS
        if folder.is_dir() and not folder.is_symlink():
            differences += [Difference(kind="extra", path=f"{FILE_LISTS}/{p.name}")
                            for p in sorted(folder.iterdir()) if p.name not in listed]
    if manifest.manifest is not None:
        known.add(PRODUCT_MANIFEST)
        product = top / PRODUCT_MANIFEST
        try:
            data = product.read_bytes() if not product.is_symlink() else None
        except OSError:
            data = None
        if data is None:
            differences.append(Difference(kind="missing", path=PRODUCT_MANIFEST))
        elif hashlib.sha256(data).hexdigest() != manifest.manifest.sha256:
            differences.append(Difference(kind="changed", path=PRODUCT_MANIFEST,
                                          what="content"))
    differences += [Difference(kind="extra", path=p.name) for p in sorted(top.iterdir())
                    if p.name not in known]
    differences.sort(key=lambda d: d.path)
    return VerifyReport(root=str(root.path), release=key, verified=verified,
                        unlisted=unlisted, differences=differences, checked=checked,
                        summary=_summary(key, verified, unlisted, differences, checked))


def _summary(key: str, verified: list[str], unlisted: list[str],
             differences: list[Difference], checked: int) -> str:
    if differences:
        counts = {k: sum(d.kind == k for d in differences)
                  for k in ("changed", "missing", "extra")}
        said = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        shown = "; ".join(f"{d.kind} {printable(d.path, 120)}"
                          + (f" ({d.what})" if d.what else "") for d in differences[:_SHOWN])
        more = f"; and {len(differences) - _SHOWN} more" if len(differences) > _SHOWN else ""
        return f"{version_of(key)} differs from its signed file lists: {said}: {shown}{more}"
    if not verified:
        return (f"{version_of(key)} was published without file lists: nothing to compare "
                f"(components {', '.join(unlisted)})")
    also = f"; {', '.join(unlisted)} published without one" if unlisted else ""
    return (f"{version_of(key)}: {checked} entries of {', '.join(verified)} as signed{also}")


def verify_and_record(root: InstallRoot) -> VerifyReport:
    """`verify`, and when the release differs, a `damaged` history entry, queued for the
    fleet (the agent's scheduled verification).

    Raises:
        NotFound: nothing installed. StoreError: the history could not be written.
    """
    report = verify(root)
    if report.differences:
        _record(root, report, "damaged")
    return report


def _record(root: InstallRoot, report: VerifyReport, event: str) -> None:
    config = config_of(root)
    manifest = root.manifest(report.release)
    channel = manifest.channel if manifest is not None else "-"
    entry = HistoryEntry.model_validate({
        "event": event, "channel": channel, "from_version": version_of(report.release),
        "to_version": version_of(report.release), "from_release": report.release,
        "to_release": report.release, "summary": report.summary,
        "failed_checks": [RecordedCheck(name="verify", type="files", summary=report.summary)]
        if event == "damaged" else []})
    record(root, entry)
    queue_event(root, entry, config.outbox_size)


def repair(root: InstallRoot, repo: TrustedRepository | None) -> VerifyReport:
    """Verify the installed release and, when it differs, re-stage it from verified bytes
    (kept archives hashed as they are read, else fetched through `repo`): the services stop,
    the damaged tree is swapped for the new one, the services start and the post-check runs;
    any failure swaps the damaged tree back and restarts it.

    Raises:
        NotFound: nothing installed. TrustError: no verified copy of an archive to be had.
        ServiceError: the repaired release failed its post-check (the old tree is back).
    """
    from greenlight.updater.transaction import (
        REPAIR_STEPS,
        Transaction,
        recover,
        run_steps,
        undo_steps,
    )

    config = config_of(root)
    with locked(root):
        recover(root, config)
        found = verify(root)
        if not found.differences:
            return found
        _record(root, found, "damaged")
        key = found.release
        manifest = root.manifest(key)
        assert manifest is not None
        channel_file = ChannelFile(channel=manifest.channel, release=manifest.version,
                                   components=manifest.components, manifest=manifest.manifest,
                                   published_at=manifest.installed_at)
        journal = Journal.model_validate({
            "kind": "repair", "channel": manifest.channel, "from_release": key,
            "to_release": key, "started_at": manifest.installed_at,
            "steps": [StepRecord(name=s.name) for s in REPAIR_STEPS]})
        txn = Transaction(root, config, ServiceControl.of(root, config), journal, repo,
                          channel_file)
        try:
            journal.save(root)
            run_steps(REPAIR_STEPS, txn)
        except BaseException as error:
            with shielded():
                if journal.state_of("post-check") == "done":
                    recover(root, config)
                else:
                    errors = undo_steps(REPAIR_STEPS, txn, f"{type(error).__name__}: {error}")
                    journal.finish(root)
                    control = ServiceControl.of(root, config)
                    try:
                        control.start_all(root.installed_release())
                    except HealthFailure as e:
                        errors.append(str(e))
                    if errors:
                        record(root, HistoryEntry(
                            event="interrupted", channel=manifest.channel,
                            from_release=key, to_release=key,
                            summary=f"repair of {version_of(key)} undone with problems: "
                                    + "; ".join(errors)))
            if isinstance(error, HealthFailure):
                raise ServiceError(f"the repaired {version_of(key)} failed its post-check "
                                   f"({error}); the damaged tree is back in place") from None
            raise
        with shielded():
            journal.finish(root)
        after = verify(root)
        repaired = after.model_copy(update={
            "repaired": True,
            "summary": f"repaired: {found.summary}" if not after.differences else
                       f"repaired, yet {after.summary}"})
        _record(root, repaired, "repaired")
        return repaired


def repair_from_bundle(root: InstallRoot, bundle_path: Path) -> VerifyReport:
    """`repair` with an offline bundle as the verified source: for a release sideloaded on a
    machine that keeps no archives and reaches no repository. The bundle is read in place
    through the same TUF client as a sideload (its metadata must not be older than what the
    root trusts), and must carry the installed release itself.

    Raises:
        ArchiveError: no such file, not a bundle, or a bundle of another release; and
        whatever `repair` raises.
    """
    from greenlight.updater.store import index_tar
    from greenlight.updater.trust import open_bundle

    if not bundle_path.is_file():
        raise ArchiveError(f"{bundle_path}: no such bundle file")
    bundle_path = bundle_path.resolve()
    bundle = open_bundle(bundle_path, index_tar(bundle_path), root.metadata_dir,
                         bundle_path.name)
    installed = root.installed_release()
    if installed is not None and bundle.manifest.release != version_of(installed):
        raise ArchiveError(
            f"{bundle_path.name} carries {printable(bundle.manifest.release, 64)}, not the "
            f"installed {version_of(installed)}: a repair takes the installed release's own "
            "bytes")
    return repair(root, bundle.repository)
