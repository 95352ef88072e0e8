"""The configuration of an installation root: `greenlight.toml` read once per `InstallRoot`
(`config_of`), and a new root made with its first configuration (`init_root`). The store
knows the root's layout only; what the file means is the product layer's."""

import os
import weakref

from pydantic import ValidationError

from greenlight.channels import Config, RepositoryConfig, atomic_write, describe_validation
from greenlight.updater._errors import ConfigError
from greenlight.updater.product._template import config_text
from greenlight.updater.store import InstallRoot, ensure_inbox, set_active_channel

__all__ = ["config_of", "forget_config", "init_root", "machine_cohort"]

_LOADED: "weakref.WeakKeyDictionary[InstallRoot, Config]" = weakref.WeakKeyDictionary()


def config_of(root: InstallRoot) -> Config:
    """The root's configuration, loaded on first use and kept for the root object's life.

    Raises:
        ConfigError: not an installation root, or a configuration that does not load.
    """
    config = _LOADED.get(root)
    if config is None:
        config = _LOADED[root] = Config.load(root.require().config_path)
    return config


def forget_config(root: InstallRoot) -> None:
    """Read `greenlight.toml` again at the next `config_of` (after it was rewritten)."""
    _LOADED.pop(root, None)


def init_root(path: os.PathLike[str] | str, repo_url: str | None, trusted_root: bytes,
              channel: str) -> InstallRoot:
    """A new installation root at `path`: its folders, the trusted root metadata, the
    configuration and the active channel. Without `repo_url`, an air-gapped root: updated by
    sideloading bundles only.

    Raises:
        ConfigError: already initialised, or a repository URL or channel that is not valid.
        StoreError: the product's feedback inbox could not be made.
    """
    from pathlib import Path

    root = InstallRoot(Path(path))
    if root.config_path.exists():
        raise ConfigError(f"{root.config_path}: already initialized; choose another --root")
    try:
        config = Config(repository=None if repo_url is None else RepositoryConfig(url=repo_url),
                        channel=channel)
    except ValidationError as e:
        raise ConfigError(f"--repo/--channel: {describe_validation(e, limit=1)}") from None
    root.path.mkdir(parents=True, exist_ok=True, mode=0o750)
    os.chmod(root.path, 0o750)  # the config may hold headers or environment secrets
    for folder in (root.metadata_dir, root.channels_dir, root.downloads, root.releases):
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    ensure_inbox(root)  # where the product's UI drops feedback (store.ensure_inbox)
    atomic_write(root.metadata_dir / "root.json", trusted_root, mode=0o644)
    root.machine_key  # noqa: B018  (made now: `updater identity` can show it before any report)
    atomic_write(root.config_path, config_text(config).encode(), mode=0o640)
    set_active_channel(root, channel, "initial channel")
    return root


def machine_cohort(root: InstallRoot) -> str:
    """This machine's cohort (see `channels.cohort_of`): its system, the system's major
    version, its architecture, and `[report] cohort_label` (else `default`)."""
    import platform

    from greenlight.channels import cohort_of
    from greenlight.updater._errors import GreenlightError

    try:
        report = config_of(root).report
    except GreenlightError:
        report = None
    return cohort_of(platform.system(), platform.release(), platform.machine(),
                     report.cohort_label if report is not None else None)
