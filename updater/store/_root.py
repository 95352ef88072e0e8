"""The installation root: its layout on disk and the small state files in it.

```
<root>/greenlight.toml       configuration
<root>/state/metadata/       TUF metadata cache (ngclient's; root history kept)
<root>/state/channels/       verified channel files, and active.json: the active channel
<root>/downloads/            verified artifacts, named by sha256
<root>/releases/<version>/   unpacked releases, each with its release.json
<root>/current               symlink to releases/<version>; switched atomically
```
What is installed is read from `current`, never stored twice.
"""

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationError

from greenlight.channels import (
    ChannelFile,
    ComponentArtifact,
    Record,
    atomic_symlink,
    atomic_write,
    check_channel_name,
    now,
    remove_path,
    sort_versions,
)
from greenlight.updater._errors import ConfigError, StoreError
from greenlight.updater.product._config import Config, RepositoryConfig

__all__ = ["RELEASE_MANIFEST", "ActiveChannel", "InstallRoot", "ReleaseManifest", "default_root"]

RELEASE_MANIFEST = "release.json"


def default_root() -> Path:
    env = os.environ.get("GREENLIGHT_ROOT")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("greenlight"))


class ActiveChannel(Record):
    channel: Annotated[str, AfterValidator(check_channel_name)]
    since: datetime
    reason: str


class ReleaseManifest(Record):
    version: str
    channel: str
    components: dict[str, ComponentArtifact]
    installed_at: datetime


class InstallRoot:
    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self.config_path = self.path / "greenlight.toml"
        self.state = self.path / "state"
        self.metadata_dir = self.state / "metadata"
        self.channels_dir = self.state / "channels"
        self.downloads = self.path / "downloads"
        self.releases = self.path / "releases"
        self.current = self.path / "current"
        self._config: Config | None = None

    # --- creation and configuration ------------------------------------------------------
    @classmethod
    def create(cls, path: Path, repo_url: str, trusted_root: bytes, channel: str) -> "InstallRoot":
        root = cls(path)
        if root.config_path.exists():
            raise ConfigError(f"{root.config_path}: already initialized; choose another --root")
        try:
            config = Config(repository=RepositoryConfig(url=repo_url), channel=channel)
        except ValidationError as e:
            first = e.errors()[0]
            raise ConfigError(f"--repo/--channel: {first['msg']}") from None
        root.path.mkdir(parents=True, exist_ok=True, mode=0o750)
        os.chmod(root.path, 0o750)  # the config may hold headers or environment secrets
        for folder in (root.metadata_dir, root.channels_dir, root.downloads, root.releases):
            folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        atomic_write(root.metadata_dir / "root.json", trusted_root, mode=0o644)
        atomic_write(root.config_path, config.dump().encode(), mode=0o640)
        root.set_active_channel(channel, "initial channel")
        return root

    def require(self) -> "InstallRoot":
        if not self.config_path.is_file():
            raise ConfigError(
                f"{self.path}: not an installation root (no greenlight.toml); run 'updater init'"
            )
        return self

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = Config.load(self.require().config_path)
        return self._config

    @property
    def installation_id(self) -> str:
        """A stable random id of this installation (for staged rollouts), made on first use."""
        path = self.state / "installation-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            atomic_write(path, (uuid.uuid4().hex + "\n").encode(), mode=0o640)
            return path.read_text().strip()

    # --- channels ------------------------------------------------------------------------
    def active_channel(self) -> ActiveChannel:
        path = self.channels_dir / "active.json"
        try:
            return ActiveChannel.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return ActiveChannel(channel=self.config.channel, since=now(), reason="configured")
        except (ValidationError, OSError, UnicodeDecodeError):
            raise StoreError(f"{path}: unreadable; switch with 'updater channel NAME'") from None

    def set_active_channel(self, channel: str, reason: str) -> ActiveChannel:
        """Follow `channel` from now on (a valid channel name, or ValueError)."""
        return self.restore_active_channel(
            ActiveChannel(channel=check_channel_name(channel), since=now(), reason=reason))

    def restore_active_channel(self, active: ActiveChannel) -> ActiveChannel:
        atomic_write(self.channels_dir / "active.json",
                     active.model_dump_json(indent=2).encode(), mode=0o640)
        return active

    def save_channel_file(self, channel_file: ChannelFile, raw: bytes) -> None:
        path = self.channels_dir / f"{channel_file.channel}.json"
        try:
            if path.read_bytes() == raw:
                return  # unchanged: no write, no fsync on a warm check
        except FileNotFoundError:
            pass
        atomic_write(path, raw, mode=0o640)

    # --- releases ------------------------------------------------------------------------
    def release_dir(self, version: str) -> Path:
        return self.releases / version

    def installed_version(self) -> str | None:
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.current}: not a release link: {e}") from None
        return Path(target).name

    def manifest(self, version: str) -> ReleaseManifest | None:
        path = self.release_dir(version) / RELEASE_MANIFEST
        try:
            return ReleaseManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            raise StoreError(f"{path}: damaged release manifest") from None

    def installed_releases(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sort_versions(
            p.name for p in self.releases.iterdir()
            if not p.name.startswith(".") and (p / RELEASE_MANIFEST).is_file()
        )

    def switch_current(self, version: str) -> None:
        if not (self.release_dir(version) / RELEASE_MANIFEST).is_file():
            raise StoreError(f"{self.release_dir(version)}: release {version} is not staged")
        atomic_symlink(self.current, f"releases/{version}")

    def prune(self, keep: int) -> list[str]:
        """Remove the oldest releases beyond `keep`, never the current one."""
        current = self.installed_version()
        versions = [v for v in self.installed_releases() if v != current]
        doomed = versions[: max(0, len(versions) - (keep - 1))]
        for version in doomed:
            remove_path(self.release_dir(version))
        return doomed
