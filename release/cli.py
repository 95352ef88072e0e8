"""`release`: the pipeline's command line. Parses, calls the pipeline's functions, prints.

Every command's work runs through one error funnel (`_run`): a `ReleaseError` or a bad value
becomes one line on stderr and exit 1; nothing else is caught here, and `main` turns anything
unexpected into one line too. Results are pydantic models, printed as JSON with `--json`.
Heavy modules are imported by the commands that use them.
"""

import errno
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from pydantic import BaseModel

    from greenlight.channels import ChannelFile, RolloutPlan
    from greenlight.release._repository import FileRepository

__all__ = ["app", "main"]



@click.group(name="release", context_settings={"help_option_names": ["-h", "--help"]})
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
    print(line)


def _run(work: Callable[[], T]) -> T:
    """The one error funnel of this CLI."""
    from tuf.api.exceptions import RepositoryError

    from greenlight.release._errors import ReleaseError

    try:
        return work()
    except (ReleaseError, ValueError) as e:
        print(f"release: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(1) from None
    except RepositoryError as e:  # metadata on disk that python-tuf cannot read or accept
        print(f"release: error: the repository's metadata is damaged or invalid: "
              f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as e:  # nothing was changed: pipeline commands publish all or nothing
        hint = " (disk full)" if e.errno == errno.ENOSPC else ""
        print(f"release: error: {e.filename or 'repository'}: {e.strerror or e}{hint}; "
              "nothing was changed", file=sys.stderr)
        raise SystemExit(1) from None


def _repo(path: Path, keys: Path | None) -> "FileRepository":
    from greenlight.release._keys import KeyStore
    from greenlight.release._repository import FileRepository

    return FileRepository(path, KeyStore(keys) if keys is not None else None)


def _json(result: "BaseModel") -> None:
    print(result.model_dump_json(indent=2))


def _awaiting(pending: list[str]) -> None:
    if pending:
        say(f"awaiting signatures: {', '.join(pending)} (nothing published yet): "
            "release sign export / add / import")


@app.command()
@repo_argument
@keys_option
def init(repo: Path, keys: Path | None) -> None:
    """Create a new signed repository in REPO with one ed25519 key for each top-level role."""
    from greenlight.release._repository import init_repository

    created = _run(lambda: init_repository(repo, keys))
    say(f"created repository {created.path}")
    say(f"keys (owner-only, keep them safe): {created.keys.folder}")
    say(f"trusted root for clients: {created.metadata_dir / '1.root.json'}")


def _parse_components(items: list[str]) -> dict[str, Path]:
    from greenlight.release._errors import ReleaseError

    components: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ReleaseError(f"--component {item!r}: expected NAME=PATH")
        if name in components:
            raise ReleaseError(f"--component {name}: given twice")
        components[name] = Path(path)
    return components


def _channel_change(repo: Path, keys_dir: Path | None, as_json: bool,
                    change: "Callable[[FileRepository], ChannelFile]",
                    describe: "Callable[[ChannelFile], str]") -> None:
    """Run a change that writes a channel file; show it, and what awaits signatures."""
    from greenlight.release._status import ChannelChange

    def work() -> tuple[ChannelChange, str]:
        r = _repo(repo, keys_dir)
        channel_file = change(r)
        return (ChannelChange(channel_file=channel_file, awaiting_signatures=r.pending()),
                describe(channel_file))

    result, line = _run(work)
    if as_json:
        _json(result)
    else:
        say(line)
        _awaiting(result.awaiting_signatures)


@app.command("publish")
@repo_argument
@click.option("--channel", required=True, help="Channel to publish on.")
@click.option("--version", required=True, help="Release version, e.g. 1.6.11.")
@click.option("--component", required=True, multiple=True, metavar="NAME=PATH",
              help="A component archive; give one per component.")
@click.option("--fallback", default=None, help="Channel clients fall back to.")
@click.option("--allow-older", is_flag=True,
              help="Publish a version not newer than the current.")
@click.option("--rollout", "rollout_percent", type=int, default=None,
              help="Start a staged rollout at this percent of installations.")
@click.option("--rollout-plan", default=None, metavar="P1,P2,...",
              help="Roll out by these percent steps (e.g. 5,25,100), moved along by the "
                   "collector through the online rollout-<channel> role, or halted by it.")
@click.option("--soak", default="1h", show_default=True,
              help="With --rollout-plan: the least time each step lasts (30s, 10m, 1h, 2d).")
@click.option("--halt-rollbacks", type=int, default=3, show_default=True,
              help="With --rollout-plan: halt once this many machines rolled back.")
@click.option("--halt-ratio", type=float, default=0.05, show_default=True,
              help="With --rollout-plan: or once more than this share of machines failed...")
@click.option("--halt-min-reports", type=int, default=20, show_default=True,
              help="...of at least this many machines reporting.")
@click.option("--no-deltas", is_flag=True, help="Do not build patches from recent releases.")
@click.option("--keep-top-folder", is_flag=True,
              help="Unpack archives as they are, even when all members sit under one folder.")
@keys_option
@json_option
def publish_cmd(repo: Path, channel: str, version: str, component: tuple[str, ...],
                fallback: str | None, allow_older: bool, rollout_percent: int | None,
                rollout_plan: str | None, soak: str, halt_rollbacks: int, halt_ratio: float,
                halt_min_reports: int, no_deltas: bool, keep_top_folder: bool,
                keys: Path | None, as_json: bool) -> None:
    """Add a release's component archives and point --channel at it, signed; with patches
    from the channel's (and its fallback's) recent releases where they are small.

    Each archive unpacks into releases/<release>/<component>/ on the machines. An archive
    whose members all sit under one top folder (core/..., core-1.2.3/...) has that folder
    left out; the channel file records it, and this command says so."""
    from greenlight.release._publish import publish

    plan = None if rollout_plan is None else _run(lambda: _plan(
        rollout_plan, soak, halt_rollbacks, halt_ratio, halt_min_reports))
    _channel_change(
        repo, keys, as_json,
        lambda r: publish(r, channel, version, _parse_components(list(component)), fallback,
                          allow_older, rollout_percent, deltas=not no_deltas,
                          keep_top_folder=keep_top_folder, rollout_plan=plan),
        _published)


_SOAK = re.compile(r"\A(\d+(?:\.\d+)?)([smhd])\Z")


def _plan(steps: str, soak: str, rollbacks: int, ratio: float,
          min_reports: int) -> "RolloutPlan":
    from pydantic import ValidationError

    from greenlight.channels import HaltRule, RolloutPlan, now
    from greenlight.release._errors import ReleaseError

    match = _SOAK.match(soak.strip())
    if not match:
        raise ReleaseError(f"--soak {soak!r}: expected a duration such as 30s, 10m, 1h or 2d")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    try:
        percents = [int(p) for p in steps.split(",")]
    except ValueError:
        raise ReleaseError(f"--rollout-plan {steps!r}: expected percents such as 5,25,100"
                           ) from None
    try:
        return RolloutPlan(steps=percents, soak=seconds, started_at=now(), halt=HaltRule(
            rollbacks=rollbacks, failure_ratio=ratio, min_reports=min_reports))
    except ValidationError as e:
        raise ReleaseError(f"--rollout-plan {steps!r}: {e.errors()[0]['msg']}") from None


def _rollout_line(cf: "ChannelFile") -> str:
    r = cf.rollout
    if r is None:
        return "everyone"
    if r.plan is None:
        return f"{r.percent}% of installations{' (HALTED)' if r.halted else ''}"
    return (f"planned rollout {'/'.join(f'{p}%' for p in r.plan.steps)}, at least "
            f"{r.plan.soak:g} s a step, halting at {r.plan.halt.rollbacks} rollbacks or "
            f"{r.plan.halt.failure_ratio:.0%} of {r.plan.halt.min_reports}+ machines"
            f"{' (HALTED)' if r.halted else ''}")


def _published(cf: "ChannelFile") -> str:
    """The publish line, with the layout each archive will unpack to."""
    layout = "; ".join(
        f"{name}: {a.strip_prefix}/* -> {name}/ (top folder left out)" if a.strip_prefix
        else f"{name}: archive root -> {name}/"
        for name, a in cf.components.items())
    deltas = "; ".join(
        f"{name} from {d.from_version} {d.length:,} B ({d.method}, "
        f"{d.length / a.length:.0%} of {a.length:,} B)"
        for name, a in cf.components.items() for d in a.deltas)
    rollout = "" if cf.rollout is None else f"\nrollout: {_rollout_line(cf)}"
    return (f"published {cf.channel} {cf.release} ({', '.join(cf.components)})\n"
            f"layout: {layout}\ndeltas: {deltas or 'none'}{rollout}")


@app.command()
@repo_argument
@click.option("--channel", required=True, help="Channel whose release to bundle.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Bundle file to write.")
@click.option("--expires", default="30d", show_default=True,
              help="How long offline sites may install it: 12h, 90d, 8w.")
@keys_option
@json_option
def bundle(repo: Path, channel: str, output: Path, expires: str, keys: Path | None,
           as_json: bool) -> None:
    """Write an offline bundle: root chain, metadata, channel file and artifacts, signed to
    stay valid for --expires (the new metadata is published in the repository too)."""
    from greenlight.release._bundle import build_bundle, parse_duration

    made = _run(lambda: build_bundle(_repo(repo, keys), channel, output,
                                     parse_duration(expires)))
    if as_json:
        _json(made)
    else:
        say(f"bundled {channel} {made.release} into {output} ({made.bytes} bytes), "
            f"valid until {made.expires:%Y-%m-%d %H:%M}Z")


@app.command()
@repo_argument
@click.option("--channel", required=True, help="Channel whose release to ship.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Folder for the executable.")
@click.option("--product-config", type=click.Path(path_type=Path), default=None,
              help="TOML with the product's [[service]] and [[check]] tables.")
@click.option("--repo-url", default="http://127.0.0.1:8080/", show_default=True,
              help="Repository URL installed roots use for later online updates.")
@click.option("--expires", default="90d", show_default=True,
              help="Validity of the bundle inside.")
@keys_option
def installer(repo: Path, channel: str, output: Path, product_config: Path | None,
              repo_url: str, expires: str, keys: Path | None) -> None:
    """Build the offline installer: one PyInstaller executable with the updater, the trusted
    root and a bundle of --channel's release."""
    from greenlight.release._bundle import parse_duration
    from greenlight.release._installer import build_installer

    exe = _run(lambda: build_installer(_repo(repo, keys), channel, output,
                                       product_config=product_config, repo_url=repo_url,
                                       expires=parse_duration(expires)))
    say(f"built {exe} ({exe.stat().st_size} bytes)")


@app.command()
@click.option("--db", default="sqlite:///greenlight-collector.sqlite3", show_default=True,
              help="Database URL: sqlite:///FILE, or postgresql+psycopg://USER@HOST/DB.")
@click.option("--port", type=int, default=8081, show_default=True, help="Port on 127.0.0.1.")
@click.option("--fleet-token-file", required=True, type=click.Path(path_type=Path),
              help="File holding the token machines send reports with.")
@click.option("--admin-token-file", required=True, type=click.Path(path_type=Path),
              help="File holding the token of the dashboard and the admin endpoints.")
@click.option("--repo", type=click.Path(path_type=Path), default=None,
              help="Guard this repository's planned rollouts: halt them by their rule, move "
                   "them along their steps.")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path), default=None,
              help="With --repo: the folder holding the rollout-<channel>, snapshot and "
                   "timestamp keys (default: the repository's keys folder).")
@click.option("--tick", type=float, default=10.0, show_default=True,
              help="With --repo: seconds between looks at every planned rollout.")
def collector(db: str, port: int, fleet_token_file: Path, admin_token_file: Path,
              repo: Path | None, keys_dir: Path | None, tick: float) -> None:
    """Run the fleet collector on 127.0.0.1: machines' reports in, rollouts out. Stateless:
    several processes may share one PostgreSQL (and one repository folder)."""
    from greenlight.release._collector import serve_collector

    def log(line: str) -> None:
        say(line)
        sys.stdout.flush()

    _run(lambda: serve_collector(db, port, fleet_token_file, admin_token_file,
                                 ready=lambda url: log(f"collecting at {url} (Ctrl-C stops)"),
                                 repo=repo, keys=keys_dir, tick=tick, log=log))


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
    from greenlight.release._sync import sync

    result = _run(lambda: sync(repo, url, endpoint_url, region, timestamp_max_age, jobs))
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
    from greenlight.release._errors import ReleaseError
    from greenlight.release._serve import RepositoryServer

    def work() -> RepositoryServer:
        if not (repo / "metadata" / "root.json").is_file():
            raise ReleaseError(f"{repo}: no repository here")
        try:
            return RepositoryServer(repo, port)
        except OSError as e:
            raise ReleaseError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None

    server = _run(work)
    say(f"serving {repo} at {server.url}/ (Ctrl-C stops)")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
@repo_argument
@keys_option
@json_option
def status(repo: Path, keys: Path | None, as_json: bool) -> None:
    """Channels, releases, roles, thresholds and expiry dates."""
    import time

    from greenlight.release._status import repository_status

    report = _run(lambda: repository_status(_repo(repo, keys)))
    if as_json:
        _json(report)
        return
    say(f"{'channel':<10} {'release':<10} {'rollout':<10} {'fallback':<10} {'published':<17} "
        f"{'revoked':<10} promoted from")
    for c in report.channels:
        say(f"{c.channel:<10} {c.release:<10} {c.rollout:<10} {c.fallback or '-':<10} "
            f"{c.published_at:%Y-%m-%d %H:%M}Z  {', '.join(c.revoked) or '-':<10} "
            f"{c.promoted_from or '-'}")
    say()
    say(f"{'role':<16} {'version':>7} {'threshold':>10}  expires")
    now = time.time()
    for r in report.roles:
        days = (r.expires.timestamp() - now) / 86400
        say(f"{r.role:<16} {r.version:>7} {f'{r.threshold} of {r.keys}':>10}  "
            f"{r.expires:%Y-%m-%d %H:%M}Z (in {days:.0f} days)")
    if report.awaiting_signatures:
        say(f"\nawaiting signatures: {', '.join(report.awaiting_signatures)}")


@app.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the key files.")
@click.option("--name", required=True, help="File name prefix, e.g. the role.")
def keygen_cmd(out_dir: Path, name: str) -> None:
    """Make a signing key on this machine: NAME.<id>.pem (owner-only) and NAME.<id>.pub.pem."""
    from greenlight.release._signing import keygen

    private, public = _run(lambda: keygen(out_dir, name))
    say(f"private key (keep it here): {private}")
    say(f"public key (give it to the release engineer): {public}")


@app.command("keys")
@repo_argument
@click.option("--role", required=True, help="Role whose keys change.")
@click.option("--generate", type=int, default=0, help="New keys made here.")
@click.option("--public-key", type=click.Path(path_type=Path), multiple=True, metavar="PEM",
              help="A signer's public key to add.")
@click.option("--remove", multiple=True, metavar="KEYID", help="Key id (or prefix) to remove.")
@click.option("--threshold", type=int, default=None, help="Signatures needed.")
@keys_option
@json_option
def keys_cmd(repo: Path, role: str, generate: int, public_key: tuple[Path, ...],
         remove: tuple[str, ...], threshold: int | None, keys: Path | None,
         as_json: bool) -> None:
    """Add or remove keys of a role and set its threshold (k of n)."""
    from greenlight.release._signing import change_keys, load_public_key

    result = _run(lambda: change_keys(_repo(repo, keys), role,
                                      add=[load_public_key(p) for p in public_key],
                                      generate=generate, remove=list(remove),
                                      threshold=threshold))
    if as_json:
        _json(result)
        return
    say(f"{role}: {result.threshold} of {len(result.keyids)} keys"
        + (f"; removed {', '.join(k[:12] for k in result.retired)} (a private key kept here "
           "moves to retired/ in the keys folder)" if result.retired else ""))
    _awaiting(result.awaiting_signatures)


@app.command("rotate")
@repo_argument
@click.option("--role", required=True, help="Role whose keys are replaced.")
@click.option("--threshold", type=int, default=None,
              help="Signatures needed after the rotation.")
@click.option("--public-key", type=click.Path(path_type=Path), multiple=True, metavar="PEM",
              help="New keys held elsewhere (default: new keys made here).")
@keys_option
@json_option
def rotate_cmd(repo: Path, role: str, threshold: int | None, public_key: tuple[Path, ...],
               keys: Path | None, as_json: bool) -> None:
    """Replace every key of a role; a new root is signed by the old and the new thresholds."""
    from greenlight.release._signing import load_public_key, rotate

    result = _run(lambda: rotate(_repo(repo, keys), role, threshold,
                                 add=[load_public_key(p) for p in public_key] or None))
    if as_json:
        _json(result)
        return
    say(f"rotated {role}: {len(result.retired)} key(s) retired, "
        f"now {result.threshold} of {len(result.keyids)}")
    _awaiting(result.awaiting_signatures)


@app.group("sign")
def sign_app() -> None:
    """Threshold signing across machines."""


@sign_app.command("export")
@repo_argument
@click.option("--role", required=True, help="Role awaiting signatures.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="File to write.")
@keys_option
def sign_export(repo: Path, role: str, output: Path, keys: Path | None) -> None:
    """Write the version of --role awaiting signatures to a file for other signers."""
    from greenlight.release._signing import export_staged

    _run(lambda: export_staged(_repo(repo, keys), role, output))
    say(f"wrote {output}: sign it with 'release sign add {output.name} --key KEY.pem'")


@sign_app.command("add")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--key", required=True, type=click.Path(path_type=Path),
              help="Your private key (PEM).")
def sign_add(file: Path, key: Path) -> None:
    """Sign FILE, exported by 'release sign export', with one key (no repository needed)."""
    from greenlight.release._signing import sign_file

    keyid = _run(lambda: sign_file(file, key))
    say(f"signed {file} with key {keyid[:16]}")


@sign_app.command("import")
@repo_argument
@click.argument("file", type=click.Path(path_type=Path))
@keys_option
@json_option
def sign_import(repo: Path, file: Path, keys: Path | None, as_json: bool) -> None:
    """Merge the signatures in FILE (signed with 'sign add'); publish once the role's
    threshold is met."""
    from greenlight.release._signing import import_signatures

    result = _run(lambda: import_signatures(_repo(repo, keys), file))
    if as_json:
        _json(result)
        return
    say(f"{result.role}: published with {result.signatures} signatures" if result.published
        else f"{result.role}: {result.signatures} signature(s), still waiting: "
             f"{result.missing or 'other roles'}")


@sign_app.command("status")
@repo_argument
@keys_option
def sign_status(repo: Path, keys: Path | None) -> None:
    """Roles awaiting signatures."""
    from greenlight.release._signing import awaiting

    waiting = _run(lambda: awaiting(_repo(repo, keys)))
    for role, missing in waiting.items():
        say(f"{role}: {missing}")
    if not waiting:
        say("nothing awaits signatures")


@app.command("promote")
@repo_argument
@click.option("--from", "source", required=True, help="Channel to promote from.")
@click.option("--to", "target", required=True, help="Channel to promote to.")
@click.option("--version", default=None,
              help="Release to promote (default: what --from carries).")
@click.option("--allow-older", is_flag=True,
              help="Promote a version not newer than --to carries.")
@keys_option
@json_option
def promote_cmd(repo: Path, source: str, target: str, version: str | None, allow_older: bool,
                keys: Path | None, as_json: bool) -> None:
    """Point --to at the very artifacts --from carries (same hashes, nothing re-uploaded)."""
    from greenlight.release._lifecycle import promote

    _channel_change(repo, keys, as_json,
                    lambda r: promote(r, source, target, version, allow_older),
                    lambda cf: f"promoted {cf.release} from {source} to {target}")


@app.command("yank")
@repo_argument
@click.option("--channel", required=True, help="Channel that carries it.")
@click.option("--version", required=True, help="Release to revoke.")
@click.option("--reason", required=True, help="Why; clients record it.")
@keys_option
@json_option
def yank_cmd(repo: Path, channel: str, version: str, reason: str, keys: Path | None,
             as_json: bool) -> None:
    """Revoke a release: the channel goes back to its previous good release."""
    from greenlight.release._lifecycle import yank

    _channel_change(repo, keys, as_json, lambda r: yank(r, channel, version, reason),
                    lambda cf: f"yanked {version} on {channel}; it now carries {cf.release}")


class _RolloutGroup(click.Group):
    """`release rollout REPO --channel C ...` changes a rollout; `release rollout status`
    reports on them. The first form is the group's hidden default command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["change", *args]
        return super().parse_args(ctx, args)


@app.group("rollout", cls=_RolloutGroup)
def rollout_group() -> None:
    """Staged rollouts.

    \b
    release rollout REPO --channel C (--percent N | --halt | --resume)
    release rollout status --collector URL --admin-token-file FILE
    """


@rollout_group.command("change", hidden=True)
@repo_argument
@click.option("--channel", required=True, help="Channel whose release rolls out.")
@click.option("--percent", type=int, default=None,
              help="Share of installations, 0-100 (replaces a plan).")
@click.option("--halt", is_flag=True, help="Stop the rollout where it is.")
@click.option("--resume", is_flag=True,
              help="Lift a halt (a person's or the collector's) once someone has looked.")
@keys_option
@json_option
def rollout_cmd(repo: Path, channel: str, percent: int | None, halt: bool, resume: bool,
                keys: Path | None, as_json: bool) -> None:
    """Stage the channel's release to a share of installations, halt it, or resume it."""
    from greenlight.release._lifecycle import rollout

    _channel_change(repo, keys, as_json, lambda r: rollout(r, channel, percent, halt, resume),
                    lambda cf: f"{channel} {cf.release}: {_rollout_line(cf)}")


@rollout_group.command("status")
@click.option("--collector", "url", required=True, help="The collector's URL.")
@click.option("--admin-token-file", required=True, type=click.Path(path_type=Path),
              help="File holding the collector's admin token.")
@json_option
def rollout_status_cmd(url: str, admin_token_file: Path, as_json: bool) -> None:
    """Per release: machines reporting, upgraded, rolled back, dead ends, the failing checks
    ranked with an example, the step it is at, and who halted it and why."""
    from greenlight.release._collector import fetch_rollouts

    answer = _run(lambda: fetch_rollouts(url, admin_token_file))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    if not answer["rollouts"]:
        say("no reports yet")
    for r in answer["rollouts"]:
        o = r["outcomes"]
        say(f"{r['channel']} {r['release']}: {r['machines']} machines reporting; "
            f"{o.get('upgraded', 0)} upgraded, {o.get('rolled-back', 0)} rolled back, "
            f"{o.get('dead-end', 0)} dead ends, {o.get('precheck-blocked', 0)} pre-check "
            f"blocked, {o.get('held', 0)} held")
        plan = r.get("plan")
        if plan:
            where = f"step {plan['step'] + 1} of {len(plan['steps'])} ({plan['percent']}%)"
            if plan["halted"]:
                where += f", HALTED by {plan['by']}: {plan['reason']}"
            elif plan.get("by"):
                where += f", set by {plan['by']} at {plan['at']}"
            say(f"  rollout: {where}")
        for c in r["checks"]:
            say(f"  {c['reports']:>4} x {c['name']}: {c['example']}")


@app.command("refresh")
@repo_argument
@click.option("--check", is_flag=True,
              help="Only report; exit 1 when a role expires within --within.")
@click.option("--within", default="3d", show_default=True, help="Window for --check.")
@keys_option
def refresh_cmd(repo: Path, check: bool, within: str, keys: Path | None) -> None:
    """Re-sign timestamp and snapshot with fresh expiry (run it from a timer or cron job)."""
    from greenlight.release._bundle import parse_duration
    from greenlight.release._upkeep import expiring, refresh

    if check:
        found = _run(lambda: expiring(_repo(repo, keys), parse_duration(within)))
        for role, when in found.items():
            say(f"{role} expires {when:%Y-%m-%d %H:%M}Z (within {within})")
        if found:
            raise SystemExit(1)
        say(f"nothing expires within {within}")
        return
    renewed = _run(lambda: refresh(_repo(repo, keys)))
    say(", ".join(f"{role} valid until {until}" for role, until in renewed.items()))


@app.command("verify")
@repo_argument
@keys_option
@json_option
def verify_cmd(repo: Path, keys: Path | None, as_json: bool) -> None:
    """Verify the whole published tree offline, as a client would."""
    from greenlight.release._upkeep import verify

    result = _run(lambda: verify(_repo(repo, keys)))
    if as_json:
        _json(result)
        return
    say(f"ok: root v{result.root_version}, channels "
        + ", ".join(f"{c} {v}" for c, v in result.channels.items())
        + f", {result.artifacts_verified} artifact(s) verified")


def main() -> None:
    """The `release` console script: warnings and errors as one line each, never a traceback."""
    import warnings

    from greenlight.release._keys import LooseKeyPermissions

    def one_line(message: Warning | str, *args: object, **kwargs: object) -> None:
        print(f"release: warning: {message}", file=sys.stderr)

    warnings.simplefilter("always", LooseKeyPermissions)
    warnings.showwarning = one_line
    try:
        app(prog_name="release")
    except KeyboardInterrupt:
        print("release: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug: one line, exit 1
        print(f"release: internal error: {type(e).__name__}: {e} (please report it)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
