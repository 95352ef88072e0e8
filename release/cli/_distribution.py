"""`release bundle`, `installer`, `sync` and `serve`: getting a repository to machines."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from greenlight.release.cli._common import (
    app,
    json_option,
    keys_option,
    open_repo,
    print_json,
    repo_argument,
    run_command,
    say,
)

if TYPE_CHECKING:
    pass

__all__: list[str] = []

@app.command()
@repo_argument
@click.option("--channel", required=True, help="Channel whose release to bundle.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Bundle file to write.")
@click.option("--expires", default="30d", show_default=True,
              help="How long offline sites may install it: 12h, 90d, 8w.")
@click.option("--with-updater", is_flag=True,
              help="Carry greenlight-<channel>'s Greenlight release too: `updater sideload` "
                   "qualifies and activates it first, as an agent would online.")
@keys_option
@json_option
def bundle(repo: Path, channel: str, output: Path, expires: str, with_updater: bool,
           keys: Path | None, as_json: bool) -> None:
    """Write an offline bundle: root chain, metadata, channel file and artifacts, signed to
    stay valid for --expires (the new metadata is published in the repository too)."""
    from greenlight.release._durations import parse_duration
    from greenlight.release.distribution._bundle import build_bundle

    made = run_command(lambda: build_bundle(open_repo(repo, keys), channel, output,
                                            parse_duration(expires), with_updater))
    if as_json:
        print_json(made)
    else:
        say(f"bundled {channel} {made.release} into {output} ({made.bytes} bytes), "
            f"valid until {made.expires:%Y-%m-%d %H:%M}Z")


@app.command()
@repo_argument
@click.option("--channel", required=True, help="Channel whose release to ship.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Folder for the executable.")
@click.option("--product-config", type=click.Path(path_type=Path), default=None,
              help="For a release published without --manifest: its manifest ([[service]], "
                   "[[check]], ...; signed now as the release's) and the machine's backend.")
@click.option("--repo-url", default=None,
              help="Repository URL installed roots use for later online updates. Without it, "
                   "a fresh install asks for --repo URL, or --offline (air-gapped).")
@click.option("--expires", default="90d", show_default=True,
              help="Validity of the bundle inside.")
@keys_option
def installer(repo: Path, channel: str, output: Path, product_config: Path | None,
              repo_url: str | None, expires: str, keys: Path | None) -> None:
    """Build the offline installer: one PyInstaller executable with the updater, the trusted
    root and a bundle of --channel's release."""
    from greenlight.release._durations import parse_duration
    from greenlight.release.distribution._installer import build_installer

    exe = run_command(lambda: build_installer(open_repo(repo, keys), channel, output,
                                       product_config=product_config, repo_url=repo_url,
                                       expires=parse_duration(expires), told=say))
    say(f"built {exe} ({exe.stat().st_size} bytes)")


@app.command("sync")
@repo_argument
@click.option("--to", "url", required=True, metavar="s3://BUCKET[/PREFIX]",
              help="Where to publish: an S3 bucket, or a prefix in one.")
@click.option("--endpoint-url", default=None,
              help="An S3-compatible endpoint (MinIO, Ceph, R2, ...); default: AWS.")
@click.option("--region", default=None, help="The bucket's region (default: from AWS_REGION).")
@click.option("--timestamp-max-age", type=int, default=60, show_default=True,
              help="Seconds a CDN may cache timestamp.json and the other mutable files.")
@click.option("--jobs", type=int, default=8, show_default=True,
              help="Uploads at once within a phase.")
@json_option
def sync_cmd(repo: Path, url: str, endpoint_url: str | None, region: str | None,
             timestamp_max_age: int, jobs: int, as_json: bool) -> None:
    """Publish the repository to S3-compatible object storage: targets, then root, delegated
    metadata, targets, snapshot, and timestamp last, so a client never sees a half-published
    state. Credentials come from the usual AWS_* variables. Run it again after any failure:
    what is there already is skipped."""
    from greenlight.release.distribution._sync import sync

    result = run_command(lambda: sync(repo, url, endpoint_url, region, timestamp_max_age, jobs))
    if as_json:
        print(json.dumps({"schema": "greenlight.sync/1", "url": result.url,
                          "uploaded": result.uploaded, "skipped": result.skipped,
                          "bytes": result.bytes}, indent=2))
        return
    say(f"synced {repo} to {url}: {len(result.uploaded)} uploaded ({result.bytes} bytes), "
        f"{result.skipped} already there" + ("; timestamp.json last" if any(
            k.endswith("/timestamp.json") for k in result.uploaded) else ""))


@app.command()
@repo_argument
@click.option("--port", type=int, default=8080, show_default=True,
              help="Port on 127.0.0.1 (0: any free).")
def serve(repo: Path, port: int) -> None:
    """Serve metadata/ and targets/ on 127.0.0.1 for development (any static server works)."""
    from greenlight.release._errors import NotFound, StorageError
    from greenlight.release.distribution._serve import RepositoryServer

    def work() -> RepositoryServer:
        if not (repo / "metadata" / "root.json").is_file():
            raise NotFound(f"{repo}: no repository here")
        try:
            return RepositoryServer(repo, port)
        except OSError as e:
            raise StorageError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None

    server = run_command(work)
    say(f"serving {repo} at {server.url}/ (Ctrl-C stops)")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
