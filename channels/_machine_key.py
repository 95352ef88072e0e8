"""A machine's identity in the fleet: an Ed25519 key pair each installation makes for itself.

A report travels with two headers: `Greenlight-Key`, the machine's raw 32-byte public key, and
`Greenlight-Signature`, its signature over the exact bytes of the body, both in unpadded
base64url. The machine's id is the first 32 hex digits of the public key's sha256: a report's
`installation` must be that id, so the collector counts machines by key, never by a claimed
id. Shared by the machine (signing) and the collector (verifying), so that neither imports
the other's modules.
"""

import base64
import binascii
import hashlib

__all__ = ["KEY_HEADER", "SIGNATURE_HEADER", "MachineKeyError", "key_id", "machine_id",
           "new_private_key", "public_key_text", "public_raw", "sign_body", "verified_sender"]

KEY_HEADER = "Greenlight-Key"
SIGNATURE_HEADER = "Greenlight-Signature"


class MachineKeyError(ValueError):
    """A key or signature that does not hold; the message is one line, safe to show."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str, size: int, what: str) -> bytes:
    if not text or len(text) > 2 * size or not text.isascii():
        raise MachineKeyError(f"{what}: expected {size} bytes in base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MachineKeyError(f"{what}: not base64url") from None
    if len(raw) != size:
        raise MachineKeyError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def machine_id(public_raw: bytes) -> str:
    """The id a report from this key carries: 32 hex digits of the key's sha256."""
    return hashlib.sha256(public_raw).hexdigest()[:32]


def key_id(pem: bytes) -> str:
    """The machine id of a PEM private key (what its reports carry)."""
    return machine_id(public_raw(public_key_text(pem)))


def new_private_key() -> bytes:
    """A new Ed25519 private key, as PKCS#8 PEM (unencrypted: the file is 0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def _private(pem: bytes) -> "object":
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise MachineKeyError("not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise MachineKeyError("not an Ed25519 private key")
    return key


def public_key_text(pem: bytes) -> str:
    """The public half of a PEM private key, as the `Greenlight-Key` header carries it."""
    from cryptography.hazmat.primitives import serialization

    key = _private(pem)
    return _b64(key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def sign_body(pem: bytes, body: bytes) -> dict[str, str]:
    """The headers that sign `body` with this machine's key."""
    key = _private(pem)
    return {KEY_HEADER: public_key_text(pem),
            SIGNATURE_HEADER: _b64(key.sign(body))}  # type: ignore[attr-defined]


def public_raw(text: str) -> bytes:
    """A `Greenlight-Key` value's 32 raw bytes.

    Raises:
        MachineKeyError: not one.
    """
    return _unb64(text.strip(), 32, "the machine key")


def verified_sender(key: str | None, signature: str | None, body: bytes) -> tuple[str, str]:
    """The machine id and the public key (as sent) of a signed body.

    Raises:
        MachineKeyError: a header is missing or malformed, or the signature does not verify.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if key is None or signature is None:
        raise MachineKeyError(f"unsigned: a report carries {KEY_HEADER} and {SIGNATURE_HEADER} "
                        "(Greenlight 0.2.0 and later sign every report)")
    raw = public_raw(key)
    sig = _unb64(signature.strip(), 64, "the signature")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, body)
    except InvalidSignature:
        raise MachineKeyError("the signature does not verify with the machine key sent") from None
    return machine_id(raw), _b64(raw)
