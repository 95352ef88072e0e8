"""The offline installer: one executable carrying the updater, a trusted root and a bundle.

    greenlight-installer --root DIR [--json] [--force] [--switch-channel]

With no installation at DIR it installs fresh: the root is created trusting the embedded root,
the product's services and checks are configured, and the embedded bundle goes through the
same transaction as `updater sideload` (verified, staged, started, health-checked). If that
fails, everything it created is removed: nothing is left half-installed. With an installation
at DIR it upgrades it through the normal transaction, with automatic rollback.

Exit codes are the updater's (`updater exit-codes`), listed by `--help`: 0 installed,
upgraded or nothing to do, 2 bad arguments, 20 rolled back, and the updater's error codes.
Payload files sit in `payload/` beside this module when run from source, and inside the
executable when frozen.
"""

import argparse
import json
import os
import runpy
import shutil
import stat
import sys
from pathlib import Path

from greenlight.updater._errors import (
    EXIT_CODES,
    EXIT_HELD,
    EXIT_ROLLBACK_FAILED,
    EXIT_ROLLED_BACK,
    EXIT_UPDATE_AVAILABLE,
    EXIT_YANKED,
    ConfigError,
    GreenlightError,
    StoreError,
)
from greenlight.updater.operations import sideload
from greenlight.updater.product import ServiceControl
from greenlight.updater.reports import ErrorReport, UpgradeReport, dump
from greenlight.updater.store import InstallRoot, locked

__all__ = ["check_owner", "install", "main", "payload_dir"]


def payload_dir() -> Path:
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).parent))
    return base / "payload"


def _special(argv: list[str]) -> int | None:
    """The frozen executable's private entry points (see greenlight.updater.product._runtime)."""
    if argv[:1] == ["--greenlight-launch"]:
        from greenlight.updater.product.launcher import main as launch

        return launch(argv[1:])
    if argv[:1] == ["--greenlight-python"] and len(argv) > 1:
        sys.argv = argv[1:]
        runpy.run_path(argv[1], run_name="__main__")
        return 0
    return None


def check_owner(path: Path) -> None:
    """An existing folder becomes an installation root only if this user owns it, it is a
    real folder (not a symlink), and nobody else may write to it.

    Raises:
        ConfigError: any of those is not so.
    """
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: not a folder (a symlink or a file); choose an empty folder")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{path}: owned by uid {info.st_uid}, not by this user "
                          f"({os.geteuid()}); choose a folder of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path}: others may write to it (mode {stat.S_IMODE(info.st_mode):o});"
                          " run chmod go-w on it or choose another folder")


def _remove_fresh(root: InstallRoot, existed: bool) -> None:
    """Undo a failed fresh install: stop what started, remove what was created."""
    try:
        with locked(root):
            ServiceControl.of(root, root.config).stop_all(root.installed_release())
    except GreenlightError:
        pass
    if existed:
        for child in root.path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    else:
        shutil.rmtree(root.path, ignore_errors=True)


def install(root_path: Path, force: bool, switch_channel: bool = False) -> UpgradeReport:
    payload = payload_dir()
    meta = json.loads((payload / "installer.json").read_text())
    root = InstallRoot(root_path)
    bundle = payload / "bundle.tar"
    if root.config_path.exists():
        return sideload(root, bundle, force=force, switch_channel=switch_channel)
    existed = root.path.exists()
    if existed:
        check_owner(root.path)
    if existed and any(root.path.iterdir()):
        raise ConfigError(
            f"{root.path}: not empty and not an installation root; choose an empty folder")
    try:
        root = InstallRoot.create(root.path, meta["repo_url"],
                                  (payload / "root.json").read_bytes(), meta["channel"])
        product = payload / "product.toml"
        if product.exists():
            with root.config_path.open("a") as f:
                f.write("\n" + product.read_text())
        root = InstallRoot(root.path)  # re-read the completed configuration
        report = sideload(root, bundle, force=force)
    except BaseException:
        _remove_fresh(root, existed)
        raise
    if report.outcome != "upgraded":
        _remove_fresh(root, existed)
    return report


def _exit_codes_text() -> str:
    """The updater's exit-code table, less what only `updater check` returns."""
    codes = {c: m for c, m in EXIT_CODES.items()
             if c not in (EXIT_UPDATE_AVAILABLE, EXIT_YANKED)}
    codes[0] = "installed, upgraded, or nothing to do"
    lines = [f"  {c:>3}  {m}" for c, m in sorted(codes.items())]
    return "a fresh install that fails leaves nothing behind.\n\nexit codes:\n" + \
        "\n".join(lines)


def _error(e: GreenlightError, as_json: bool) -> int:
    if as_json:
        print(dump(ErrorReport(error=str(e), kind=e.kind, exit_code=e.exit_code)))
    else:
        print(f"installer: error: {' '.join(str(e).split())}", file=sys.stderr)
    return e.exit_code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    special = _special(argv)
    if special is not None:
        return special
    meta = json.loads((payload_dir() / "installer.json").read_text())
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name,
        description=f"Install or upgrade {meta['channel']} {meta['release']} from this offline "
                    "installer, verified against the root it carries, with health checks and "
                    "automatic rollback. No network is used.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_exit_codes_text())
    parser.add_argument("--root", type=Path, required=True, help="installation root")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--force", action="store_true",
                        help="upgrade even if the running release fails its pre-check")
    parser.add_argument("--switch-channel", action="store_true",
                        help="follow this installer's channel when the installation follows "
                             "another one")
    args = parser.parse_args(argv)
    try:
        report = install(args.root, args.force, args.switch_channel)
    except OSError as e:  # an I/O failure outside the updater's own handling
        return _error(StoreError(f"{e.filename or args.root}: {e.strerror or e}"), args.json)
    except GreenlightError as e:
        return _error(e, args.json)
    except KeyboardInterrupt:
        print("installer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line, never a traceback
        print(f"installer: internal error: {type(e).__name__}: {e} (please report it)",
              file=sys.stderr)
        return 1
    if args.json:
        print(dump(report))
    elif report.outcome == "upgraded":
        print(f"installed {report.to_version} ({report.channel}) in {report.root}"
              + (f", replacing {report.from_version}" if report.from_version else ""))
    elif report.outcome == "up-to-date":
        print(f"{report.root} already has {report.to_version}")
    else:
        summary = report.incident.summary if report.incident else report.note
        print(f"not installed: {summary}; {report.root} is on {report.installed or 'nothing'}")
    return {"rolled-back": EXIT_ROLLED_BACK, "rollback-failed": EXIT_ROLLBACK_FAILED,
            "held": EXIT_HELD}.get(report.outcome, 0)


if __name__ == "__main__":
    sys.exit(main())
