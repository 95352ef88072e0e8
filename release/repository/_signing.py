"""Keys, thresholds, rotation, and signing across machines.

A role may need k of n signatures. When the keys on this machine cannot meet a role's
threshold, its new version is kept in `REPO/staged/<role>.json` and nothing is published
(clients keep seeing the last whole state). The other signers work from a file:

    release sign export REPO --role R -o R.json     # on the repository's machine
    release sign add R.json --key my-key.pem        # on each signer's machine, no repository
    release sign import REPO R.json                 # merge; publish once the threshold is met

Rotation replaces a role's keys; a new root must be signed by the previous root's threshold
and by its own, so clients walk from any older root to the newest. After any change of keys
the roles that no longer verify are re-signed, top down (`FileRepository.repair`).
"""

import warnings
from contextlib import AbstractContextManager
from pathlib import Path

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from pydantic import Field
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Role, Root, Targets

from greenlight.channels import Record, atomic_write
from greenlight.release._errors import KeysError, NotFound, ReleaseError
from greenlight.release.repository._keys import KeyStore, LooseKeyPermissions
from greenlight.release.repository._repository import FileRepository, all_or_nothing

__all__ = ["ImportResult", "KeyChange", "awaiting", "change_keys", "export_staged",
           "import_signatures",
           "keygen", "load_public_key", "rotate", "sign_file"]


class KeyChange(Record):
    """A role's keys after `release keys` or `release rotate`."""

    role: str
    keyids: list[str]
    threshold: int
    added: list[str]
    resigned: list[str]
    awaiting_signatures: list[str]
    retired: list[str] = Field(default_factory=list)


class ImportResult(Record):
    """What `release sign import` did with the signatures it was given."""

    role: str
    published: bool
    signatures: int
    missing: str | None = None
    resigned: list[str] = Field(default_factory=list)
    awaiting_signatures: list[str] = Field(default_factory=list)


def keygen(folder: Path, name: str) -> tuple[Path, Path]:
    """A new ed25519 key for a signer: NAME.pem (owner-only) and NAME.pub.pem."""
    signer = KeyStore(folder).generate(name)
    private = next(folder.glob(f"{name}.{signer.public_key.keyid[:16]}.pem"))
    public = folder / f"{name}.{signer.public_key.keyid[:16]}.pub.pem"
    crypto_public = load_pem_private_key(private.read_bytes(), None).public_key()
    public.write_bytes(crypto_public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


def load_public_key(path: Path) -> SSlibKey:
    """The public key in the PEM file `path`.

    Raises:
        KeysError: no such file, or not a PEM public key.
    """
    try:
        return SSlibKey.from_crypto(load_pem_public_key(path.read_bytes()))
    except (OSError, ValueError) as e:
        raise KeysError(f"{path}: not a PEM public key: {type(e).__name__}") from None


def _edit_delegation(
    repo: FileRepository, role: str
) -> AbstractContextManager[Root] | AbstractContextManager[Targets]:
    """The metadata edit that holds `role`'s keys (root, targets or artifacts)."""
    delegator = repo.delegator(role)
    return repo.edit_root() if delegator == Root.type else repo.edit_targets(delegator)


def _role_entry(signed: Root | Targets, role: str) -> Role:
    if isinstance(signed, Root):
        return signed.roles[role]
    assert signed.delegations is not None
    if signed.delegations.roles and role in signed.delegations.roles:
        return signed.delegations.roles[role]
    assert signed.delegations.succinct_roles is not None
    return signed.delegations.succinct_roles


@all_or_nothing
def change_keys(repo: FileRepository, role: str, add: list[SSlibKey] | None = None,
                generate: int = 0, remove: list[str] | None = None,
                threshold: int | None = None) -> KeyChange:
    """Add, generate or remove keys of `role` and set its threshold; then re-sign what no
    longer verifies and publish (or stage, when signatures are missing).

    Raises:
        NotFound: no repository at `repo.path`, or `role` is not delegated in it.
        KeysError: `remove` names a key the role does not have (or a prefix of several).
        ReleaseError: the threshold would be more than the role's keys.
        Conflict: the role's delegator has a version awaiting signatures.
    """
    if not repo.exists():
        raise NotFound(f"{repo.path}: no repository here")
    repo.authorizing_role(role)  # the role must exist
    new_keys = list(add or []) + [repo.keys.generate(role).public_key for _ in range(generate)]
    # Keys of the hashed bins are added to the succinct delegation, which has no role name.
    name = None if role.startswith("bin-") else role
    with _edit_delegation(repo, role) as signed:
        entry = _role_entry(signed, role)
        for key in new_keys:
            if isinstance(signed, Root):
                signed.add_key(key, role)
            else:
                signed.add_key(key, name)
        removed: list[str] = []
        for keyid in remove or []:
            if keyid not in entry.keyids:
                matches = [k for k in entry.keyids if k.startswith(keyid)]
                if len(matches) != 1:
                    raise KeysError(f"role {role} has no key {keyid!r}")
                keyid = matches[0]
            removed.append(keyid)
            if isinstance(signed, Root):
                signed.revoke_key(keyid, role)
            else:
                signed.revoke_key(keyid, name)
        if threshold is not None:
            entry.threshold = threshold
        if entry.threshold > len(entry.keyids):
            raise ReleaseError(
                f"role {role}: threshold {entry.threshold} but only {len(entry.keyids)} key(s)")
    resigned = [] if repo.pending() else repo.repair()
    _retire(repo, removed)
    return KeyChange(role=role, keyids=list(entry.keyids), threshold=entry.threshold,
                     added=[k.keyid for k in new_keys], resigned=resigned, retired=removed,
                     awaiting_signatures=repo.pending())


def _retire(repo: FileRepository, keyids: list[str]) -> None:
    """Private keys of keys a role no longer has move to `retired/` in the keys folder: kept
    (an old root may need to be read), never used to sign again."""
    retired = repo.keys.folder / "retired"
    for keyid in keyids:
        for path in repo.keys.folder.glob(f"*.{keyid[:16]}.pem"):
            retired.mkdir(mode=0o700, exist_ok=True)
            path.rename(retired / path.name)


@all_or_nothing
def rotate(repo: FileRepository, role: str, threshold: int | None = None,
           add: list[SSlibKey] | None = None) -> KeyChange:
    """Replace every key of `role` with new ones (generated here unless given)."""
    old = list(repo.authorizing_role(role).keyids)
    count = threshold or repo.authorizing_role(role).threshold
    generate = 0 if add else count
    return change_keys(repo, role, add=add, generate=generate, remove=old,
                       threshold=threshold or count)


def export_staged(repo: FileRepository, role: str, out: Path) -> Path:
    """Copy `role`'s version awaiting signatures to `out`, for the other signers.

    Raises:
        ReleaseError: no version of `role` awaits signatures.
    """
    staged = repo.staged_path(role)
    if not staged.exists():
        raise ReleaseError(f"role {role} has no version awaiting signatures")
    out.write_bytes(staged.read_bytes())
    return out


def sign_file(path: Path, key_file: Path) -> str:
    """Add one signature to an exported role file, on a machine without the repository.

    Raises:
        KeysError: `key_file` is not a readable unencrypted PKCS#8 private key.
        ReleaseError: `path` is not a TUF metadata file exported by `release sign export`.
    """
    mode = key_file.stat().st_mode
    if mode & 0o077:
        warnings.warn(f"{key_file}: key file is readable by group or others (mode "
                      f"{mode & 0o777:o}); run chmod 600 on it", LooseKeyPermissions, stacklevel=2)
    try:
        signer = CryptoSigner(load_pem_private_key(key_file.read_bytes(), None))
    except (OSError, ValueError, TypeError):
        raise KeysError(f"{key_file}: not a readable unencrypted PKCS#8 private key") from None
    try:
        md = Metadata.from_bytes(path.read_bytes())
    except Exception:
        raise ReleaseError(
            f"{path}: not a TUF metadata file exported by 'release sign export'") from None
    md.sign(signer, append=True)
    atomic_write(path, md.to_bytes(), mode=0o644)
    return signer.public_key.keyid


@all_or_nothing
def import_signatures(repo: FileRepository, path: Path) -> ImportResult:
    """Merge the signatures of an exported file into the staged version; publish when the
    threshold is met.

    Raises:
        ReleaseError: not a TUF metadata file exported by `release sign export`, or one that
            matches no version awaiting signatures.
    """
    try:
        incoming = Metadata.from_bytes(path.read_bytes())
    except Exception:
        raise ReleaseError(
            f"{path}: not a TUF metadata file exported by 'release sign export'") from None
    candidates = [r for r in repo.pending()
                  if Metadata.from_bytes(repo.staged_path(r).read_bytes()).signed_bytes
                  == incoming.signed_bytes]
    if not candidates:
        raise ReleaseError(f"{path}: matches no version awaiting signatures "
                           f"(awaiting: {', '.join(repo.pending()) or 'none'})")
    role = candidates[0]
    staged = Metadata.from_bytes(repo.staged_path(role).read_bytes())
    allowed = set(repo.signing_keyids(role, staged))
    for keyid, signature in incoming.signatures.items():
        if keyid in allowed:
            staged.signatures[keyid] = signature
    missing = repo.missing_signatures(role, staged)
    if missing is not None:
        repo.write(repo.staged_path(role), staged.to_bytes())
        return ImportResult(role=role, published=False, missing=missing,
                            signatures=len(staged.signatures))
    repo.remove(repo.staged_path(role))
    repo.store(role, staged)
    resigned = repo.repair()
    return ImportResult(role=role, published=not repo.pending(), resigned=resigned,
                        signatures=len(staged.signatures), awaiting_signatures=repo.pending())



def awaiting(repo: FileRepository) -> dict[str, str]:
    """Each role awaiting signatures (with its version), and what it still needs."""
    found = {}
    for role in repo.pending():
        md = Metadata.from_bytes(repo.staged_path(role).read_bytes())
        found[f"{role} v{md.signed.version}"] = repo.missing_signatures(role, md) or "nothing"
    return found
