"""No traceback, ever: every `updater` command, driven with hostile arguments, files and
configurations (hypothesis), ends in success or a documented exit code with one line."""

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_extract import _variant

from greenlight.release import FileRepository, init_repository
from greenlight.updater import EXIT_CODES
from greenlight.updater.cli import app
from greenlight.updater.product import init_root

DOCUMENTED = set(EXIT_CODES) - {1}  # 1 is "a bug": never acceptable here


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> FileRepository:
    return init_repository(tmp_path_factory.mktemp("fuzz") / "repo")


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
blobs = st.binary(max_size=2048)


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name or "x")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


# tar variants that are not plain files: GNU sparse (PAX 1.0 and old), sizes below zero or
# past any disk, bytes after the end marker (tests/test_extract.py)
variants = st.sampled_from(["sparse", "old-sparse", "negative", "overflow", "tail"]).map(
    lambda kind: _variant(kind))
bundles = st.one_of(blobs, variants, st.lists(st.tuples(st.sampled_from(
    ["bundle.json", "metadata/1.root.json", "metadata/timestamp.json", "targets/x", "../x",
     "a/../../b", "bundle.json/x"]), blobs), max_size=4).map(_tar),
    st.builds(lambda ch: _tar([("bundle.json", json.dumps({
        "format": "greenlight.bundle/1", "channel": ch, "release": "1",
        "created": "2026-01-01T00:00:00+00:00", "expires": "x"}).encode())]),
        st.sampled_from(["beta", "../../x", 1, None, "\u0000", "stable"])))
configs = st.one_of(blobs.map(lambda b: b.decode("utf-8", "replace")), st.sampled_from([
    "", "channel = 3", "[repository]\nurl = 'ftp://x'", "[repository]\nurl = 'http://127.0.0.1:9/'"
    "\n[[check]]\nname='x'\ntype='nope'", "[repository]\nurl='http://127.0.0.1:9/'\n"
    "[[service]]\nname='a'\ncommand=[]",
]))


def _root(base: Path, trusted: FileRepository, kind: str, config: str) -> Path:
    path = base / "root"
    if kind == "missing":
        return path
    if kind == "file":
        path.write_bytes(b"not a folder")
        return path
    init_root(path, "http://127.0.0.1:9/",
                       (trusted.metadata_dir / "1.root.json").read_bytes(), "stable")
    if kind == "bad-config":
        (path / "greenlight.toml").write_text(config)
    elif kind == "bad-state":
        (path / "state" / "channels" / "active.json").write_text(config)
        (path / "state" / "quarantine.json").write_text(config)
        (path / "state" / "journal.json").write_text(config)
    elif kind == "bad-root":
        (path / "state" / "metadata" / "root.json").write_text(config)
    return path


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(["check", "status", "channel", "sideload", "history", "health",
                                "recover", "upgrade", "rollback", "start", "stop",
                                "feedback"]),
       kind=st.sampled_from(["missing", "file", "ok", "bad-config", "bad-state", "bad-root"]),
       config=configs, name=names, bundle=bundles, as_json=st.booleans())
def test_hostile_input_gets_a_documented_exit_and_one_line(
        tmp_path_factory, trusted, command, kind, config, name, bundle, as_json):
    base = tmp_path_factory.mktemp("case")
    root = _root(base, trusted, kind, config)
    args = [command]
    if command == "channel":
        args.append(name or "stable")
    if command == "feedback":  # any text, empty or hostile: queued with it, or one line
        args += ["--dry-run", name] if len(name) % 2 else [name]
    if command == "sideload":
        (base / "b.bundle").write_bytes(bundle)
        args.append(str(base / "b.bundle"))
    args += ["--root", str(root)] + (["--json"] if as_json else [])
    env = {**os.environ, "GREENLIGHT_ROOT": str(root)}
    result = CliRunner().invoke(app, args, env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {type(result.exception).__name__}: {result.exception}")
    # `health` exits 1 when a required check fails or nothing was checked (documented).
    health_verdict = command == "health" and result.exit_code == 1 and (
        "UNHEALTHY" in result.output or "NOTHING CHECKED" in result.output
        or '"healthy": false' in result.output)
    assert result.exit_code in DOCUMENTED or result.exit_code == 0 or health_verdict, (
        args, result.output)
    if result.exit_code not in (0, 10, 20, 21) and not health_verdict:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        if not as_json or result.exit_code == 2 and not result.stdout.strip():
            assert len(errors) == 1 or result.exit_code == 2, (args, result.stderr)
        else:  # the error as greenlight.error/1 on stdout, with the code it exits with
            error = json.loads(result.stdout)
            assert error["schema"] == "greenlight.error/1", (args, result.stdout)
            assert error["exit_code"] == result.exit_code and "\n" not in error["error"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(["status", "verify", "publish", "bundle", "yank", "rollout",
                                "refresh", "promote", "keys"]),
       kind=st.sampled_from(["missing", "file", "garbage-root", "garbage-settings"]),
       name=names, version=names)
def test_the_pipeline_cli_refuses_hostile_input_in_one_line(tmp_path_factory, command, kind,
                                                            name, version):
    from greenlight.release.cli import app as release_app

    base = tmp_path_factory.mktemp("release-case")
    repo = base / "repo"
    if kind == "file":
        repo.write_text("not a repository")
    elif kind == "garbage-root":
        (repo / "metadata").mkdir(parents=True)
        (repo / "metadata" / "root.json").write_text(name or "{")
    elif kind == "garbage-settings":
        repo.mkdir()
        (repo / "repository.json").write_text(name or "[")
    args = {
        "status": ["status", str(repo)], "verify": ["verify", str(repo)],
        "publish": ["publish", str(repo), "--channel", name or "x", "--version", version or "1",
                    "--component", f"{name}={base / 'nope'}"],
        "bundle": ["bundle", str(repo), "--channel", name or "x", "-o", str(base / "b"),
                   "--expires", version or "1d"],
        "yank": ["yank", str(repo), "--channel", name or "x", "--version", version or "1",
                 "--reason", "r"],
        "rollout": ["rollout", str(repo), "--channel", name or "x", "--percent", "50"],
        "refresh": ["refresh", str(repo), "--check", "--within", version or "1d"],
        "promote": ["promote", str(repo), "--from", name or "a", "--to", version or "b"],
        "keys": ["keys", str(repo), "--role", name or "root", "--generate", "1"],
    }[command]
    result = CliRunner().invoke(release_app, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {type(result.exception).__name__}: {result.exception}")
    from greenlight.release._errors import EXIT_BUG, EXIT_CODES

    # A refusal has its documented code; exit 70 is a bug, never a refusal.
    assert result.exit_code in EXIT_CODES and result.exit_code != EXIT_BUG, (args, result.output)
    if result.exit_code not in (0, 2):  # 2 may be click's own usage text
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, \
            (args, result.stderr)
