"""The signed repository: keys and signing (thresholds across machines, rotation), publishing
to a channel (with deltas), the channel lifecycle (promote, yank, staged rollouts), upkeep
(refresh, verify as a client would) and status."""

from greenlight.release.repository._channels import channel_history, channels, current_channel_file
from greenlight.release.repository._keys import KeyStore, LooseKeyPermissions
from greenlight.release.repository._lifecycle import promote, rollout, yank
from greenlight.release.repository._publish import attach_manifest, publish
from greenlight.release.repository._repository import FileRepository, init_repository
from greenlight.release.repository._signing import (
    ImportResult,
    KeyChange,
    change_keys,
    export_staged,
    import_signatures,
    keygen,
    load_public_key,
    rotate,
    sign_file,
)
from greenlight.release.repository._status import RepositoryStatus, repository_status
from greenlight.release.repository._upkeep import (
    VerifyResult,
    expiring,
    refresh,
    verify,
)

__all__ = [
    "attach_manifest",
    "FileRepository",
    "ImportResult",
    "KeyChange",
    "KeyStore",
    "LooseKeyPermissions",
    "RepositoryStatus",
    "VerifyResult",
    "change_keys",
    "channel_history",
    "channels",
    "current_channel_file",
    "expiring",
    "export_staged",
    "import_signatures",
    "init_repository",
    "keygen",
    "load_public_key",
    "promote",
    "publish",
    "refresh",
    "repository_status",
    "rollout",
    "rotate",
    "sign_file",
    "verify",
    "yank",
]
