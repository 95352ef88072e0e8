"""`release installer`: build the offline installer executable with PyInstaller.

The payload (a fresh bundle of the channel, the repository's newest root, the product's
services and checks, and installer.json) is put in a folder and the spec in
`installer_specs/offline_installer.spec` is run over it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from greenlight.release._errors import BuildError, ReleaseError, UsageError
from greenlight.release.distribution._bundle import build_bundle
from greenlight.release.repository._repository import FileRepository

__all__ = ["SPEC", "build_installer"]

SPEC = Path(__file__).resolve().parents[2] / "installer_specs" / "offline_installer.spec"


def _check_product(path: Path) -> None:
    """The product's configuration, checked now as the target machine would check it, so a
    mistake costs a second here and not a build and a failed install there."""
    from greenlight.updater import ConfigError
    from greenlight.updater.product import load_product

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseError(f"--product-config {path}: cannot read: {e}") from None
    try:
        load_product(text, f"--product-config {path}")
    except ConfigError as e:
        raise ReleaseError(str(e)) from None


def build_installer(repo: FileRepository, channel: str, out_dir: Path, *,
                    product_config: Path | None = None, repo_url: str | None = None,
                    expires: timedelta = timedelta(days=90), name: str | None = None,
                    work_dir: Path | None = None) -> Path:
    if not SPEC.is_file():
        raise BuildError(f"{SPEC}: installer spec not found (run from a Greenlight checkout)")
    if product_config is not None:
        from greenlight.release.repository import current_channel_file

        carried = current_channel_file(repo, channel)
        if carried is not None and carried.manifest is not None:
            raise UsageError(
                f"--product-config: {channel} {carried.release} carries its own product "
                "manifest, which the installer installs with it; leave --product-config out "
                "(it is for releases published without --manifest)")
        _check_product(product_config)
    if repo_url is not None and not repo_url.startswith(("http://", "https://")):
        raise UsageError(f"--repo-url {repo_url!r}: expected an http:// or https:// URL")
    with tempfile.TemporaryDirectory(prefix="greenlight-installer-") as tmp:
        payload = Path(tmp) / "payload"
        payload.mkdir()
        made = build_bundle(repo, channel, payload / "bundle.tar", expires)
        shutil.copyfile(repo.metadata_dir / "root.json", payload / "root.json")
        if product_config is not None:
            shutil.copyfile(product_config, payload / "product.toml")
        (payload / "installer.json").write_text(json.dumps({
            "channel": channel, "release": made.release, "repo_url": repo_url,
        }, indent=2))
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
