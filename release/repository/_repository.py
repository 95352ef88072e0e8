"""A TUF repository kept as plain files, edited through python-tuf's Repository API.

Roles: root, timestamp, snapshot and targets; targets delegates `channel-<name>` (one channel
file each) and `artifacts` (paths `artifacts/*/*/*` and `deltas/*/*/*`: TUF patterns match one
path component a `*`), which delegates by hashed bins
(`bin-00` .. `bin-ff`, TAP 15 succinct delegation) so that a client looking up one artifact
reads one small bin, whatever the number of artifacts in the repository.

Layout of REPO: `metadata/` and `targets/` are what clients fetch (serve only these);
`keys/` (by default) holds the private keys. Metadata[Any] is written with consistent snapshots:
`metadata/<version>.<role>.json` for every role but timestamp, plus an unversioned copy of the
newest (`metadata/<role>.json`) that the pipeline reads back. Target files are stored as
`targets/<dir>/<sha256>.<name>`. Every file is written atomically, and timestamp last, so a
client always sees one consistent repository state.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from greenlight.channels import atomic_write
from greenlight.release._errors import Conflict, KeysError, NotFound, ReleaseError
from greenlight.release.repository._keys import KeyStore

__all__ = ["ARTIFACTS", "BIN_BITS", "DELEGATED_EXPIRY", "EXPIRY", "SETTINGS", "FileRepository",
           "all_or_nothing", "default_keys_folder", "file_digest", "init_repository",
           "recorded_keys_folder"]

EXPIRY: dict[str, timedelta] = {
    Root.type: timedelta(days=365),
    Targets.type: timedelta(days=365),
    Snapshot.type: timedelta(days=30),
    Timestamp.type: timedelta(days=7),
}
DELEGATED_EXPIRY = timedelta(days=180)
_TOP = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
ARTIFACTS = "artifacts"
BIN_BITS = 8


def file_digest(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), f.tell()


SETTINGS = "repository.json"  # beside metadata/ and targets/, never served
P = ParamSpec("P")
R = TypeVar("R")


def default_keys_folder(path: Path) -> Path:
    """Where `release init` puts a repository's keys: beside it, outside the served tree."""
    absolute = path.absolute()
    return absolute.parent / f"{absolute.name}-keys"


def recorded_keys_folder(path: Path) -> Path:
    """The keys folder a repository remembers (repository.json), else the old `REPO/keys`."""
    try:
        settings = json.loads((path / SETTINGS).read_text())
        return Path(settings["keys"])
    except (OSError, ValueError, KeyError, TypeError):
        return path / "keys"


class FileRepository(Repository):
    def __init__(self, path: Path, keys: KeyStore | None = None) -> None:
        self.path = path
        self.metadata_dir = path / "metadata"
        self.targets_dir = path / "targets"
        self.keys = keys or KeyStore(recorded_keys_folder(path))
        # While a command runs under all_or_nothing(): each file written, with what it held.
        self._undo: dict[Path, bytes | None] | None = None
        self._serializer = JSONSerializer(compact=False)
        # Roles re-signed for a longer window (offline bundles): role -> minimum expiry.
        self.expiry_floor: dict[str, datetime] = {}
        # Roles whose new version waits in staged/ for more signatures (threshold signing).
        self.staged: list[str] = []

    # --- storage -------------------------------------------------------------------------
    @contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Run a command so that it publishes everything or changes nothing: on any error,
        every file it wrote (metadata, staged versions, targets, new keys) is put back."""
        if self._undo is not None:  # nested: the outermost command decides
            yield
            return
        self._undo = {}
        keys_before = set(self.keys.folder.glob("*.pem")) if self.keys.folder.is_dir() else set()
        try:
            yield
        except BaseException:
            for path, old in reversed(list(self._undo.items())):
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write(path, old)
            if self.keys.folder.is_dir():
                for key in set(self.keys.folder.glob("*.pem")) - keys_before:
                    key.unlink(missing_ok=True)
                self.keys.forget()
            raise
        finally:
            self._undo = None

    def _remember(self, path: Path) -> None:
        if self._undo is None or path in self._undo:
            return
        try:
            self._undo[path] = path.read_bytes()
        except FileNotFoundError:
            self._undo[path] = None

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        """Write a file of the repository (remembered for all_or_nothing)."""
        self._remember(path)
        atomic_write(path, data, mode=mode)

    def append_line(self, path: Path, item: object) -> None:
        """Append `item` as one JSON line to a record of the repository's folder (owner-only,
        never served), through `write`: a change that fails after it takes the line back; a
        torn last line stays a line of its own."""
        try:
            before = path.read_bytes()
        except FileNotFoundError:
            before = b""
        if before and not before.endswith(b"\n"):
            before += b"\n"
        self.write(path, before + json.dumps(item).encode() + b"\n", mode=0o600)

    def remove(self, path: Path) -> None:
        self._remember(path)
        path.unlink(missing_ok=True)

    def _latest_path(self, role: str) -> Path:
        return self.metadata_dir / f"{role}.json"

    def exists(self) -> bool:
        return self._latest_path(Root.type).is_file()

    def open(self, role: str) -> Metadata[Any]:
        path = self._latest_path(role)
        if path.is_file():
            return Metadata.from_bytes(path.read_bytes())
        signed: Signed
        if role == Root.type:
            signed = Root(consistent_snapshot=True)
        elif role == Snapshot.type:
            signed = Snapshot()
        elif role == Timestamp.type:
            signed = Timestamp()
        else:
            signed = Targets()
        return Metadata(signed)

    def authorizing_role(self, role: str) -> Role:
        """The role entry (keys, threshold) that signs `role`: in root or a delegator.

        Raises:
            NotFound: `role` is not delegated in this repository.
        """
        if role in _TOP:
            return self.root().get_delegated_role(role)
        delegations = self.targets().delegations
        if delegations is not None and delegations.roles and role in delegations.roles:
            return delegations.roles[role]
        bins = self.bins()
        if bins is not None and bins.is_delegated_role(role):
            return bins
        raise NotFound(f"role {role!r} is not delegated in this repository")

    def delegator(self, role: str) -> str:
        """The role whose metadata holds `role`'s keys and threshold."""
        if role in _TOP:
            return Root.type
        bins = self.bins()
        return ARTIFACTS if bins is not None and bins.is_delegated_role(role) else Targets.type

    def bins(self) -> SuccinctRoles | None:
        if not self._latest_path(ARTIFACTS).is_file():
            return None
        delegations = self.targets(ARTIFACTS).delegations
        return delegations.succinct_roles if delegations else None

    def bin_for(self, target_path: str) -> str:
        """The hashed bin that holds `target_path`.

        Raises:
            ReleaseError: the repository has no bins (not made by `release init`).
        """
        bins = self.bins()
        if bins is None:
            raise ReleaseError(f"{self.path}: no '{ARTIFACTS}' role (not made by 'release init')")
        return bins.get_role_for_target(target_path)

    def close(self, role: str, md: Metadata[Any]) -> None:
        # A role never written before is stored as version 1, as created; others are bumped.
        if self._latest_path(role).is_file():
            md.signed.version += 1
        expires = datetime.now(UTC).replace(microsecond=0) + EXPIRY.get(role, DELEGATED_EXPIRY)
        md.signed.expires = max(expires, self.expiry_floor.get(role, expires))
        self.sign_and_store(role, md)

    def signing_keyids(self, role: str, md: Metadata[Any]) -> list[str]:
        """Who may sign this version: the delegator's keys; for root, the new root's keys and
        the previous root's (a rotation must satisfy both thresholds)."""
        if role == Root.type:
            keyids = list(md.signed.roles[Root.type].keyids)
            if self._latest_path(Root.type).is_file():
                keyids += [k for k in self.root().roles[Root.type].keyids if k not in keyids]
            return keyids
        return list(self.authorizing_role(role).keyids)

    def missing_signatures(self, role: str, md: Metadata[Any]) -> str | None:
        """None when `md` meets every threshold it must meet, else what is missing."""
        checks: list[tuple[str, Root | Targets]] = []
        if role == Root.type:
            checks.append(("the new root's", md.signed))
            if self._latest_path(Root.type).is_file():
                checks.append(("the previous root's", self.root()))
        else:
            checks.append((f"{self.delegator(role)}'s", self.open(self.delegator(role)).signed))
        for whose, delegator in checks:
            try:
                delegator.verify_delegate(role, md.signed_bytes, md.signatures)
            except UnsignedMetadataError as e:
                return f"{whose} threshold for {role} is not met ({e})"
        return None

    def sign_and_store(self, role: str, md: Metadata[Any]) -> bool:
        """Sign with every local key the role allows; publish when the threshold is met,
        else keep it in staged/ for `release sign`. Returns True when published.

        Raises:
            Conflict: the role already has a version awaiting signatures in staged/.
            KeysError: no private key for a role one signature would publish, or a key file
                that does not read.
        """
        if self.staged_path(role).exists():
            raise Conflict(
                f"role {role} has a version awaiting signatures in {self.staged_path(role)}; "
                "finish it with 'release sign' or remove that file first")
        md.signatures.clear()
        for signer in self.keys.signers(self.signing_keyids(role, md)):
            md.sign(signer, append=True)
        missing = self.missing_signatures(role, md)
        if missing is not None:
            if not md.signatures and self._threshold(role, md) <= 1:
                # One signature is all it takes, and this machine has none: not a threshold
                # signing, a missing key. Nothing is staged; the command changes nothing.
                raise KeysError(
                    f"no private key for role {role} in {self.keys.folder}; pass --keys with "
                    "the folder that holds it")
            self.write(self.staged_path(role), md.to_bytes(self._serializer))
            self.staged.append(role)
            return False
        self.store(role, md)
        return True

    def _threshold(self, role: str, md: Metadata[Any]) -> int:
        """Signatures `md` needs: the most any of its delegators asks for."""
        if role == Root.type:
            needed = md.signed.roles[Root.type].threshold
            if self._latest_path(Root.type).is_file():
                needed = max(needed, self.root().roles[Root.type].threshold)
            return int(needed)
        return self.authorizing_role(role).threshold

    def store(self, role: str, md: Metadata[Any]) -> None:
        data = md.to_bytes(self._serializer)
        if role != Timestamp.type:
            self.write(self.metadata_dir / f"{md.signed.version}.{role}.json", data)
        self.write(self._latest_path(role), data)

    def staged_path(self, role: str) -> Path:
        return self.path / "staged" / f"{role}.json"

    # --- what snapshot and timestamp describe --------------------------------------------
    def _metafile(self, role: str) -> MetaFile:
        path = self._latest_path(role)
        data = path.read_bytes()
        version = Metadata.from_bytes(data).signed.version
        return MetaFile(
            version=version,
            length=len(data),
            hashes={"sha256": hashlib.sha256(data).hexdigest()},
        )

    def targets_roles(self) -> list[str]:
        roles = [Targets.type]
        delegations = self.targets().delegations
        if delegations is not None and delegations.roles:
            roles += list(delegations.roles)
        bins = self.bins()
        if bins is not None:
            roles += list(bins.get_roles())
        return roles

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {
            f"{role}.json": self._metafile(role)
            for role in self.targets_roles()
            if self._latest_path(role).is_file()
        }

    @property
    def snapshot_info(self) -> MetaFile:
        return self._metafile(Snapshot.type)

    def commit(self) -> None:
        """Publish the edits made so far: a new snapshot, then a new timestamp. While a role
        waits for signatures nothing is published: clients keep seeing the last whole state."""
        if self.pending():
            return
        self.do_snapshot()
        self.do_timestamp()

    def pending(self) -> list[str]:
        """Roles whose new version waits in staged/ for signatures."""
        folder = self.path / "staged"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    def verifies(self, role: str) -> bool:
        """Does the published version of `role` verify against its published delegator?"""
        md = self.open(role)
        delegator = self.root() if role in _TOP else self.open(self.delegator(role)).signed
        try:
            delegator.verify_delegate(role, md.signed_bytes, md.signatures)
        except UnsignedMetadataError:
            return False
        return True

    def repair(self) -> list[str]:
        """Re-sign every role that no longer verifies (its keys or threshold changed), top
        down, then publish a snapshot and timestamp unless a role awaits signatures."""
        resigned = []
        for role in [Targets.type, *self.targets_roles()[1:]]:
            if role not in self.pending() and not self.verifies(role):
                self.close(role, self.open(role))
                resigned.append(role)
        if not self.pending():
            self.commit()
        return resigned

    # --- targets -------------------------------------------------------------------------
    def add_target_file(self, target_path: str, source: Path) -> TargetFile:
        """Copy `source` into targets/ under its consistent-snapshot name; return its info."""
        sha256, length = file_digest(source)
        dest = self.stored_target_path(target_path, sha256)
        if not dest.exists():
            self._remember(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            try:
                shutil.copyfile(source, tmp)
                tmp.chmod(0o644)
                with tmp.open("rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, dest)
            except BaseException:  # a full disk, a kill: no half-copied file is left
                tmp.unlink(missing_ok=True)
                raise
        return TargetFile(length=length, hashes={"sha256": sha256}, path=target_path)

    def add_target_bytes(self, target_path: str, data: bytes) -> TargetFile:
        sha256 = hashlib.sha256(data).hexdigest()
        dest = self.stored_target_path(target_path, sha256)
        if not dest.exists():
            self.write(dest, data)
        return TargetFile(length=len(data), hashes={"sha256": sha256}, path=target_path)

    def stored_target_path(self, target_path: str, sha256: str) -> Path:
        directory, _, name = target_path.rpartition("/")
        return self.targets_dir / directory / f"{sha256}.{name}"

    def read_target(self, info: TargetFile) -> bytes:  # the stored bytes of a target
        return self.stored_target_path(info.path, info.hashes["sha256"]).read_bytes()


def init_repository(path: Path, keys_dir: Path | None = None) -> FileRepository:
    """Create a new repository: one ed25519 key for each top-level role, empty targets.

    The keys go to `keys_dir`, by default `<REPO>-keys` beside the repository (never inside
    what is served), and `REPO/repository.json` remembers where, so that later commands need
    no --keys.

    Raises:
        ReleaseError: a repository is there already, or the keys folder would be served.
    """
    keys_folder = (keys_dir or default_keys_folder(path)).absolute()
    served = [path.absolute() / "metadata", path.absolute() / "targets"]
    if any(keys_folder == s or keys_folder.is_relative_to(s) for s in served):
        raise KeysError(f"--keys {keys_dir}: inside the served tree of {path}; choose a "
                           "folder outside metadata/ and targets/")
    repo = FileRepository(path, KeyStore(keys_folder))
    if repo.exists():
        raise Conflict(f"{path}: a repository is already there (metadata/root.json exists)")
    if path.exists() and any(p.name in ("metadata", "targets") for p in path.iterdir()):
        raise Conflict(f"{path}: has metadata/ or targets/ already; choose an empty folder")
    path.mkdir(parents=True, exist_ok=True)
    repo.targets_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path / SETTINGS, json.dumps(
        {"format": "greenlight.repository/1", "keys": str(keys_folder)}, indent=2).encode(),
        mode=0o600)

    root_md = repo.open(Root.type)
    root = root_md.signed
    assert isinstance(root, Root)
    for role in _TOP:
        signer = repo.keys.generate(role)
        root.add_key(signer.public_key, role)
    repo.close(Root.type, root_md)
    targets_md = repo.open(Targets.type)
    targets = targets_md.signed
    assert isinstance(targets, Targets)
    targets.delegations = Delegations(keys={}, roles={
        ARTIFACTS: DelegatedRole(ARTIFACTS, [], 1, True, paths=["artifacts/*/*/*", "deltas/*/*/*"]),
    })
    targets.add_key(repo.keys.generate(ARTIFACTS).public_key, ARTIFACTS)
    repo.close(Targets.type, targets_md)

    bins_key = repo.keys.generate("bins").public_key
    artifacts_md = repo.open(ARTIFACTS)
    artifacts = artifacts_md.signed
    assert isinstance(artifacts, Targets)
    artifacts.delegations = Delegations(
        keys={bins_key.keyid: bins_key},
        succinct_roles=SuccinctRoles([bins_key.keyid], 1, BIN_BITS, "bin"),
    )
    repo.close(ARTIFACTS, artifacts_md)
    # Every bin exists from the start, empty: a client asking for an unknown artifact gets
    # "not found", not "not in snapshot".
    assert artifacts.delegations is not None and artifacts.delegations.succinct_roles is not None
    for name in artifacts.delegations.succinct_roles.get_roles():
        repo.close(name, repo.open(name))
    repo.commit()
    return repo


def all_or_nothing(
    command: "Callable[Concatenate[FileRepository, P], R]",
) -> "Callable[Concatenate[FileRepository, P], R]":
    """A pipeline command that publishes everything or changes nothing (see
    `FileRepository.all_or_nothing`)."""

    def run(repo: FileRepository, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with repo.all_or_nothing():
            return command(repo, *args, **kwargs)

    return wraps(command)(run)
