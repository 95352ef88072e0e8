"""The keys a rehearsal signs its copy of the repository with: the repository's own, read
where they are and never written there; a role that has none yet (a channel's first publish)
gets one in memory. The store's own folder is the path's scratch folder, so a publish that
fails in the copy (which removes the key files that appeared in its store's folder since it
began) can never touch the vendor's keys."""

from pathlib import Path

from securesystemslib.signer import CryptoSigner

from greenlight.release.repository import KeyStore

__all__ = ["MemoryKeys"]


class MemoryKeys(KeyStore):
    def __init__(self, folder: Path, scratch: Path) -> None:
        super().__init__(scratch)
        self._real = KeyStore(folder)
        self._made: dict[str, CryptoSigner] = {}

    def generate(self, role: str) -> CryptoSigner:
        signer = CryptoSigner.generate_ed25519()
        self._made[signer.public_key.keyid] = signer
        return signer

    def signer(self, keyid: str) -> CryptoSigner | None:
        return self._made.get(keyid) or self._real.signer(keyid)
