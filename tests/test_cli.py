"""The command lines as a person or a script uses them: exit codes, JSON, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenlight.updater.transaction import STEPS

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture
def root_args(tmp_path, server, published):
    root = tmp_path / "root"
    done = run("updater", "init", "--root", str(root), "--repo", server.url,
               "--trust", str(published.metadata_dir / "1.root.json"), "--channel", "stable")
    assert done.returncode == 0, done.stderr
    return ["--root", str(root)]


def test_check_exit_codes_and_json(root_args):
    first = run("updater", "check", *root_args, "--json")
    assert first.returncode == 10
    report = json.loads(first.stdout)
    assert report["schema"] == "greenlight.check/1"
    assert (report["installed"], report["available"], report["update_available"]) == (
        None, "1.0", True)

    up = run("updater", "upgrade", *root_args, "--json")
    assert up.returncode == 0, up.stderr
    upgraded = json.loads(up.stdout)
    assert upgraded["schema"] == "greenlight.upgrade/1"
    assert upgraded["outcome"] == "upgraded"
    assert upgraded["bytes_fetched"] == upgraded["bytes_total"]
    assert list(upgraded["timings"]) == [step.name for step in STEPS]

    assert run("updater", "check", *root_args).returncode == 0
    assert json.loads(run("updater", "upgrade", *root_args, "--json").stdout)["outcome"] == (
        "up-to-date")


def test_channel_switch_and_status(root_args):
    assert run("updater", "channel", *root_args).stdout.startswith("stable")
    switched = run("updater", "channel", *root_args, "beta")
    assert switched.returncode == 0 and "beta" in switched.stdout
    missing = run("updater", "channel", *root_args, "nightly")
    assert missing.returncode == 9
    assert missing.stderr.strip() == (
        "updater: error: channel 'nightly' is not published in this repository")
    status = json.loads(run("updater", "status", *root_args, "--json").stdout)
    assert status["schema"] == "greenlight.status/2"
    assert status["channel"] == "beta" and "by the user" in status["channel_reason"]


def test_root_from_environment(root_args):
    env = {"GREENLIGHT_ROOT": root_args[1]}
    assert run("updater", "check", env=env).returncode == 10


def test_errors_are_one_line_with_documented_codes(tmp_path, server, published):
    missing_root = run("updater", "check", "--root", str(tmp_path / "nowhere"))
    assert missing_root.returncode == 3
    assert missing_root.stderr.count("\n") == 1 and "run 'updater init'" in missing_root.stderr

    as_json = run("updater", "status", "--root", str(tmp_path / "nowhere"), "--json")
    error = json.loads(as_json.stdout)
    assert (error["schema"], error["kind"], error["exit_code"]) == (
        "greenlight.error/1", "ConfigError", 3)

    bad_trust = run("updater", "init", "--root", str(tmp_path / "r"), "--repo", server.url,
                    "--trust", str(tmp_path / "no-root.json"))
    assert bad_trust.returncode == 3 and "cannot read" in bad_trust.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{}")
    bad_root = run("updater", "init", "--root", str(tmp_path / "r2"), "--repo", server.url,
                   "--trust", str(garbage))
    assert bad_root.returncode == 4 and "not a valid trusted root" in bad_root.stderr


def test_an_air_gapped_root_is_made_with_offline_and_sideloads(tmp_path, published):
    """`updater init --offline`: no repository, a one-line pointer to sideload where a check
    would go online, and the bundle path works as on any root."""
    from greenlight.release import build_bundle

    trust = str(published.metadata_dir / "1.root.json")
    root = tmp_path / "air-gapped"
    neither = run("updater", "init", "--root", str(root), "--trust", trust)
    both = run("updater", "init", "--root", str(root), "--trust", trust, "--offline", "--repo",
               "http://127.0.0.1:9/")
    for refused in (neither, both):
        assert refused.returncode == 2 and "--offline for an air-gapped root" in refused.stderr
    assert not (root / "greenlight.toml").exists()
    made = run("updater", "init", "--root", str(root), "--trust", trust, "--offline")
    assert made.returncode == 0, made.stderr
    assert "air-gapped: update it with 'updater sideload BUNDLE'" in made.stdout
    text = (root / "greenlight.toml").read_text()
    assert "\n[repository]" not in text and "# [repository]" in text
    assert "# [agent]" in text and "# [report]" in text
    # Every commented table of the file loads once uncommented (the agent's and the report's).
    import re
    import tomllib

    from greenlight.updater.product import Config

    tail = text[text.index("# [agent]"):].splitlines()
    tables = "\n".join(line[2:] for line in tail
                       if re.match(r"# (\[\w+\]|\w+ = )", line))
    loaded = Config.model_validate({**tomllib.loads(text), **tomllib.loads(tables)})
    assert loaded.report is not None and loaded.agent.window == ["02:00-05:00"]
    check = run("updater", "check", "--root", str(root))
    assert check.returncode == 3 and len(check.stderr.strip().splitlines()) == 1
    assert "this root is air-gapped and is updated by 'updater sideload BUNDLE'" in check.stderr
    status = json.loads(run("updater", "status", "--root", str(root), "--json").stdout)
    assert status["repository"] is None
    bundle = tmp_path / "stable.bundle"
    build_bundle(published, "stable", bundle)
    done = run("updater", "sideload", str(bundle), "--root", str(root), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["installed"] == "1.0"


def test_release_cli_publish_and_refusals(tmp_path, builds):
    repo = tmp_path / "repo"
    assert run("release", "init", str(repo)).returncode == 0
    again = run("release", "init", str(repo))
    assert again.returncode == 5 and "already there" in again.stderr
    parts = [f"--component=core={builds('2.0')['core']}"]
    done = run("release", "publish", str(repo), "--channel", "stable", "--version", "2.0", *parts)
    assert done.returncode == 0 and "layout: core: archive root -> core/" in done.stdout
    sloppy = run("release", "publish", str(repo), "--channel", "stable", "--version", "v2.1",
                 *parts)
    assert sloppy.returncode == 2
    assert sloppy.stderr.strip() == ("release: error: version 'v2.1' is not canonical: "
                                     "write it as '2.1'")
    older = run("release", "publish", str(repo), "--channel", "stable", "--version", "1.0", *parts)
    assert older.returncode == 5 and "not newer" in older.stderr
    bad = run("release", "publish", str(repo), "--channel", "stable", "--version", "3",
              "--component", "core")
    assert bad.returncode == 2 and "expected NAME=PATH" in bad.stderr
    status = json.loads(run("release", "status", str(repo), "--json").stdout)
    assert status["channels"][0]["release"] == "2.0"


def test_release_publish_reports_a_stripped_top_folder(tmp_path):
    import tarfile

    source = tmp_path / "core-1.2.3"
    source.mkdir()
    (source / "core.py").write_text("print()\n")
    archive = tmp_path / "core-1.2.3.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="core-1.2.3")
    repo = tmp_path / "repo"
    assert run("release", "init", str(repo)).returncode == 0
    done = run("release", "publish", str(repo), "--channel", "stable", "--version", "1.2.3",
               f"--component=core={archive}")
    assert done.returncode == 0, done.stderr
    assert "layout: core: core-1.2.3/* -> core/ (top folder left out)" in done.stdout


def _uncommented(text: str) -> str:
    """greenlight.toml with every commented example of the product part taken in."""
    import re

    out, product = [], False
    for line in text.splitlines():
        product = product or line.startswith("# ---- The product")
        body = line[2:]
        if line.startswith("# ") and re.match(r"\[|[a-z_]+ = ", body) and (
                product or body.startswith("backend")):
            line = body
        out.append(line)
    return "\n".join(out) + "\n"


def test_init_writes_a_complete_commented_template(root_args):
    from greenlight.updater.product import Config

    config = Path(root_args[1]) / "greenlight.toml"
    text = config.read_text()
    first_table = text.index("\n[")
    for key in ("channel = ", "keep_releases = ", "# backend = "):
        assert text.index(key) < first_table, key  # top-level keys above every table
    loaded = Config.load(config)
    assert (loaded.channel, loaded.service, loaded.check) == ("stable", [], [])

    # Every example, taken in, is a valid configuration with every check type.
    config.write_text(_uncommented(text))
    full = Config.load(config)
    assert {c.type for c in full.check} == {"http", "websocket", "tcp", "dns", "version",
                                             "command", "process"}
    assert [s.name for s in full.service] == ["core", "ui"] and full.backend == "process"

    # Appending a product's tables to the file as written is what docs/configuration.md says to do.
    config.write_text(text + '\n[[service]]\nname = "core"\ncommand = ["true"]\n')
    assert [s.name for s in Config.load(config).service] == ["core"]


def test_health_never_calls_nothing_healthy_and_its_json_has_a_schema(root_args):
    import jsonschema

    from greenlight.updater.output import HealthReport, HistoryReport

    nothing = run("updater", "health", *root_args)
    assert nothing.returncode == 1 and "NOTHING CHECKED" in nothing.stdout
    report = json.loads(run("updater", "health", *root_args, "--json").stdout)
    assert (report["healthy"], report["checked"], report["results"]) == (False, 0, [])
    jsonschema.validate(report, HealthReport.model_json_schema(by_alias=True))

    config = Path(root_args[1]) / "greenlight.toml"
    with config.open("a") as f:
        f.write('\n[[check]]\nname = "flag"\ntype = "command"\n'
                f'command = ["test", "-e", "{root_args[1]}/flag"]\n')
    failing = run("updater", "health", *root_args, "--json")
    report = json.loads(failing.stdout)
    assert failing.returncode == 1 and report["healthy"] is False and report["checked"] == 1
    assert report["results"][0]["evidence"]["returncode"] == 1
    jsonschema.validate(report, HealthReport.model_json_schema(by_alias=True))
    (Path(root_args[1]) / "flag").write_text("")
    passing = run("updater", "health", *root_args)
    assert passing.returncode == 0 and ": healthy" in passing.stdout

    assert run("updater", "upgrade", *root_args).returncode == 0
    history = json.loads(run("updater", "history", *root_args, "--json").stdout)
    jsonschema.validate(history, HistoryReport.model_json_schema(by_alias=True))
    assert history["schema"] == "greenlight.history/1"
    assert [e["event"] for e in history["entries"]] == ["upgraded"]


def test_every_program_says_greenlights_version_and_the_changelog_has_it():
    """`--version` on `updater`, `release` and the offline installer: one line, the same
    semantic version, which CHANGELOG.md describes."""
    import re

    from greenlight.channels import VERSION

    assert re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", VERSION), VERSION
    bin_ = Path(sys.executable).parent
    for argv, name in (([str(bin_ / "updater")], "updater"),
                       ([str(bin_ / "release")], "release"),
                       ([sys.executable, "-m", "greenlight.updater.installer"],
                        "greenlight-installer")):
        done = subprocess.run([*argv, "--version"], capture_output=True, text=True)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"{name} {VERSION}\n", ""), done
    changelog = (Path(__file__).parent.parent / "CHANGELOG.md").read_text()
    assert f"\n## [{VERSION}]" in changelog
