"""`release`: the pipeline's command line. Parses, calls plain functions, prints."""

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from release._bundle import build_bundle, parse_duration
from release._errors import ReleaseError
from release._installer import build_installer
from release._keys import KeyStore
from release._publish import publish, repository_status
from release._repository import FileRepository, init_repository
from release._serve import RepositoryServer

app = typer.Typer(
    name="release",
    help="Greenlight release pipeline: a signed repository of channels and releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

RepoArg = Annotated[Path, typer.Argument(help="Repository folder (metadata/, targets/, keys/).")]
KeysOpt = Annotated[
    Path | None, typer.Option("--keys", help="Private keys folder [default: REPO/keys].")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _repo(path: Path, keys: Path | None) -> FileRepository:
    return FileRepository(path, KeyStore(keys or path / "keys"))


def _fail(e: Exception, code: int = 1) -> typer.Exit:
    err.print(f"release: error: {' '.join(str(e).split())}", soft_wrap=True)
    return typer.Exit(code)


@app.command()
def init(repo: RepoArg, keys: KeysOpt = None) -> None:
    """Create a new signed repository with one ed25519 key for each top-level role."""
    try:
        created = init_repository(repo, keys)
    except ReleaseError as e:
        raise _fail(e) from None
    out.print(f"created repository {created.path}")
    out.print(f"keys (owner-only, keep them safe): {created.keys.folder}")
    out.print(f"trusted root for clients: {created.metadata_dir / '1.root.json'}")


def _parse_components(items: list[str]) -> dict[str, Path]:
    components: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ReleaseError(f"--component {item!r}: expected NAME=PATH")
        if name in components:
            raise ReleaseError(f"--component {name}: given twice")
        components[name] = Path(path)
    return components


@app.command("publish")
def publish_cmd(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel", help="Channel to publish on.")],
    version: Annotated[str, typer.Option("--version", help="Release version, e.g. 1.6.11.")],
    component: Annotated[
        list[str], typer.Option("--component", help="NAME=PATH of a component archive.")
    ],
    fallback: Annotated[
        str | None, typer.Option("--fallback", help="Channel clients fall back to.")
    ] = None,
    allow_older: Annotated[
        bool, typer.Option("--allow-older", help="Publish a version not newer than the current.")
    ] = False,
    keys: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a release's component archives and point CHANNEL at it, signed."""
    try:
        channel_file = publish(
            _repo(repo, keys), channel, version, _parse_components(component), fallback,
            allow_older,
        )
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    if as_json:
        print(channel_file.model_dump_json(indent=2))
    else:
        out.print(f"published {channel} {version} ({', '.join(channel_file.components)})")


@app.command()
def bundle(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel", help="Channel whose release to bundle.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file to write.")],
    expires: Annotated[str, typer.Option(
        "--expires", help="How long offline sites may install it: 12h, 90d, 8w.")] = "30d",
    keys: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write an offline bundle: root chain, metadata, channel file and artifacts, signed to
    stay valid for --expires (the new metadata is published in the repository too)."""
    try:
        made = build_bundle(_repo(repo, keys), channel, output, parse_duration(expires))
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps(made, indent=2))
    else:
        out.print(f"bundled {channel} {made['release']} into {output} ({made['bytes']} bytes), "
                  f"valid until {made['expires']}")


@app.command()
def installer(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel", help="Channel whose release to ship.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the executable.")],
    product_config: Annotated[Path | None, typer.Option(
        "--product-config", help="TOML with the product's [[service]] and [[check]] tables.")
    ] = None,
    repo_url: Annotated[str, typer.Option(
        "--repo-url", help="Repository URL installed roots use for later online updates.")
    ] = "http://127.0.0.1:8080/",
    expires: Annotated[str, typer.Option("--expires", help="Validity of the bundle inside.")
                       ] = "90d",
    keys: KeysOpt = None,
) -> None:
    """Build the offline installer: one PyInstaller executable with the updater, the trusted
    root and a bundle of CHANNEL's release."""
    try:
        exe = build_installer(_repo(repo, keys), channel, output, product_config=product_config,
                              repo_url=repo_url, expires=parse_duration(expires))
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    out.print(f"built {exe} ({exe.stat().st_size} bytes)")


@app.command()
def serve(
    repo: RepoArg,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free).")] = 8080,
) -> None:
    """Serve metadata/ and targets/ on 127.0.0.1 for development (any static server works)."""
    if not (repo / "metadata" / "root.json").is_file():
        raise _fail(ReleaseError(f"{repo}: no repository here"))
    try:
        server = RepositoryServer(repo, port)
    except OSError as e:
        raise _fail(ReleaseError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}")) from None
    out.print(f"serving {repo} at {server.url}/ (Ctrl-C stops)")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def status(repo: RepoArg, keys: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """Channels, releases, roles, thresholds and expiry dates."""
    try:
        report = repository_status(_repo(repo, keys))
    except ReleaseError as e:
        raise _fail(e) from None
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    channels = Table("channel", "release", "fallback", "published", "revoked", box=None)
    for c in report.channels:
        channels.add_row(c.channel, c.release, c.fallback or "-",
                         f"{c.published_at:%Y-%m-%d %H:%M}Z", ", ".join(c.revoked) or "-")
    roles = Table("role", "version", "threshold", "expires", box=None)
    now = time.time()
    for r in report.roles:
        days = (r.expires.timestamp() - now) / 86400
        roles.add_row(r.role, str(r.version), f"{r.threshold} of {r.keys}",
                      f"{r.expires:%Y-%m-%d %H:%M}Z (in {days:.0f} days)")
    out.print(channels)
    out.print()
    out.print(roles)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
