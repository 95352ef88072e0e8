"""Greenlight's updater as a release of its own (`release publish-updater`).

The one-file executable (`installer_specs/offline_installer.spec` without a payload, built
by `build_updater`) is packed per platform as an archive holding one file, `updater`
(`updater_archive`), and published on channel `greenlight-<channel>` as component
`updater-<platform>`, under the repository's keys, with the same rollout plans, reports and
halts as any release. Machines on `<channel>` take it with `updater self-update` or their
agent (updater/selfupdate).
"""

import gzip
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from greenlight.release._errors import BuildError, UsageError

__all__ = ["build_updater", "exe_version", "updater_archive"]

_VERSION_LINE = re.compile(r"\Aupdater ([0-9A-Za-z.+-]{1,64})\Z")


def build_updater(out_dir: Path, version: str | None = None, work_dir: Path | None = None,
                  told: Callable[[str], None] = lambda line: None) -> Path:
    """Build this checkout's updater as a one-file executable in `out_dir` (PyInstaller);
    `version` overrides the version the build says it is (a build of a version bump).

    Raises:
        BuildError: the spec is missing or PyInstaller failed.
    """
    from greenlight.release.distribution._installer import SPEC

    if not SPEC.is_file():
        raise BuildError(f"{SPEC}: installer spec not found (run from a Greenlight checkout)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="greenlight-updater-") as tmp:
        log = Path(tmp) / "pyinstaller.log"
        told(f"building the updater with PyInstaller into {out_dir}")
        env = {**os.environ, "GREENLIGHT_UPDATER_ONLY": "1",
               "GREENLIGHT_INSTALLER_NAME": "updater"}
        env.pop("GREENLIGHT_PAYLOAD", None)
        if version is not None:
            env["GREENLIGHT_BUILD_VERSION"] = version
        with log.open("w") as f:
            done = subprocess.run(
                [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm",
                 "--distpath", str(out_dir), "--workpath", str(work_dir or Path(tmp) / "work")],
                env=env, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise BuildError(f"pyinstaller failed ({done.returncode}): {tail[0]}")
    exe = out_dir / ("updater.exe" if sys.platform == "win32" else "updater")
    if not exe.is_file():
        raise BuildError(f"pyinstaller ran but {exe} is missing")
    return exe


def exe_version(exe: Path) -> str:
    """The Greenlight version an updater executable says it is (`updater --version`).

    Raises:
        UsageError: it does not run here, or does not answer as Greenlight's updater does.
    """
    try:
        done = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        raise UsageError(f"{exe}: cannot run it to learn its version ({e}); give --version "
                         "for a build of another platform") from None
    found = _VERSION_LINE.match(done.stdout.strip())
    if done.returncode != 0 or found is None:
        raise UsageError(f"{exe}: not Greenlight's updater (`--version` said "
                         f"{done.stdout.strip()[:80]!r})")
    return found.group(1)


def updater_archive(exe: Path, dest_dir: Path, version: str, platform_tag: str) -> Path:
    """The component archive of one platform's updater: a .tar.gz holding the one file
    `updater` (`updater.exe` for Windows), executable, with fixed owners and times so the
    same executable always makes the same bytes.

    Raises:
        UsageError: `exe` is not a readable regular file.
    """
    if exe.is_symlink() or not exe.is_file():
        raise UsageError(f"{exe}: not a file")
    name = "updater.exe" if platform_tag.startswith("windows-") else "updater"
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"greenlight-updater-{version}-{platform_tag}.tar.gz"
    data = exe.read_bytes()
    with gzip.GzipFile(out, "wb", mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))
    return out
