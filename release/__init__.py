"""The release pipeline: keys, the signed TUF repository, publishing, lifecycle, bundles, the
installer, and a development server.

`release` writes a repository of static files (`metadata/` and `targets/`); any static HTTP
server can serve them. Keys live apart from what is served. The pipeline uses the shared
layer (`greenlight.channels`) and the client's public API (`greenlight.updater.trust`, to
verify a repository as a client would), never a private module of the client.
"""

from greenlight.release._bundle import BundleResult, build_bundle, parse_duration
from greenlight.release._channels import channel_history, channels, current_channel_file
from greenlight.release._errors import ReleaseError
from greenlight.release._installer import build_installer
from greenlight.release._keys import KeyStore, LooseKeyPermissions
from greenlight.release._lifecycle import promote, rollout, yank
from greenlight.release._publish import publish
from greenlight.release._repository import FileRepository, init_repository
from greenlight.release._serve import RepositoryServer, serving
from greenlight.release._signing import (
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
from greenlight.release._status import RepositoryStatus, repository_status
from greenlight.release._upkeep import VerifyResult, expiring, refresh, verify

__all__ = [
    "BundleResult",
    "FileRepository",
    "ImportResult",
    "KeyChange",
    "KeyStore",
    "LooseKeyPermissions",
    "ReleaseError",
    "RepositoryServer",
    "RepositoryStatus",
    "VerifyResult",
    "build_bundle",
    "build_installer",
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
    "parse_duration",
    "promote",
    "publish",
    "refresh",
    "repository_status",
    "rollout",
    "rotate",
    "serving",
    "sign_file",
    "verify",
    "yank",
]
