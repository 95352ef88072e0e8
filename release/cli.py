"""`release`: the pipeline's command line. Parses, calls the pipeline's functions, prints.

Every command's work runs through one error funnel (`_run`): a `ReleaseError` or a bad value
becomes one line on stderr and exit 1; nothing else is caught here, and `main` turns anything
unexpected into one line too. Results are pydantic models, printed as JSON with `--json`.
Heavy modules are imported by the commands that use them.
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel

    from greenlight.channels import ChannelFile
    from greenlight.release._repository import FileRepository

__all__ = ["app", "main"]

app = typer.Typer(
    name="release",
    help="Greenlight release pipeline: a signed repository of channels and releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RepoArg = Annotated[Path, typer.Argument(help="Repository folder (metadata/, targets/, keys/).")]
KeysOpt = Annotated[
    Path | None, typer.Option("--keys", help="Private keys folder (default: REPO/keys).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
T = TypeVar("T")


def say(line: str = "") -> None:
    print(line)


def _run(work: Callable[[], T]) -> T:
    """The one error funnel of this CLI."""
    from greenlight.release._errors import ReleaseError

    try:
        return work()
    except (ReleaseError, ValueError) as e:
        print(f"release: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise typer.Exit(1) from None


def _repo(path: Path, keys: Path | None) -> "FileRepository":
    from greenlight.release._keys import KeyStore
    from greenlight.release._repository import FileRepository

    return FileRepository(path, KeyStore(keys or path / "keys"))


def _json(result: "BaseModel") -> None:
    print(result.model_dump_json(indent=2))


def _awaiting(pending: list[str]) -> None:
    if pending:
        say(f"awaiting signatures: {', '.join(pending)} (nothing published yet): "
            "release sign export / add / import")


@app.command()
def init(repo: RepoArg, keys: KeysOpt = None) -> None:
    """Create a new signed repository with one ed25519 key for each top-level role."""
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
def publish_cmd(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel", help="Channel to publish on.")],
    version: Annotated[str, typer.Option("--version", help="Release version, e.g. 1.6.11.")],
    component: Annotated[
        list[str], typer.Option("--component", metavar="NAME=PATH",
                                 help="A component archive; give one per component.")
    ],
    fallback: Annotated[
        str | None, typer.Option("--fallback", help="Channel clients fall back to.")
    ] = None,
    allow_older: Annotated[
        bool, typer.Option("--allow-older", help="Publish a version not newer than the current.")
    ] = False,
    rollout_percent: Annotated[int | None, typer.Option(
        "--rollout", help="Start a staged rollout at this percent of installations.")] = None,
    no_deltas: Annotated[bool, typer.Option(
        "--no-deltas", help="Do not build patches from recent releases.")] = False,
    keys: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a release's component archives and point --channel at it, signed; with patches
    from the channel's (and its fallback's) recent releases where they are small."""
    from greenlight.release._publish import publish

    _channel_change(
        repo, keys, as_json,
        lambda r: publish(r, channel, version, _parse_components(component), fallback,
                          allow_older, rollout_percent, deltas=not no_deltas),
        lambda cf: f"published {channel} {version} ({', '.join(cf.components)})")


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
    from greenlight.release._bundle import build_bundle, parse_duration

    made = _run(lambda: build_bundle(_repo(repo, keys), channel, output,
                                     parse_duration(expires)))
    if as_json:
        _json(made)
    else:
        say(f"bundled {channel} {made.release} into {output} ({made.bytes} bytes), "
            f"valid until {made.expires:%Y-%m-%d %H:%M}Z")


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
    root and a bundle of --channel's release."""
    from greenlight.release._bundle import parse_duration
    from greenlight.release._installer import build_installer

    exe = _run(lambda: build_installer(_repo(repo, keys), channel, output,
                                       product_config=product_config, repo_url=repo_url,
                                       expires=parse_duration(expires)))
    say(f"built {exe} ({exe.stat().st_size} bytes)")


@app.command()
def serve(
    repo: RepoArg,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free).")] = 8080,
) -> None:
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
def status(repo: RepoArg, keys: KeysOpt = None, as_json: JsonOpt = False) -> None:
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
def keygen_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the key files.")],
    name: Annotated[str, typer.Option("--name", help="File name prefix, e.g. the role.")],
) -> None:
    """Make a signing key on this machine: NAME.<id>.pem (owner-only) and NAME.<id>.pub.pem."""
    from greenlight.release._signing import keygen

    private, public = _run(lambda: keygen(out_dir, name))
    say(f"private key (keep it here): {private}")
    say(f"public key (give it to the release engineer): {public}")


@app.command()
def keys(
    repo: RepoArg,
    role: Annotated[str, typer.Option("--role", help="Role whose keys change.")],
    generate: Annotated[int, typer.Option("--generate", help="New keys made here.")] = 0,
    public_key: Annotated[list[Path] | None, typer.Option(
        "--public-key", metavar="PEM", help="A signer's public key to add.")] = None,
    remove: Annotated[list[str] | None, typer.Option(
        "--remove", metavar="KEYID", help="Key id (or prefix) to remove.")] = None,
    threshold: Annotated[int | None, typer.Option("--threshold", help="Signatures needed.")
                         ] = None,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or remove keys of a role and set its threshold (k of n)."""
    from greenlight.release._signing import change_keys, load_public_key

    result = _run(lambda: change_keys(_repo(repo, keys_dir), role,
                                      add=[load_public_key(p) for p in public_key or []],
                                      generate=generate, remove=remove, threshold=threshold))
    if as_json:
        _json(result)
        return
    say(f"{role}: {result.threshold} of {len(result.keyids)} keys")
    _awaiting(result.awaiting_signatures)


@app.command("rotate")
def rotate_cmd(
    repo: RepoArg,
    role: Annotated[str, typer.Option("--role", help="Role whose keys are replaced.")],
    threshold: Annotated[int | None, typer.Option(
        "--threshold", help="Signatures needed after the rotation.")] = None,
    public_key: Annotated[list[Path] | None, typer.Option(
        "--public-key", metavar="PEM",
        help="New keys held elsewhere (default: new keys made here).")] = None,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace every key of a role; a new root is signed by the old and the new thresholds."""
    from greenlight.release._signing import load_public_key, rotate

    result = _run(lambda: rotate(_repo(repo, keys_dir), role, threshold,
                                 add=[load_public_key(p) for p in public_key or []] or None))
    if as_json:
        _json(result)
        return
    say(f"rotated {role}: {len(result.retired)} key(s) retired, "
        f"now {result.threshold} of {len(result.keyids)}")
    _awaiting(result.awaiting_signatures)


sign_app = typer.Typer(help="Threshold signing across machines.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(sign_app, name="sign")


@sign_app.command("export")
def sign_export(repo: RepoArg,
                role: Annotated[str, typer.Option("--role", help="Role awaiting signatures.")],
                output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")],
                keys_dir: KeysOpt = None) -> None:
    """Write the version of --role awaiting signatures to a file for other signers."""
    from greenlight.release._signing import export_staged

    _run(lambda: export_staged(_repo(repo, keys_dir), role, output))
    say(f"wrote {output}: sign it with 'release sign add {output.name} --key KEY.pem'")


@sign_app.command("add")
def sign_add(file: Annotated[Path, typer.Argument(help="File from 'release sign export'.")],
             key: Annotated[Path, typer.Option("--key", help="Your private key (PEM).")]) -> None:
    """Sign an exported file with one key (no repository needed)."""
    from greenlight.release._signing import sign_file

    keyid = _run(lambda: sign_file(file, key))
    say(f"signed {file} with key {keyid[:16]}")


@sign_app.command("import")
def sign_import(repo: RepoArg,
                file: Annotated[Path, typer.Argument(help="A signed file from 'sign add'.")],
                keys_dir: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """Merge the signatures in FILE; publish once the role's threshold is met."""
    from greenlight.release._signing import import_signatures

    result = _run(lambda: import_signatures(_repo(repo, keys_dir), file))
    if as_json:
        _json(result)
        return
    say(f"{result.role}: published with {result.signatures} signatures" if result.published
        else f"{result.role}: {result.signatures} signature(s), still waiting: "
             f"{result.missing or 'other roles'}")


@sign_app.command("status")
def sign_status(repo: RepoArg, keys_dir: KeysOpt = None) -> None:
    """Roles awaiting signatures."""
    from greenlight.release._signing import awaiting

    waiting = _run(lambda: awaiting(_repo(repo, keys_dir)))
    for role, missing in waiting.items():
        say(f"{role}: {missing}")
    if not waiting:
        say("nothing awaits signatures")


@app.command("promote")
def promote_cmd(
    repo: RepoArg,
    source: Annotated[str, typer.Option("--from", help="Channel to promote from.")],
    target: Annotated[str, typer.Option("--to", help="Channel to promote to.")],
    version: Annotated[str | None, typer.Option(
        "--version", help="Release to promote (default: what --from carries).")] = None,
    allow_older: Annotated[bool, typer.Option(
        "--allow-older", help="Promote a version not newer than --to carries.")] = False,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point --to at the very artifacts --from carries (same hashes, nothing re-uploaded)."""
    from greenlight.release._lifecycle import promote

    _channel_change(repo, keys_dir, as_json,
                    lambda r: promote(r, source, target, version, allow_older),
                    lambda cf: f"promoted {cf.release} from {source} to {target}")


@app.command("yank")
def yank_cmd(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel", help="Channel that carries it.")],
    version: Annotated[str, typer.Option("--version", help="Release to revoke.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; clients record it.")],
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a release: the channel goes back to its previous good release."""
    from greenlight.release._lifecycle import yank

    _channel_change(repo, keys_dir, as_json, lambda r: yank(r, channel, version, reason),
                    lambda cf: f"yanked {version} on {channel}; it now carries {cf.release}")


@app.command("rollout")
def rollout_cmd(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel", help="Channel whose release rolls out.")],
    percent: Annotated[int | None, typer.Option(
        "--percent", help="Share of installations, 0-100.")] = None,
    halt: Annotated[bool, typer.Option("--halt", help="Stop the rollout where it is.")] = False,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage the channel's release to a share of installations, or halt it."""
    from greenlight.release._lifecycle import rollout

    def describe(cf: "ChannelFile") -> str:
        state = cf.rollout
        return f"{channel} {cf.release}: " + ("everyone" if state is None else
                                              f"{state.percent}% of installations"
                                              f"{' (halted)' if state.halted else ''}")

    _channel_change(repo, keys_dir, as_json, lambda r: rollout(r, channel, percent, halt),
                    describe)


@app.command("refresh")
def refresh_cmd(
    repo: RepoArg,
    check: Annotated[bool, typer.Option(
        "--check", help="Only report; exit 1 when a role expires within --within.")] = False,
    within: Annotated[str, typer.Option("--within", help="Window for --check.")] = "3d",
    keys_dir: KeysOpt = None,
) -> None:
    """Re-sign timestamp and snapshot with fresh expiry (run it from a timer or cron job)."""
    from greenlight.release._bundle import parse_duration
    from greenlight.release._upkeep import expiring, refresh

    if check:
        found = _run(lambda: expiring(_repo(repo, keys_dir), parse_duration(within)))
        for role, when in found.items():
            say(f"{role} expires {when:%Y-%m-%d %H:%M}Z (within {within})")
        if found:
            raise typer.Exit(1)
        say(f"nothing expires within {within}")
        return
    renewed = _run(lambda: refresh(_repo(repo, keys_dir)))
    say(", ".join(f"{role} valid until {until}" for role, until in renewed.items()))


@app.command("verify")
def verify_cmd(repo: RepoArg, keys_dir: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """Verify the whole published tree offline, as a client would."""
    from greenlight.release._upkeep import verify

    result = _run(lambda: verify(_repo(repo, keys_dir)))
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
        app()
    except KeyboardInterrupt:
        print("release: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug: one line, exit 1
        print(f"release: internal error: {type(e).__name__}: {e} (please report it)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
