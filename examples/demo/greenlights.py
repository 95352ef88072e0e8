"""Greenlight updaters of this tree at a version of one's choosing, and a machine whose
`bin/updater` enters them side by side, as the offline installer leaves one (the demo's and
the tests' machines).

`greenlight_build(folder, "0.4.0")` is this tree's updater saying it is 0.4.0, made the way the
PyInstaller spec makes a build of a version bump (the `updater` and `channels` packages copied,
`channels/_version.py` rewritten), entered by a small script instead of a one-file executable,
which takes a minute to build; tests/test_selfupdate_exe.py uses real PyInstaller builds. A
`fault` makes a build that is wrong in a way a real release can be:

- `unreadable-state`: it cannot read `state/updater.json` as this root has it (it expects
  another format number), so it fails its qualification;
- `crash-in-cycle`: every agent cycle it runs dies of SIGKILL before it does anything;
- `unreachable`: every agent cycle it runs fails to reach the repository (as a build with a
  broken TLS stack would), an error, not a crash.
"""

import shutil
import sys
from pathlib import Path

from greenlight.channels import this_platform, updater_channel
from greenlight.release import publish
from greenlight.release.distribution._updater import updater_archive
from greenlight.updater.store import (
    InstallRoot,
    UpdaterState,
    UpdaterVersion,
    exe_path,
    sha256_of,
    turn_link,
    write_updaters,
)

TREE = Path(__file__).resolve().parents[2]
FAULTS = {
    "unreadable-state": ("updater/store/_updaters.py", '"greenlight.updater-state/1"',
                         '"greenlight.updater-state/2"'),
    "crash-in-cycle": ("updater/agent/_cycle.py", "    agent = Agent(root)\n",
                       "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n"
                       "    agent = Agent(root)\n"),
    "unreachable": ("updater/agent/_cycle.py", "        repo = open_repository(root)\n",
                    "        raise NetworkError(\"cannot reach the repository (this build)\")\n"),
}


def greenlight_build(folder: Path, version: str, fault: str | None = None) -> Path:
    """This tree's updater, saying it is `version`: the script that enters it."""
    home = folder / f"greenlight-{version}{'-' + fault if fault else ''}"
    lib = home / "lib" / "greenlight"
    if not home.exists():
        for part in ("updater", "channels"):
            shutil.copytree(TREE / part, lib / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        (lib / "channels" / "_version.py").write_text(
            f'"""Greenlight\'s version (set by the build)."""\n\n__all__ = ["VERSION"]\n\n'
            f"VERSION = {version!r}\n")
        if fault is not None:
            path, old, new = FAULTS[fault]
            text = (lib / path).read_text()
            assert old in text, f"{fault}: {old!r} is not in {path}"
            (lib / path).write_text(text.replace(old, new))
        script = home / "updater"
        script.write_text(f"#!/bin/sh\nPYTHONPATH={lib.parent} exec {sys.executable} -m "
                          f"greenlight.updater.cli \"$@\"\n")
        script.chmod(0o755)
    return home / "updater"


def make_managed(root: InstallRoot, build: Path, version: str) -> None:
    """`root`'s bin/updater entering `build` as its active Greenlight `version`, as the
    offline installer of that version leaves it."""
    home = exe_path(root, version)
    home.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(build, home)
    home.chmod(0o755)
    turn_link(root, version)
    write_updaters(root, UpdaterState(active=UpdaterVersion(version=version,
                                                            sha256=sha256_of(home))))


def publish_greenlight(repo, channel: str, build: Path, version: str, work: Path,  # type: ignore[no-untyped-def]
                       **kw):
    """`build` published as Greenlight `version` for machines on `channel`, as
    `release publish-updater` does."""
    archive = updater_archive(build, work / "archives", version, this_platform())
    return publish(repo, updater_channel(channel), version,
                   {f"updater-{this_platform()}": archive}, deltas=False, **kw)
