"""The installation root: its layout on disk and its releases (what is installed, what is
kept, the switch of `current`, pruning). The channel state is `_channels.py`'s; what
`greenlight.toml` means is the product layer's (`product.config_of`).

```
<root>/greenlight.toml       configuration
<root>/state/metadata/       TUF metadata cache (ngclient's; root history kept)
<root>/state/channels/       verified channel files, and active.json: the active channel
<root>/downloads/            verified artifacts, named by sha256
<root>/releases/<key>/       unpacked releases, each with its release.json
<root>/current               symlink to releases/<key>; switched atomically
```
A release's folder is named by its key, `<version>@<digest>` (see `ReleaseId`), so the same
version with other bytes is another folder. What is installed is read from `current`, never
stored twice.
"""

import os
import sys
import uuid
from datetime import datetime
from pathlib import Path

from pydantic import Field, ValidationError

from greenlight.channels import (
    ComponentArtifact,
    ManifestRef,
    Record,
    ReleaseId,
    atomic_symlink,
    atomic_write,
    fsync_dir,
    key_id,
    new_private_key,
    parse_version,
    remove_path,
    version_of,
)
from greenlight.updater._errors import ConfigError, StoreError

__all__ = ["FILE_LISTS", "PRODUCT_MANIFEST", "RELEASE_MANIFEST", "InstallRoot", "ReleaseManifest",
           "default_root"]

RELEASE_MANIFEST = "release.json"
FILE_LISTS = ".files"  # each component's signed file list, where it was published with one
PRODUCT_MANIFEST = "product.toml"  # the release's own product manifest, when it carries one


def default_root() -> Path:
    """$GREENLIGHT_ROOT; else the root this program sits in as `<root>/bin/updater` (what the
    offline installer leaves) or `<root>/updater/<version>/updater`; else the platform's user
    data folder."""
    env = os.environ.get("GREENLIGHT_ROOT")
    if env:
        return Path(env)
    program = Path(sys.argv[0]).absolute() if sys.argv and sys.argv[0] else None
    if program is not None and program.stem == "updater":
        # <root>/bin/updater, or a version side by side: <root>/updater/<version>/updater
        home = (program.parent.parent if program.parent.name == "bin" else
                program.parent.parent.parent if program.parent.parent.name == "updater"
                else None)
        if home is not None and (home / "greenlight.toml").is_file():
            return home
    import platformdirs

    return Path(platformdirs.user_data_dir("greenlight"))


class ReleaseManifest(Record):
    version: str
    channel: str
    components: dict[str, ComponentArtifact]
    manifest: ManifestRef | None = None
    installed_at: datetime
    file_lists: dict[str, str] = Field(
        default_factory=dict, description="sha256 of each component's signed file list, "
                                          "kept in FILE_LISTS/<component>.json")
    requires: str | None = Field(
        default=None, description="the Greenlight its signed entry required (0.3.0 on): "
                                  "Greenlight never falls back below it while it runs")

    @property
    def identity(self) -> ReleaseId:
        return ReleaseId.of(self.version, self.components, self.manifest)


class InstallRoot:
    """Where everything of one installation lives, and its releases."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self.config_path = self.path / "greenlight.toml"
        self.state = self.path / "state"
        self.metadata_dir = self.state / "metadata"
        self.channels_dir = self.state / "channels"
        self.downloads = self.path / "downloads"
        self.releases = self.path / "releases"
        self.current = self.path / "current"
        self.logs = self.path / "logs"

    # --- the root itself ------------------------------------------------------------------
    def require(self) -> "InstallRoot":
        """This root, when it has a greenlight.toml.

        Raises:
            ConfigError: no greenlight.toml here (run `updater init`).
        """
        if not self.config_path.is_file():
            raise ConfigError(
                f"{self.path}: not an installation root (no greenlight.toml); run 'updater init'"
            )
        return self

    @property
    def machine_key(self) -> bytes:
        """This installation's private Ed25519 key (PEM), which signs its fleet reports:
        `state/machine-key.pem`, 0600, made by `updater init` (or on first use, for a root
        made before). Two processes making it at once agree on one: the first link wins."""
        path = self.state / "machine-key.pem"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, new_private_key())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return path.read_bytes()

    @property
    def machine_id(self) -> str:
        """The id the fleet knows this machine by: its public key's (see `machine_id`)."""
        return key_id(self.machine_key)

    @property
    def installation_id(self) -> str:
        """A stable random id of this installation (for staged rollouts), made on first use."""
        path = self.state / "installation-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            atomic_write(path, (uuid.uuid4().hex + "\n").encode(), mode=0o640)
            return path.read_text().strip()

    # --- releases ------------------------------------------------------------------------
    # A release is named here by its key, "<version>@<digest>": the name of its folder.
    def release_dir(self, key: str) -> Path:
        return self.releases / key

    def installed_release(self) -> str | None:
        """The key of the release `current` points at; None when nothing is installed.

        Raises:
            StoreError: `current` is not a link into releases/.
        """
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.current}: not a release link: {e}") from None
        return Path(target).name

    def installed_version(self) -> str | None:
        key = self.installed_release()
        return None if key is None else version_of(key)

    def installed_identity(self) -> ReleaseId | None:
        """The installed release's identity, read from its manifest."""
        key = self.installed_release()
        manifest = None if key is None else self.manifest(key)
        return None if manifest is None else manifest.identity

    def manifest(self, key: str) -> ReleaseManifest | None:
        """The release.json of a kept release; None when the folder or its manifest is missing.

        Raises:
            StoreError: the manifest is damaged.
        """
        path = self.release_dir(key) / RELEASE_MANIFEST
        try:
            return ReleaseManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            raise StoreError(f"{path}: damaged release manifest") from None

    def installed_releases(self) -> list[str]:
        """The keys of the kept releases, oldest version first."""
        if not self.releases.is_dir():
            return []
        keys = []
        for p in self.releases.iterdir():
            if p.name.startswith(".") or not (p / RELEASE_MANIFEST).is_file():
                continue
            try:
                keys.append((parse_version(version_of(p.name)), p.name))
            except ValueError:
                continue  # not a release folder of ours
        return [key for _, key in sorted(keys)]

    def switch_current(self, key: str) -> None:
        """Point `current` at release `key`, in one rename.

        Raises:
            StoreError: the release is not complete (no manifest), or the link could not be
                written.
        """
        if not (self.release_dir(key) / RELEASE_MANIFEST).is_file():
            raise StoreError(f"{self.release_dir(key)}: release {key} is not staged")
        atomic_symlink(self.current, f"releases/{key}")

    def prune(self, keep: int) -> list[str]:
        """Remove the oldest releases beyond `keep`, never the current one."""
        current = self.installed_release()
        keys = [k for k in self.installed_releases() if k != current]
        doomed = keys[: max(0, len(keys) - (keep - 1))]
        for key in doomed:
            remove_path(self.release_dir(key))
        return doomed
