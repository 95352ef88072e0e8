"""`updater`: the command line of the client. Parses, calls plain functions, prints.

Human output is short and goes to stdout; errors are one line on stderr; `--json` prints the
report's stable JSON shape instead (errors too, as greenlight.error/1). Exit codes are listed
by `updater exit-codes` and in the README.
"""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TransferSpeedColumn,
)
from rich.table import Table

from updater._errors import EXIT_CODES, EXIT_UPDATE_AVAILABLE, ConfigError, GreenlightError
from updater._reports import ErrorReport, StatusReport, dump
from updater._root import InstallRoot, default_root
from updater._upgrade import check, open_repository, switch_channel, upgrade

app = typer.Typer(
    name="updater",
    help="Greenlight updater: keep this installation on a signed release channel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

RootOpt = Annotated[
    Path,
    typer.Option(
        "--root",
        envvar="GREENLIGHT_ROOT",
        default_factory=default_root,
        show_default="platform data dir, or $GREENLIGHT_ROOT",
        help="Installation root.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the stable JSON report.")]
T = TypeVar("T")


def _fail(error: GreenlightError, as_json: bool) -> typer.Exit:
    if as_json:
        print(dump(ErrorReport(error=str(error), kind=error.kind, exit_code=error.exit_code)))
    else:
        err.print(f"updater: error: {error}", soft_wrap=True)
    return typer.Exit(error.exit_code)


def _run(as_json: bool, work: Callable[[], T]) -> T:
    try:
        return work()
    except GreenlightError as e:
        raise _fail(e, as_json) from None


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not err.is_terminal:
        yield None
        return
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress("[progress.description]{task.description}", *columns, console=err) as bar:
        task = bar.add_task("downloading", total=None)
        yield lambda n: bar.advance(task, n)


@app.command()
def init(
    root: RootOpt,
    repo: Annotated[str, typer.Option("--repo", help="Repository base URL.")],
    trust: Annotated[Path, typer.Option("--trust", help="The root.json to trust first.")],
    channel: Annotated[str, typer.Option("--channel", help="Channel to follow.")] = "stable",
    as_json: JsonOpt = False,
) -> None:
    """Create an installation root that trusts ROOT_JSON and follows CHANNEL."""

    def work() -> InstallRoot:
        try:
            trusted = trust.read_bytes()
        except OSError as e:
            raise ConfigError(f"--trust {trust}: cannot read: {e.strerror}") from None
        created = InstallRoot.create(root, repo, trusted, channel)
        # Verify the trust anchor now, not at the first check.
        open_repository(created)
        return created

    created = _run(as_json, work)
    if as_json:
        print(dump(_status(created)))
    else:
        out.print(f"initialized {created.path} following {channel} at {repo}")


@app.command("check")
def check_cmd(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Refresh signed metadata and report whether the channel has another release.

    Exit 0 when up to date, 10 when an update is available.
    """
    install = InstallRoot(root)
    report = _run(as_json, lambda: check(install, open_repository(install)))
    if as_json:
        print(dump(report))
    elif report.update_available:
        out.print(
            f"{report.channel}: {report.available} available "
            f"(installed: {report.installed or 'nothing'})"
        )
    else:
        out.print(f"{report.channel}: up to date at {report.installed}")
    raise typer.Exit(EXIT_UPDATE_AVAILABLE if report.update_available else 0)


@app.command("upgrade")
def upgrade_cmd(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Download, verify, stage and switch to the active channel's release."""
    install = InstallRoot(root)
    with _progress(not as_json) as progress:
        report = _run(as_json, lambda: upgrade(install, open_repository(install), progress))
    if as_json:
        print(dump(report))
    elif report.outcome == "up-to-date":
        out.print(f"{report.channel}: up to date at {report.to_version}")
    else:
        out.print(
            f"{report.channel}: upgraded {report.from_version or 'nothing'} -> {report.to_version}"
            f" ({report.bytes_fetched} of {report.bytes_total} bytes fetched)"
        )


def _status(install: InstallRoot) -> StatusReport:
    active = install.active_channel()
    return StatusReport(
        root=str(install.path),
        repository=install.config.repository.url,
        channel=active.channel,
        channel_since=active.since,
        channel_reason=active.reason,
        installed=install.installed_version(),
        releases=install.installed_releases(),
    )


@app.command()
def status(root: RootOpt, as_json: JsonOpt = False) -> None:
    """Show what is installed, which channel is active and why."""
    install = InstallRoot(root)
    report = _run(as_json, lambda: _status(install))
    if as_json:
        print(dump(report))
        return
    table = Table(show_header=False, box=None)
    table.add_row("root", report.root)
    table.add_row("repository", report.repository)
    table.add_row("channel", f"{report.channel} (since {report.channel_since:%Y-%m-%d %H:%M}Z: "
                  f"{report.channel_reason})")
    table.add_row("installed", report.installed or "nothing")
    table.add_row("kept releases", ", ".join(report.releases) or "none")
    out.print(table)


@app.command()
def channel(
    root: RootOpt,
    name: Annotated[str | None, typer.Argument(help="Channel to switch to.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the active channel, or switch to NAME (verified to exist in the repository)."""
    install = InstallRoot(root)

    def work() -> StatusReport:
        if name is not None:
            switch_channel(install, open_repository(install), name)
        return _status(install)

    report = _run(as_json, work)
    if as_json:
        print(dump(report))
    else:
        out.print(f"{report.channel} ({report.channel_reason})")


@app.command("exit-codes")
def exit_codes() -> None:
    """List the exit codes and what they mean."""
    for code, meaning in sorted(EXIT_CODES.items()):
        out.print(f"{code:>3}  {meaning}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
