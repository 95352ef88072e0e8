"""The client imports no cloud SDK it never uses.

securesystemslib's signer package imports, when its module is loaded, the SDK of every key
service it can sign with (boto3 for AWS KMS, Azure's, Google Cloud's, hvac, a PKCS#11
binding), each inside a `try` that falls back when the SDK is missing. The client only
verifies with the keys in TUF metadata and never signs through a key service, yet on a host
where boto3 happens to be installed every `updater` process paid for importing it (about
0.15 s warm, more cold).

`keep_cloud_sdks_out()` installs a finder that answers "not installed" for those SDKs, and
only to an import made while one of the signer package's modules is being loaded: the same
path securesystemslib takes on a host without them. Everyone else in the process, and the
signer package's own imports made later inside a function, import them as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType

__all__ = ["CLOUD_SDKS", "keep_cloud_sdks_out"]

# The top-level names securesystemslib.signer's modules import at load time for key services.
CLOUD_SDKS = frozenset({"azure", "boto3", "botocore", "google", "hvac", "keylet", "pkcs11"})
_SIGNER_PACKAGE = "securesystemslib.signer"


class _CloudSdkFinder:
    """A meta path finder that refuses the cloud SDKs to the signer package's module load."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] not in CLOUD_SDKS or not _loading_signer_module():
            return None
        raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def _loading_signer_module() -> bool:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "<module>" and (
            name == _SIGNER_PACKAGE or name.startswith(_SIGNER_PACKAGE + ".")
        ):
            return True
        frame = frame.f_back
    return False


def keep_cloud_sdks_out() -> None:
    """Install the finder once per process (first on sys.meta_path)."""
    if not any(isinstance(finder, _CloudSdkFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CloudSdkFinder())
