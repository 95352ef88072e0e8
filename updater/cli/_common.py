"""What every `updater` command shares: the group, the options, output, status.json
after each command, the outbox sent after commands that change the installation, and the one
error funnel (`run_command`)."""

import contextlib
import errno
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from greenlight.channels import VERSION, terminal_lines
from greenlight.updater._errors import (
    GreenlightError,
    Interrupted,
    StoreError,
    signalled,
)

if TYPE_CHECKING:

    from pydantic import BaseModel

    from greenlight.updater.store import InstallRoot


__all__ = ["EVIDENCE_KEYS", "app", "json_option", "open_root", "print_json", "progress_bar",
           "root_option", "run_command", "say"]


@click.group(name="updater", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", prog_name="updater",
                      message="%(prog)s %(version)s", help="Print Greenlight's version and exit.")
def app() -> None:
    """Greenlight updater: keep this installation on a signed release channel."""
    from greenlight.channels import lean_process

    lean_process()


EVIDENCE_KEYS = ("status", "body", "close_code", "returncode", "stderr", "error", "answers", "got",
             "expected", "last_exit", "log")

root_option = click.option(
    "--root", type=click.Path(path_type=Path), envvar="GREENLIGHT_ROOT", default=None,
    show_default="the platform's data folder", show_envvar=True, help="Installation root.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the stable JSON report.")
force_option = click.option("--force", is_flag=True,
                            help="Upgrade even if the running release fails its pre-check.")
T = TypeVar("T")


def say(line: str = "") -> None:
    """One line (or a few) on stdout, control characters escaped whatever their source."""
    print(terminal_lines(line), flush=False)


def print_json(report: "BaseModel") -> None:
    from greenlight.updater.output import dump

    print(dump(report))


def _fail(error: GreenlightError, as_json: bool) -> SystemExit:
    if as_json:
        from greenlight.updater.output import ErrorReport

        print_json(ErrorReport(error=str(error), kind=error.kind, exit_code=error.exit_code))
    else:
        print(f"updater: error: {terminal_lines(str(error), one_line=True)}", file=sys.stderr)
    return SystemExit(error.exit_code)


def _keep_status(root: "InstallRoot", result: object) -> None:
    """state/status.json after every command (what a UI reads); never fails the command.
    A local write only: no command but those that change the installation sends anything."""
    from greenlight.updater.output import status_update
    from greenlight.updater.store import refresh_status

    if not root.config_path.exists():
        return
    with contextlib.suppress(GreenlightError, OSError):
        refresh_status(root, **status_update(result))  # type: ignore[arg-type]


def _send_reports(root: "InstallRoot") -> bool:
    """The fleet-report outbox (opt-in) and the user-feedback outbox, sent after a command
    that changed the installation, or kept for the next one; never fails the command.
    Whether the collector's refusal (or its end) changed what status.json must say."""
    from greenlight.updater.store import queued, queued_feedback, refusal

    if queued_feedback(root):
        from greenlight.updater.agent import send_feedback

        send_feedback(root)
    if not queued(root):
        return False
    from greenlight.updater.agent import send_reports

    before = refusal(root)
    send_reports(root)
    return refusal(root) != before


def run_command(as_json: bool, work: Callable[[], T], root: "InstallRoot | None" = None,
         sends: bool = False) -> T:
    """The one error funnel: every command's work runs here (after recovery, for a root).
    With `sends`, a command that changed the installation sends the report outbox after.

    Raises:
        SystemExit: the work failed (the error's exit code, its line or greenlight.error/1
            said) or a stop signal ended it (EXIT_INTERRUPTED, with what history recorded).
    """
    from greenlight.updater.operations import recover_if_interrupted

    try:
        if root is not None and root.config_path.exists():
            recover_if_interrupted(root)
        result = work()
        if root is not None:
            _keep_status(root, result)
            if sends and _send_reports(root):
                _keep_status(root, result)  # the collector's refusal changed: say it
        return result
    except Interrupted as stop:
        raise _interrupted(stop, root, as_json) from None
    except (GreenlightError, OSError) as e:
        error = signalled(e)  # a stop, whatever error a library made of it
        if isinstance(error, Interrupted):
            raise _interrupted(error, root, as_json) from None
        raise _fail_with(e, as_json) from None


def _fail_with(e: "GreenlightError | OSError", as_json: bool) -> SystemExit:
    if isinstance(e, GreenlightError):
        return _fail(e, as_json)
    hint = " (disk full)" if e.errno == errno.ENOSPC else ""  # local state, not a bug
    return _fail(StoreError(f"{e.filename or 'local state'}: {e.strerror or e}{hint}"), as_json)


def _interrupted(stop: Interrupted, root: "InstallRoot | None", as_json: bool) -> SystemExit:
    """One line (or greenlight.error/1) for a command stopped by a signal, naming what the
    history recorded of it."""
    said = f"{stop}"
    if root is not None and root.config_path.exists():
        from greenlight.updater.store import history, refresh_status

        with contextlib.suppress(GreenlightError, OSError):
            last = history(root)[-1:]
            if last and last[0].event == "interrupted":
                said = last[0].summary
            refresh_status(root)
    if as_json:
        from greenlight.updater.output import ErrorReport

        print_json(ErrorReport(error=said, kind="Interrupted", exit_code=stop.exit_code))
    else:
        print(f"updater: {said}", file=sys.stderr)
    return SystemExit(stop.exit_code)


def open_root(path: Path | None) -> "InstallRoot":
    from greenlight.updater.store import InstallRoot, default_root

    return InstallRoot(path if path is not None else default_root())


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress("{task.description}", *columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("downloading", total=None)
        yield lambda n: bar.advance(task, n)
