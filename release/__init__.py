"""The release pipeline, by job:

```
cli/            `release`: thin commands, one module per group, one error funnel
repository/     keys, signing, publish, promote, yank, rollouts, refresh, verify, status
distribution/   serve, sync to object storage, bundles, the offline installer's build
fleet/          the collector: store, API, the pure halt judge, signing guard, dashboard
_errors.py      the exception tree, each class with its exit code
```

`release` writes a repository of static files (`metadata/` and `targets/`); any static HTTP
server can serve them. Keys live apart from what is served. The pipeline uses the shared
layer (`greenlight.channels`: archives, manifests and a product's configuration are read there
as a machine reads them) and, of the client, only the public names of
`greenlight.updater.trust` (to verify a repository as a client would).

Names load on first use (PEP 562): `import greenlight.release` loads nothing of the
pipeline until a name is asked for.
"""

from typing import TYPE_CHECKING, Any

from greenlight.channels._lazy import lazy_export

if TYPE_CHECKING:
    from greenlight.release._durations import parse_duration
    from greenlight.release._errors import (
        ReleaseError,
    )
    from greenlight.release.distribution import (
        BundleResult,
        RepositoryServer,
        build_bundle,
        build_installer,
        serving,
    )
    from greenlight.release.repository import (
        FileRepository,
        ImportResult,
        KeyChange,
        KeyStore,
        LooseKeyPermissions,
        RepositoryStatus,
        VerifyResult,
        attach_manifest,
        change_keys,
        channel_history,
        channels,
        current_channel_file,
        expiring,
        export_staged,
        import_signatures,
        init_repository,
        keygen,
        load_public_key,
        promote,
        publish,
        refresh,
        repository_status,
        rollout,
        rotate,
        sign_file,
        verify,
        yank,
    )

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
    "attach_manifest",
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

_HOME = {
    "BundleResult": "greenlight.release.distribution",
    "FileRepository": "greenlight.release.repository",
    "ImportResult": "greenlight.release.repository",
    "KeyChange": "greenlight.release.repository",
    "KeyStore": "greenlight.release.repository",
    "LooseKeyPermissions": "greenlight.release.repository",
    "ReleaseError": "greenlight.release._errors",
    "RepositoryServer": "greenlight.release.distribution",
    "RepositoryStatus": "greenlight.release.repository",
    "VerifyResult": "greenlight.release.repository",
    "build_bundle": "greenlight.release.distribution",
    "build_installer": "greenlight.release.distribution",
    "change_keys": "greenlight.release.repository",
    "channel_history": "greenlight.release.repository",
    "channels": "greenlight.release.repository",
    "current_channel_file": "greenlight.release.repository",
    "expiring": "greenlight.release.repository",
    "export_staged": "greenlight.release.repository",
    "import_signatures": "greenlight.release.repository",
    "init_repository": "greenlight.release.repository",
    "keygen": "greenlight.release.repository",
    "load_public_key": "greenlight.release.repository",
    "parse_duration": "greenlight.release._durations",
    "attach_manifest": "greenlight.release.repository",
    "promote": "greenlight.release.repository",
    "publish": "greenlight.release.repository",
    "refresh": "greenlight.release.repository",
    "repository_status": "greenlight.release.repository",
    "rollout": "greenlight.release.repository",
    "rotate": "greenlight.release.repository",
    "serving": "greenlight.release.distribution",
    "sign_file": "greenlight.release.repository",
    "verify": "greenlight.release.repository",
    "yank": "greenlight.release.repository",
}


def __getattr__(name: str) -> Any:
    return lazy_export(__name__, _HOME, name)
