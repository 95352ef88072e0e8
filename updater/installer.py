"""The offline installer: one executable carrying the updater, a trusted root and a bundle.

    greenlight-installer --root DIR [--json] [--force] [--switch-channel] [--repo URL|--offline]
                         [--config FILE] [--value NAME=VALUE ...]

With no installation at DIR it installs fresh: the root is created trusting the embedded root,
with the machine's layer only (repository, channel, backend), and the embedded bundle goes
through the same transaction as `updater sideload` (verified, staged, started,
health-checked). How the product runs and is checked is the release's signed manifest, in
the bundle. If that fails, everything it created is removed: nothing is left half-installed.
DIR may already hold `data/`, the product's secrets provisioned in advance; it is kept
either way.

A fresh root's machine layer can be set at install time. `--config FILE` is a greenlight.toml
to start from: any of its keys ([values], disabled_checks, extra checks, [agent], backend,
...) but the repository and the channel, which are `--repo`'s (or built in, or none with
`--offline`) and the installer's. Each `--value NAME=VALUE` (repeatable) sets one of the
values the release's manifest leaves to the machine (a port that is taken here, a path) over
the file's [values]; `--help` lists them with their defaults. Both are checked before
anything is created, as greenlight.toml's [values] are (a name is lower case letters, digits
and _; a value is one line of at most 4096 characters), and a --value the release does not
declare is refused: one line, exit 2, nothing created.

With an installation at DIR it upgrades it through the normal transaction, with automatic
rollback; its greenlight.toml is left as it is (a release with a manifest takes over from
services and checks written there, see docs/manifest.md). `--config` and `--value` are
refused there (exit 2, nothing changed): the running release runs with those values too, so
its pre-check, its stop and a rollback to it need them as they are. Change them in
greenlight.toml with the product stopped (`updater stop`, edit, `updater start`), then run
the installer.

After an install or upgrade, `DIR/bin/updater` is the updater for later sideloads, status and
rollback: a copy of this executable, which acts as `updater` when invoked under that name.

Exit codes are the updater's (`updater exit-codes`), listed by `--help`: 0 installed,
upgraded or nothing to do, 2 bad arguments, 20 rolled back, and the updater's error codes.
Payload files sit in `payload/` beside this module when run from source (or in the folder
`$GREENLIGHT_PAYLOAD` names, as `release installer` prepares it), and inside the executable
when frozen.
"""

import argparse
import json
import os
import runpy
import shlex
import shutil
import stat
import sys
import tomllib
from pathlib import Path

from pydantic import ValidationError

from greenlight.channels import VERSION, atomic_write, describe_validation
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
    UsageError,
)
from greenlight.updater.operations import sideload
from greenlight.updater.output import ErrorReport, UpgradeReport, dump
from greenlight.updater.product import (
    Config,
    ServiceControl,
    check_value,
    config_of,
    init_root,
    with_machine_parts,
)
from greenlight.updater.store import InstallRoot, locked

__all__ = ["check_owner", "install", "install_updater", "machine_layer", "main",
           "payload_dir"]

DATA = "data"


def payload_dir() -> Path:
    if getattr(sys, "frozen", False):
        return Path(getattr(sys, "_MEIPASS", Path(__file__).parent)) / "payload"
    return Path(os.environ.get("GREENLIGHT_PAYLOAD") or Path(__file__).parent / "payload")


def _special(argv: list[str]) -> int | None:
    """The frozen executable's private entry points (see greenlight.updater.product._runtime)."""
    if argv[:1] == ["--greenlight-launch"]:
        from greenlight.updater.product.launcher import main as launch

        return launch(argv[1:])
    if argv[:1] == ["--greenlight-hold"]:
        from greenlight.updater.product.holder import main as hold

        return hold(argv[1:])
    if argv[:1] == ["--greenlight-agent-loop"]:
        from greenlight.updater.agent.loop import main as agent_loop

        return agent_loop(argv[1:])
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


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _remove_fresh(root: InstallRoot, existed: bool, kept: frozenset[Path]) -> None:
    """Undo a failed fresh install: stop what started, remove what was created, and keep
    exactly what was there before (the files of a provisioned `data/`)."""
    try:
        with locked(root):
            control = ServiceControl.of(root, config_of(root))
            control.stop_all(root.installed_release())
            control.release_sockets()
    except GreenlightError:
        pass
    if not existed:
        shutil.rmtree(root.path, ignore_errors=True)
        return
    for child in root.path.iterdir():
        if child.name != DATA or not kept:
            _remove(child)
    data = root.path / DATA
    if kept and data.is_dir():  # what the failed release wrote there goes too
        for path in sorted(data.rglob("*"), reverse=True):
            if path.relative_to(data) not in kept:
                _remove(path)


def _fresh_folder(path: Path) -> frozenset[Path]:
    """What of an existing folder a fresh install keeps: nothing, or a provisioned `data/`
    (its paths, relative to it; `.` for the folder itself).

    Raises:
        ConfigError: the folder holds anything else, or is not safely ours.
    """
    check_owner(path)
    foreign = sorted(c.name for c in path.iterdir() if c.name != DATA)
    if foreign:
        raise ConfigError(
            f"{path}: not empty and not an installation root (it holds {foreign[0]!r}); "
            f"choose an empty folder, or one that holds only {DATA}/ (provisioned secrets)")
    data = path / DATA
    if not data.exists():
        return frozenset()
    check_owner(data)
    return frozenset({Path("."), *(p.relative_to(data) for p in data.rglob("*"))})


def _leave_updater(report: UpgradeReport) -> None:
    """After a sideload that installed (or found installed) the bundle's release, under its
    lock: this program is left as the root's updater."""
    if report.outcome in ("upgraded", "downgraded", "up-to-date"):
        install_updater(InstallRoot(Path(report.root)), locked_already=True)


def install_updater(root: InstallRoot, locked_already: bool = False) -> Path:
    """Leave `<root>/bin/updater` on the machine for later sideloads, status and rollback.
    Frozen, this executable becomes the root's active Greenlight version, side by side in
    `<root>/updater/<version>/` (`selfupdate.place`: the version before stays as the
    fallback, and a newer one already there is kept); it acts as `updater` under that name
    and moves itself from then on. From source, a script that runs this interpreter's updater
    (moved by its package manager)."""
    folder = root.path / "bin"
    folder.mkdir(mode=0o755, exist_ok=True)
    target, part = folder / "updater", folder / ".updater.part"
    if getattr(sys, "frozen", False):
        from greenlight.updater.selfupdate import place

        if locked_already:
            place(root, Path(sys.executable))
        else:
            with locked(root):
                place(root, Path(sys.executable))
        return target
    part.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m "
                    f"greenlight.updater.cli \"$@\"\n")
    os.chmod(part, 0o755)
    os.replace(part, target)
    return target


def repository_for(meta: dict[str, object], repo: str | None, offline: bool) -> str | None:
    """The repository a fresh root updates from: --repo, else the one built in; None with
    --offline (an air-gapped root, updated by sideloading only).

    Raises:
        UsageError: neither given nor built in, or both --repo and --offline.
    """
    if repo is not None and offline:
        raise UsageError("--repo and --offline: choose one")
    if offline:
        return None
    built_in = meta.get("repo_url")
    chosen = repo or (built_in if isinstance(built_in, str) else None)
    if chosen is None:
        raise UsageError("this installer has no repository built in: pass --repo URL (where "
                         "this machine gets later updates), or --offline for an air-gapped "
                         "machine that only sideloads")
    return chosen


def declared_values(meta: dict[str, object]) -> dict[str, str] | None:
    """The values the installer's release leaves to the machine, with their defaults; None
    from an installer built before it said."""
    values = meta.get("values")
    return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else None


def _config_file(path: Path, channel: str) -> dict[str, object]:
    """--config FILE: greenlight.toml's keys but the repository and channel, checked as
    greenlight.toml is.

    Raises:
        UsageError: it cannot be read, does not load, or sets the repository or channel.
    """
    source = f"--config {path}"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{source}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{source}: not valid TOML: {e}") from None
    taken = [k for k in ("repository", "channel") if k in data]
    if taken:
        raise UsageError(f"{source}: {taken[0]!r} is not set by --config: the repository is "
                         f"--repo's (or built in, or none with --offline), the channel this "
                         f"installer's ({channel})")
    try:
        Config.model_validate(data)
        for name, value in dict(data.get("values") or {}).items():
            check_value(name, value, source)
    except ValidationError as e:
        raise UsageError(f"{source}: {describe_validation(e, data, limit=1)}") from None
    except ConfigError as e:
        raise UsageError(str(e)) from None
    return data


def machine_layer(meta: dict[str, object], values: list[str],
                  config: Path | None = None) -> dict[str, object] | None:
    """What a fresh root's greenlight.toml starts from: `--config FILE`, with each `--value
    NAME=VALUE` set over its [values]; None when neither was given. Checked now, before
    anything is created.

    Raises:
        UsageError: a file that does not load or sets the repository or channel; a --value
            that is not NAME=VALUE, has a name or value greenlight.toml's [values] refuses,
            is given twice, or is not one the release declares.
    """
    if config is None and not values:
        return None
    layer = {} if config is None else _config_file(config, str(meta.get("channel")))
    declared = declared_values(meta)
    chosen: dict[str, str] = {}
    for given in values:
        name, equals, value = given.partition("=")
        if not equals:
            raise UsageError(f"--value {given!r}: expected NAME=VALUE")
        try:
            check_value(name, value, "--value")
        except ConfigError as e:
            raise UsageError(str(e)) from None
        if name in chosen:
            raise UsageError(f"--value {name}: given twice")
        if declared is not None and name not in declared:
            raise UsageError(f"--value {name}: {meta.get('release')} declares no such value; "
                             + (f"it declares {_listed(declared)}" if declared else
                                "it declares none"))
        chosen[name] = value
    if chosen:
        given_values = layer.get("values")
        layer["values"] = {**(given_values if isinstance(given_values, dict) else {}), **chosen}
    return layer


def _listed(declared: dict[str, str]) -> str:
    return ", ".join(f"{name} (default {default})" for name, default in declared.items())


def install(root_path: Path, force: bool, switch_channel: bool = False,
            repo: str | None = None, offline: bool = False,
            layer: dict[str, object] | None = None) -> UpgradeReport:
    """Install (a fresh root) or upgrade (an existing one) from the bundle inside. How the
    product runs comes with the release (its manifest, in the bundle); the installer writes
    only the machine's layer of a fresh root: repository, channel, the backend it was built
    with, and `layer` (see `machine_layer`). An existing root's greenlight.toml is left as it
    is, and a `layer` for it refused.

    Raises:
        UsageError: a fresh root without a repository to update from (see repository_for),
            or a `layer` for an existing root.
        GreenlightError: what the sideload raises.
    """
    payload = payload_dir()
    meta = json.loads((payload / "installer.json").read_text())
    root = InstallRoot(root_path)
    bundle = payload / "bundle.tar"
    if root.config_path.exists():
        if layer is not None:
            raise UsageError(
                f"{root.path} is an installation already: --config and --value set up a "
                "fresh root only, and its greenlight.toml is left as it is (its running "
                "release runs with those values too); change them there with the product "
                "stopped (updater stop, edit, updater start), then run the installer without "
                "them")
        return sideload(root, bundle, force=force, switch_channel=switch_channel,
                        then=_leave_updater)
    url = repository_for(meta, repo, offline)
    existed = root.path.exists()
    kept = _fresh_folder(root.path) if existed else frozenset()
    try:
        root = init_root(root.path, url, (payload / "root.json").read_bytes(), meta["channel"])
        machine = {**(meta.get("machine") or {}), **(layer or {})}
        if machine:
            atomic_write(root.config_path, with_machine_parts(
                root.config_path.read_text(), machine, str(root.config_path)).encode(),
                mode=0o640)
            root = InstallRoot(root.path)  # re-read the completed configuration
        report = sideload(root, bundle, force=force, then=_leave_updater)
    except BaseException:
        _remove_fresh(root, existed, kept)
        raise
    if report.outcome != "upgraded":
        _remove_fresh(root, existed, kept)
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
    if Path(sys.argv[0]).stem == "updater":  # the copy left in <root>/bin/updater
        from greenlight.updater.cli import main as updater

        updater()
        return 0
    if argv[:1] == ["--version"]:
        print(f"greenlight-installer {VERSION}")
        return 0
    try:
        meta = json.loads((payload_dir() / "installer.json").read_text())
    except (OSError, ValueError) as e:
        print(f"greenlight-installer: no payload to install ({payload_dir()}: "
              f"{getattr(e, 'strerror', None) or e}); build one with `release installer`",
              file=sys.stderr)
        return 2
    built_in = meta.get("repo_url")
    declared = declared_values(meta)
    parser = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name,
        description=f"Install or upgrade {meta['channel']} {meta['release']} from this offline "
                    "installer, verified against the root it carries, with health checks and "
                    "automatic rollback. No network is used. Later online updates come from "
                    + (f"{built_in} (built in; --repo overrides it)." if built_in else
                       "the repository given with --repo URL (none is built in); --offline "
                       "makes an air-gapped root that only sideloads.")
                    + ("" if declared is None else
                       f"\n\nValues {meta['release']} leaves to the machine (--value NAME=VALUE): "
                       + (_listed(declared) if declared else "none") + "."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_exit_codes_text())
    parser.add_argument("--root", type=Path, required=True, help="installation root")
    parser.add_argument("--version", action="version", version=f"greenlight-installer {VERSION}",
                        help="print Greenlight's version and exit")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--force", action="store_true",
                        help="upgrade even if the running release fails its pre-check")
    parser.add_argument("--switch-channel", action="store_true",
                        help="follow this installer's channel when the installation follows "
                             "another one")
    parser.add_argument("--repo", metavar="URL", default=None,
                        help="repository a fresh root updates from later"
                             + (f" (default: {built_in})" if built_in else ""))
    parser.add_argument("--offline", action="store_true",
                        help="a fresh root with no repository (air-gapped: sideload only)")
    parser.add_argument("--config", metavar="FILE", type=Path, default=None,
                        help="a fresh root's greenlight.toml starts from this machine layer "
                             "(any key but the repository and channel); refused on an "
                             "existing installation")
    parser.add_argument("--value", metavar="NAME=VALUE", action="append", default=[],
                        help="set a value the release leaves to the machine (a port, a path) "
                             "in a fresh root's [values], over --config's; repeatable; "
                             "refused on an existing installation (edit its greenlight.toml)")
    args = parser.parse_args(argv)
    try:
        layer = machine_layer(meta, args.value, args.config)
        report = install(args.root, args.force, args.switch_channel, args.repo,
                         args.offline, layer)
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
    elif report.outcome in ("upgraded", "downgraded"):
        print(f"installed {report.to_version} ({report.channel}) in {report.root}"
              + (f", replacing {report.from_version}" if report.from_version else ""))
        print(f"the updater for later sideloads, status and rollback: {report.root}/bin/updater")
        repository = config_of(InstallRoot(Path(report.root))).repository
        print(f"later updates: online from {repository.url}" if repository else
              "later updates: air-gapped, by 'updater sideload BUNDLE'")
    elif report.outcome == "up-to-date":
        print(f"{report.root} already has {report.to_version}")
    else:
        summary = report.incident.summary if report.incident else report.note
        print(f"not installed: {summary}; {report.root} is on {report.installed or 'nothing'}")
    return {"rolled-back": EXIT_ROLLED_BACK, "rollback-failed": EXIT_ROLLBACK_FAILED,
            "held": EXIT_HELD}.get(report.outcome, 0)


if __name__ == "__main__":
    sys.exit(main())
