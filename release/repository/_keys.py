"""Signing keys as owner-only PEM files, one file a key, named `<role>.<keyid prefix>.pem`.

A key file never has its contents logged or put in an error; a file that others can read is
refused for writing and warned about when signing.
"""

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner

from greenlight.release._errors import KeysError, LooseKeyPermissions

__all__ = ["KeyFile", "KeyStore", "LooseKeyPermissions"]


@dataclass(frozen=True)
class KeyFile:
    path: Path
    role: str
    signer: CryptoSigner

    @property
    def keyid(self) -> str:
        return self.signer.public_key.keyid


class KeyStore:
    """A folder of private keys; looks keys up by key id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[str, KeyFile] | None = None

    def generate(self, role: str) -> CryptoSigner:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = CryptoSigner.generate_ed25519()
        path = self.folder / f"{role}.{signer.public_key.keyid[:16]}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.private_bytes)
            f.flush()
            os.fsync(f.fileno())
        self._cache = None
        return signer

    def forget(self) -> None:
        """Read the folder again on next use (after keys were removed)."""
        self._cache = None

    def _load(self) -> dict[str, KeyFile]:
        if self._cache is None:
            self._cache = {}
            if self.folder.is_dir():
                for path in sorted(self.folder.glob("*.pem")):
                    try:
                        private = load_pem_private_key(path.read_bytes(), None)
                    except (ValueError, TypeError, OSError):
                        raise KeysError(
                            f"{path}: not a readable unencrypted PKCS#8 private key"
                        ) from None
                    signer = CryptoSigner(private)
                    kf = KeyFile(path, path.name.split(".", 1)[0], signer)
                    self._cache[kf.keyid] = kf
        return self._cache

    def signer(self, keyid: str) -> CryptoSigner | None:
        kf = self._load().get(keyid)
        if kf is None:
            return None
        mode = kf.path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(
                f"{kf.path}: key file is readable by group or others (mode "
                f"{stat.S_IMODE(mode):o}); run chmod 600 on it",
                LooseKeyPermissions,
                stacklevel=2,
            )
        return kf.signer

    def signers(self, keyids: list[str]) -> list[CryptoSigner]:
        found = (self.signer(k) for k in keyids)
        return [s for s in found if s is not None]
