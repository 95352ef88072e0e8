"""`release`: the pipeline's command line. Parses, calls plain functions, prints."""

import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from channels import ChannelFile
from release._bundle import build_bundle, parse_duration
from release._errors import ReleaseError
from release._installer import build_installer
from release._keys import KeyStore, LooseKeyPermissions
from release._lifecycle import promote, rollout, yank
from release._publish import publish, repository_status
from release._repository import FileRepository, init_repository
from release._serve import RepositoryServer
from release._signing import (
    change_keys,
    export_staged,
    import_signatures,
    keygen,
    load_public_key,
    rotate,
    sign_file,
)
from release._upkeep import expiring, refresh, verify

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
    rollout_percent: Annotated[int | None, typer.Option(
        "--rollout", help="Start a staged rollout at this percent of installations.")] = None,
    no_deltas: Annotated[bool, typer.Option(
        "--no-deltas", help="Do not build patches from recent releases.")] = False,
    keys: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a release's component archives and point CHANNEL at it, signed; with patches
    from the channel's (and its fallback's) recent releases where they are small."""
    try:
        r = _repo(repo, keys)
        channel_file = publish(
            r, channel, version, _parse_components(component), fallback, allow_older,
            rollout_percent, deltas=not no_deltas,
        )
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    _show(json.loads(channel_file.model_dump_json()) | {"awaiting_signatures": r.pending()},
          as_json, f"published {channel} {version} ({', '.join(channel_file.components)})")


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
    channels = Table("channel", "release", "rollout", "fallback", "published", "revoked",
                     "promoted from", box=None)
    for c in report.channels:
        channels.add_row(c.channel, c.release, c.rollout, c.fallback or "-",
                         f"{c.published_at:%Y-%m-%d %H:%M}Z", ", ".join(c.revoked) or "-",
                         c.promoted_from or "-")
    roles = Table("role", "version", "threshold", "expires", box=None)
    now = time.time()
    for r in report.roles:
        days = (r.expires.timestamp() - now) / 86400
        roles.add_row(r.role, str(r.version), f"{r.threshold} of {r.keys}",
                      f"{r.expires:%Y-%m-%d %H:%M}Z (in {days:.0f} days)")
    out.print(channels)
    out.print()
    out.print(roles)
    if report.awaiting_signatures:
        out.print(f"\nawaiting signatures: {', '.join(report.awaiting_signatures)}")


def _show(result: dict[str, object], as_json: bool, line: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        out.print(line)
        awaiting = result.get("awaiting_signatures")
        if awaiting:
            out.print(f"awaiting signatures: {', '.join(awaiting)} (nothing published yet): "  # type: ignore[arg-type]
                      "release sign export / add / import")


@app.command("keygen")
def keygen_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the key files.")],
    name: Annotated[str, typer.Option("--name", help="File name prefix, e.g. the role.")],
) -> None:
    """Make a signing key on this machine: NAME.<id>.pem (owner-only) and NAME.<id>.pub.pem."""
    private, public = keygen(out_dir, name)
    out.print(f"private key (keep it here): {private}")
    out.print(f"public key (give it to the release engineer): {public}")


@app.command()
def keys(
    repo: RepoArg,
    role: Annotated[str, typer.Option("--role", help="Role whose keys change.")],
    generate: Annotated[int, typer.Option("--generate", help="New keys made here.")] = 0,
    public_key: Annotated[list[Path] | None, typer.Option(
        "--public-key", help="A signer's public key (PEM) to add.")] = None,
    remove: Annotated[list[str] | None, typer.Option(
        "--remove", help="Key id (or prefix) to remove.")] = None,
    threshold: Annotated[int | None, typer.Option("--threshold", help="Signatures needed.")
                         ] = None,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or remove keys of a role and set its threshold (k of n)."""
    try:
        result = change_keys(_repo(repo, keys_dir), role,
                             add=[load_public_key(p) for p in public_key or []],
                             generate=generate, remove=remove, threshold=threshold)
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    _show(result, as_json, f"{role}: {result['threshold']} of {len(result['keyids'])} keys")  # type: ignore[arg-type]


@app.command("rotate")
def rotate_cmd(
    repo: RepoArg,
    role: Annotated[str, typer.Option("--role", help="Role whose keys are replaced.")],
    threshold: Annotated[int | None, typer.Option("--threshold")] = None,
    public_key: Annotated[list[Path] | None, typer.Option(
        "--public-key", help="New keys held elsewhere (default: new keys made here).")] = None,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace every key of a role; a new root is signed by the old and the new thresholds."""
    try:
        result = rotate(_repo(repo, keys_dir), role, threshold,
                        add=[load_public_key(p) for p in public_key or []] or None)
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    _show(result, as_json, f"rotated {role}: {len(result['retired'])} key(s) retired, "  # type: ignore[arg-type]
          f"now {result['threshold']} of {len(result['keyids'])}")  # type: ignore[arg-type]


sign_app = typer.Typer(help="Threshold signing across machines.", no_args_is_help=True)
app.add_typer(sign_app, name="sign")


@sign_app.command("export")
def sign_export(repo: RepoArg, role: Annotated[str, typer.Option("--role")],
                output: Annotated[Path, typer.Option("-o", "--output")],
                keys_dir: KeysOpt = None) -> None:
    """Write the version of ROLE awaiting signatures to a file for other signers."""
    try:
        export_staged(_repo(repo, keys_dir), role, output)
    except ReleaseError as e:
        raise _fail(e) from None
    out.print(f"wrote {output}: sign it with 'release sign add {output.name} --key KEY.pem'")


@sign_app.command("add")
def sign_add(file: Annotated[Path, typer.Argument(help="File from 'release sign export'.")],
             key: Annotated[Path, typer.Option("--key", help="Your private key (PEM).")]) -> None:
    """Sign an exported file with one key (no repository needed)."""
    try:
        keyid = sign_file(file, key)
    except ReleaseError as e:
        raise _fail(e) from None
    out.print(f"signed {file} with key {keyid[:16]}")


@sign_app.command("import")
def sign_import(repo: RepoArg, file: Annotated[Path, typer.Argument()],
                keys_dir: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """Merge the signatures in FILE; publish once the role's threshold is met."""
    try:
        result = import_signatures(_repo(repo, keys_dir), file)
    except ReleaseError as e:
        raise _fail(e) from None
    line = (f"{result['role']}: published with {result['signatures']} signatures"
            if result["published"] else
            f"{result['role']}: {result['signatures']} signature(s), still waiting: "
            f"{result.get('missing', 'other roles')}")
    _show(result, as_json, line)


@sign_app.command("status")
def sign_status(repo: RepoArg, keys_dir: KeysOpt = None) -> None:
    """Roles awaiting signatures."""
    r = _repo(repo, keys_dir)
    for role in r.pending() or []:
        from tuf.api.metadata import Metadata

        md = Metadata.from_bytes(r.staged_path(role).read_bytes())
        out.print(f"{role} v{md.signed.version}: {r.missing_signatures(role, md)}")
    if not r.pending():
        out.print("nothing awaits signatures")


@app.command("promote")
def promote_cmd(
    repo: RepoArg,
    source: Annotated[str, typer.Option("--from", help="Channel to promote from.")],
    target: Annotated[str, typer.Option("--to", help="Channel to promote to.")],
    version: Annotated[str | None, typer.Option("--version")] = None,
    allow_older: Annotated[bool, typer.Option("--allow-older")] = False,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point --to at the very artifacts --from carries (same hashes, nothing re-uploaded)."""
    _channel_change(repo, keys_dir, as_json,
                    lambda r: promote(r, source, target, version, allow_older),
                    lambda cf: f"promoted {cf.release} from {source} to {target}")


def _channel_change(repo: Path, keys_dir: Path | None, as_json: bool,
                    change: Callable[[FileRepository], ChannelFile],
                    describe: Callable[[ChannelFile], str]) -> None:
    """Run a change that writes a channel file; show it, and what awaits signatures."""
    try:
        r = _repo(repo, keys_dir)
        channel_file = change(r)
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    _show(json.loads(channel_file.model_dump_json()) | {"awaiting_signatures": r.pending()},
          as_json, describe(channel_file))


@app.command("yank")
def yank_cmd(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel")],
    version: Annotated[str, typer.Option("--version")],
    reason: Annotated[str, typer.Option("--reason", help="Why; clients record it.")],
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a release: the channel goes back to its previous good release."""
    _channel_change(repo, keys_dir, as_json, lambda r: yank(r, channel, version, reason),
                    lambda cf: f"yanked {version} on {channel}; it now carries {cf.release}")


@app.command("rollout")
def rollout_cmd(
    repo: RepoArg,
    channel: Annotated[str, typer.Option("--channel")],
    percent: Annotated[int | None, typer.Option("--percent", help="0-100")] = None,
    halt: Annotated[bool, typer.Option("--halt", help="Stop the rollout where it is.")] = False,
    keys_dir: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage the channel's release to a share of installations, or halt it."""

    def describe(cf: ChannelFile) -> str:
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
    try:
        r = _repo(repo, keys_dir)
        if check:
            found = expiring(r, parse_duration(within))
            for role, when in found.items():
                out.print(f"{role} expires {when:%Y-%m-%d %H:%M}Z (within {within})")
            if found:
                raise typer.Exit(1)
            out.print(f"nothing expires within {within}")
            return
        renewed = refresh(r)
    except (ReleaseError, ValueError) as e:
        raise _fail(e) from None
    out.print(", ".join(f"{role} valid until {until}" for role, until in renewed.items()))


@app.command("verify")
def verify_cmd(repo: RepoArg, keys_dir: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """Verify the whole published tree offline, as a client would."""
    try:
        result = verify(_repo(repo, keys_dir))
    except ReleaseError as e:
        raise _fail(e) from None
    _show(result, as_json, f"ok: root v{result['root_version']}, channels "
          + ", ".join(f"{c} {v}" for c, v in result["channels"].items())  # type: ignore[attr-defined]
          + f", {result['artifacts_verified']} artifact(s) verified")


def main() -> None:
    warnings.simplefilter("always", LooseKeyPermissions)
    warnings.showwarning = lambda message, *args, **kw: err.print(  # type: ignore[assignment]
        f"release: warning: {message}", soft_wrap=True)
    app()


if __name__ == "__main__":
    sys.exit(main())
