"""`release installer`: build the offline installer executable with PyInstaller.

The payload (a fresh bundle of the channel, its release's manifest inside, the repository's
newest root, and installer.json with the machine's settings and the values the release
leaves to the machine) is put in a folder (`write_payload`) and the spec in
`installer_specs/offline_installer.spec` is run over it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from greenlight.release._errors import BuildError, ReleaseError, UsageError
from greenlight.release.distribution._bundle import BundleResult, build_bundle
from greenlight.release.repository._repository import FileRepository

__all__ = ["SPEC", "build_installer", "write_payload"]

SPEC = Path(__file__).resolve().parents[2] / "installer_specs" / "offline_installer.spec"


def _product(path: Path) -> tuple[str, dict[str, object]]:
    """The product's configuration, checked now as the target machine would check it, so a
    mistake costs a second here and not a build and a failed install there: the release's
    manifest (its text) and the machine's part (backend, systemd_scope)."""
    from greenlight.channels import ConfigError, split_product_config

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseError(f"--product-config {path}: cannot read: {e}") from None
    try:
        return split_product_config(text, f"--product-config {path}")
    except ConfigError as e:
        raise ReleaseError(str(e)) from None


def _attach(repo: FileRepository, channel: str, manifest: str, path: Path) -> str | None:
    """The product configuration's manifest made the channel release's own (signed); a line
    saying so, or None when the release carried this very manifest already."""
    from greenlight.release.repository import attach_manifest

    made, changed = attach_manifest(repo, channel, manifest, f"--product-config {path}")
    if not changed:
        return None
    waiting = repo.pending()
    if waiting:
        raise BuildError(f"the manifest of {channel} {made.release} awaits signatures "
                         f"({', '.join(waiting)}); sign them, then build again")
    return (f"{channel} {made.release}: --product-config {path.name} signed as the release's "
            f"manifest ({made.manifest.target if made.manifest else ''}); machines on "
            f"{channel} take the release with it at their next check")


def _declared_values(repo: FileRepository, channel: str) -> dict[str, str]:
    """The [values] the channel's release leaves to the machine, with their defaults (none
    for a release without a manifest)."""
    from greenlight.channels import ConfigError, load_manifest
    from greenlight.release.repository import current_channel_file

    channel_file = current_channel_file(repo, channel)
    ref = channel_file.manifest if channel_file is not None else None
    if ref is None:
        return {}
    try:
        text = repo.stored_target_path(ref.target, ref.sha256).read_text()
        return dict(load_manifest(text, ref.target).values)
    except (OSError, UnicodeDecodeError, ConfigError) as e:
        raise BuildError(f"the manifest of {channel}: {e}") from None


def write_payload(repo: FileRepository, channel: str, payload: Path, *,
                  expires: timedelta = timedelta(days=90), repo_url: str | None = None,
                  machine: dict[str, object] | None = None) -> BundleResult:
    """What the installer carries, in the folder `payload`: a fresh bundle of the channel,
    the repository's newest root, and installer.json (the channel and release, the built-in
    repository, the machine's settings, and the values the release declares).

    Raises:
        BuildError, ReleaseError: one line each.
    """
    payload.mkdir(parents=True, exist_ok=True)
    made = build_bundle(repo, channel, payload / "bundle.tar", expires)
    shutil.copyfile(repo.metadata_dir / "root.json", payload / "root.json")
    (payload / "installer.json").write_text(json.dumps({
        "channel": channel, "release": made.release, "repo_url": repo_url,
        "machine": machine or {}, "values": _declared_values(repo, channel),
    }, indent=2))
    return made


def build_installer(repo: FileRepository, channel: str, out_dir: Path, *,
                    product_config: Path | None = None, repo_url: str | None = None,
                    expires: timedelta = timedelta(days=90), name: str | None = None,
                    work_dir: Path | None = None,
                    told: Callable[[str], None] = lambda line: None) -> Path:
    """The installer executable in `out_dir`. With `product_config`, its product part
    becomes the channel release's signed manifest (told through `told`), unless the release
    carries that very manifest already, and its machine part (backend) is what the
    installer writes into a fresh root's greenlight.toml, beside the repository and channel.

    Raises:
        BuildError, ReleaseError, UsageError: one line each; nothing is built.
    """
    if not SPEC.is_file():
        raise BuildError(f"{SPEC}: installer spec not found (run from a Greenlight checkout)")
    if repo_url is not None and not repo_url.startswith(("http://", "https://")):
        raise UsageError(f"--repo-url {repo_url!r}: expected an http:// or https:// URL")
    machine: dict[str, object] = {}
    if product_config is not None:
        manifest, machine = _product(product_config)
        line = _attach(repo, channel, manifest, product_config)
        if line:
            told(line)
    with tempfile.TemporaryDirectory(prefix="greenlight-installer-") as tmp:
        payload = Path(tmp) / "payload"
        made = write_payload(repo, channel, payload, expires=expires, repo_url=repo_url,
                             machine=machine)
        name = name or f"greenlight-installer-{channel}-{made.release}"
        work = work_dir or Path(tmp) / "work"
        out_dir.mkdir(parents=True, exist_ok=True)
        log = Path(tmp) / "pyinstaller.log"
        with log.open("w") as f:
            done = subprocess.run(
                [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm",
                 "--distpath", str(out_dir), "--workpath", str(work)],
                env={**os.environ, "GREENLIGHT_PAYLOAD": str(payload),
                     "GREENLIGHT_INSTALLER_NAME": name},
                stdout=f, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise BuildError(f"pyinstaller failed ({done.returncode}): {tail[0]}")
    exe = out_dir / (name + (".exe" if sys.platform == "win32" else ""))
    if not exe.is_file():
        raise BuildError(f"pyinstaller ran but {exe} is missing")
    return exe
