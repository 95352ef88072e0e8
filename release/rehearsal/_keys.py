"""The keys a rehearsal signs its copy of the repository with: the repository's own, read
where they are; a role that has none yet (a channel's first publish) gets one in memory,
never written anywhere."""

from pathlib import Path

from securesystemslib.signer import CryptoSigner

from greenlight.release.repository import KeyStore

__all__ = ["MemoryKeys"]


class MemoryKeys(KeyStore):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self._made: dict[str, CryptoSigner] = {}

    def generate(self, role: str) -> CryptoSigner:
        signer = CryptoSigner.generate_ed25519()
        self._made[signer.public_key.keyid] = signer
        return signer

    def signer(self, keyid: str) -> CryptoSigner | None:
        return self._made.get(keyid) or super().signer(keyid)
