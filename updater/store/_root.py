"""The installation root: its layout on disk and the small state files in it.

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
from typing import Annotated

from pydantic import AfterValidator, ValidationError

from greenlight.channels import (
    ChannelFile,
    ComponentArtifact,
    Record,
    ReleaseId,
    atomic_symlink,
    atomic_write,
    check_channel_name,
    now,
    parse_version,
    remove_path,
    version_of,
)
from greenlight.updater._errors import ConfigError, StoreError
from greenlight.updater.product._config import Config, RepositoryConfig

__all__ = ["RELEASE_MANIFEST", "ActiveChannel", "InstallRoot", "ReleaseManifest", "default_root"]

RELEASE_MANIFEST = "release.json"


def default_root() -> Path:
    """$GREENLIGHT_ROOT; else the root this program sits in as `<root>/bin/updater` (what the
    offline installer leaves); else the platform's user data folder."""
    env = os.environ.get("GREENLIGHT_ROOT")
    if env:
        return Path(env)
    program = Path(sys.argv[0]).absolute() if sys.argv and sys.argv[0] else None
    if program is not None and program.parent.name == "bin" and program.stem == "updater":
        home = program.parent.parent
        if (home / "greenlight.toml").is_file():
            return home
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

    @property
    def identity(self) -> ReleaseId:
        return ReleaseId.of(self.version, self.components)


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
        self.logs = self.path / "logs"
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
    # A release is named here by its key, "<version>@<digest>": the name of its folder.
    def release_dir(self, key: str) -> Path:
        return self.releases / key

    def installed_release(self) -> str | None:
        """The key of the release `current` points at; None when nothing is installed."""
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
