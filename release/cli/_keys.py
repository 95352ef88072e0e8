"""`release keygen`, `keys`, `rotate` and `sign`: keys, thresholds and signing across
machines."""

from pathlib import Path
from typing import TYPE_CHECKING

import click

from greenlight.release.cli._common import (
    app,
    json_option,
    keys_option,
    open_repo,
    print_awaiting,
    print_json,
    repo_argument,
    run_command,
    say,
)

if TYPE_CHECKING:
    pass

__all__: list[str] = []

@app.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the key files.")
@click.option("--name", required=True, help="File name prefix, e.g. the role.")
def keygen_cmd(out_dir: Path, name: str) -> None:
    """Make a signing key on this machine: NAME.<id>.pem (owner-only) and NAME.<id>.pub.pem."""
    from greenlight.release.repository._signing import keygen

    private, public = run_command(lambda: keygen(out_dir, name))
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
    from greenlight.release.repository._signing import change_keys, load_public_key

    result = run_command(lambda: change_keys(open_repo(repo, keys), role,
                                      add=[load_public_key(p) for p in public_key],
                                      generate=generate, remove=list(remove),
                                      threshold=threshold))
    if as_json:
        print_json(result)
        return
    say(f"{role}: {result.threshold} of {len(result.keyids)} keys"
        + (f"; removed {', '.join(k[:12] for k in result.retired)} (a private key kept here "
           "moves to retired/ in the keys folder)" if result.retired else ""))
    print_awaiting(result.awaiting_signatures)


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
    from greenlight.release.repository._signing import load_public_key, rotate

    result = run_command(lambda: rotate(open_repo(repo, keys), role, threshold,
                                 add=[load_public_key(p) for p in public_key] or None))
    if as_json:
        print_json(result)
        return
    say(f"rotated {role}: {len(result.retired)} key(s) retired, "
        f"now {result.threshold} of {len(result.keyids)}")
    print_awaiting(result.awaiting_signatures)


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
    from greenlight.release.repository._signing import export_staged

    run_command(lambda: export_staged(open_repo(repo, keys), role, output))
    say(f"wrote {output}: sign it with 'release sign add {output.name} --key KEY.pem'")


@sign_app.command("add")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--key", required=True, type=click.Path(path_type=Path),
              help="Your private key (PEM).")
def sign_add(file: Path, key: Path) -> None:
    """Sign FILE, exported by 'release sign export', with one key (no repository needed)."""
    from greenlight.release.repository._signing import sign_file

    keyid = run_command(lambda: sign_file(file, key))
    say(f"signed {file} with key {keyid[:16]}")


@sign_app.command("import")
@repo_argument
@click.argument("file", type=click.Path(path_type=Path))
@keys_option
@json_option
def sign_import(repo: Path, file: Path, keys: Path | None, as_json: bool) -> None:
    """Merge the signatures in FILE (signed with 'sign add'); publish once the role's
    threshold is met."""
    from greenlight.release.repository._signing import import_signatures

    result = run_command(lambda: import_signatures(open_repo(repo, keys), file))
    if as_json:
        print_json(result)
        return
    say(f"{result.role}: published with {result.signatures} signatures" if result.published
        else f"{result.role}: {result.signatures} signature(s), still waiting: "
             f"{result.missing or 'other roles'}")


@sign_app.command("status")
@repo_argument
@keys_option
def sign_status(repo: Path, keys: Path | None) -> None:
    """Roles awaiting signatures."""
    from greenlight.release.repository._signing import awaiting

    waiting = run_command(lambda: awaiting(open_repo(repo, keys)))
    for role, missing in waiting.items():
        say(f"{role}: {missing}")
    if not waiting:
        say("nothing awaits signatures")
