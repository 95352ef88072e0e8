"""What every `release` command shares: the group, the options, the output helpers, and
the one error funnel (`run_command`), which catches the pipeline's own errors only: each becomes one
line on stderr and its exit code (`greenlight.release._errors`). Anything else is a bug, and
`main` says so."""

import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from greenlight.channels import VERSION

if TYPE_CHECKING:
    from pydantic import BaseModel

    from greenlight.channels import ChannelFile
    from greenlight.release._errors import ReleaseError
    from greenlight.release.repository._repository import FileRepository

__all__ = ["DefaultGroup", "app", "change_channel", "fail", "json_option", "keys_option",
           "open_repo",
           "print_awaiting", "print_json", "repo_argument", "rollout_line", "run_command", "say"]


@click.group(name="release", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", prog_name="release",
                      message="%(prog)s %(version)s", help="Print Greenlight's version and exit.")
def app() -> None:
    """Greenlight release pipeline: a signed repository of channels and releases."""
    from greenlight.channels import lean_process

    lean_process()


repo_argument = click.argument("repo", type=click.Path(path_type=Path))
keys_option = click.option(
    "--keys", "keys", type=click.Path(path_type=Path), default=None,
    help="Private keys folder (default: the one the repository remembers).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
T = TypeVar("T")


def say(line: str = "") -> None:
    """One line (or a few) on stdout, control characters escaped whatever their source."""
    from greenlight.channels import terminal_lines

    print(terminal_lines(line))


def fail(error: "ReleaseError") -> SystemExit:
    """Print `error` as one line; the exit to raise."""
    from greenlight.channels import terminal_lines

    print(f"release: error: {terminal_lines(' '.join(str(error).split()), one_line=True)}",
          file=sys.stderr)
    return SystemExit(error.exit_code)


def run_command(work: Callable[[], T]) -> T:
    """The one error funnel of this CLI: the pipeline's own errors, python-tuf's refusals of
    metadata on disk, a shared-layer validator's refusal of a value given, and the disk.

    Raises:
        SystemExit: `work` failed so: one line on stderr, and the exit code of its class
            (a refused value is a UsageError, metadata a MetadataError, the disk a
            StorageError).
    """
    from pydantic import ValidationError
    from tuf.api.exceptions import RepositoryError

    from greenlight.channels import InvalidValue, describe_validation
    from greenlight.release._errors import (
        MetadataError,
        ReleaseError,
        StorageError,
        UsageError,
    )

    try:
        return work()
    except ReleaseError as e:
        raise fail(e) from None
    except InvalidValue as e:  # a name or version given that the shared layer refuses
        raise fail(UsageError(str(e))) from None
    except ValidationError as e:  # a value given that a model of the shared layer refuses
        raise fail(UsageError(describe_validation(e))) from None
    except RepositoryError as e:  # metadata on disk that python-tuf cannot read or accept
        raise fail(MetadataError(
            f"the repository's metadata is damaged or invalid: {type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}")) from None
    except OSError as e:  # nothing was changed: pipeline commands publish all or nothing
        hint = " (disk full)" if e.errno == errno.ENOSPC else ""
        raise fail(StorageError(f"{e.filename or 'repository'}: {e.strerror or e}{hint}; "
                                "nothing was changed")) from None


def open_repo(path: Path, keys: Path | None) -> "FileRepository":
    from greenlight.release.repository._keys import KeyStore
    from greenlight.release.repository._repository import FileRepository

    return FileRepository(path, KeyStore(keys) if keys is not None else None)


def print_json(result: "BaseModel") -> None:
    print(result.model_dump_json(indent=2))


def print_awaiting(pending: list[str]) -> None:
    if pending:
        say(f"awaiting signatures: {', '.join(pending)} (nothing published yet): "
            "release sign export / add / import")


def change_channel(repo: Path, keys_dir: Path | None, as_json: bool,
                    change: "Callable[[FileRepository], ChannelFile]",
                    describe: "Callable[[ChannelFile], str]") -> None:
    """Run a change that writes a channel file; show it, and what awaits signatures."""
    from greenlight.release.repository._status import ChannelChange

    def work() -> tuple[ChannelChange, str]:
        r = open_repo(repo, keys_dir)
        channel_file = change(r)
        return (ChannelChange(channel_file=channel_file, awaiting_signatures=r.pending()),
                describe(channel_file))

    result, line = run_command(work)
    if as_json:
        print_json(result)
    else:
        say(line)
        print_awaiting(result.awaiting_signatures)


def rollout_line(cf: "ChannelFile") -> str:
    r = cf.rollout
    if r is None:
        return "everyone"
    if r.plan is None:
        return f"{r.percent}% of installations{' (HALTED)' if r.halted else ''}"
    halt, sequential = r.plan.halt, r.plan.halt.sequential
    rule = (f"halting by the sequential rule (false-halt probability {sequential.false_halt:g},"
            f" at least {sequential.min_failures} failed)" if sequential else
            f"halting at {halt.rollbacks} rollbacks or {halt.failure_ratio:.0%} of "
            f"{halt.min_reports}+ machines")
    if halt.feedback is not None:
        rule += (f", pausing the advance once {halt.feedback.machines} machines' users wrote "
                 "in within a step")
    return (f"planned rollout {'/'.join(f'{p}%' for p in r.plan.steps)}, at least "
            f"{r.plan.soak:g} s a step, {rule}{' (HALTED)' if r.halted else ''}")


class DefaultGroup(click.Group):
    """A group whose first word may be left out: `release rollout REPO ...` is `release
    rollout change REPO ...`, `release collector --db ...` is `release collector serve
    --db ...` (the group's `default`, a hidden or ordinary command of it)."""

    default = ""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)

