"""The updaters already out there, against today's pipeline (docs/compatibility.md): an
updater built from an earlier commit of this repository, installed into a virtual environment
of its own as a machine has it, keeps upgrading the releases that use no newer feature, and
refuses, in one line, one it cannot read; nothing it ran is changed by that. Today's
Greenlight, installed over it by the package manager, reads everything it wrote. The first
updater that moves itself, entered by the root's bin/updater, moves itself to today's before
a release that needs it, and the census names it before and after."""

import json
import subprocess
import venv
from pathlib import Path

import pytest
from oldtrees import checked_out

from greenlight.release import publish

from conftest import builtin_server, free_port

REPO_ROOT = Path(__file__).parent.parent
OLD = "6ebc7a9"
"""The last commit before a release could carry a manifest: the updaters it left on machines
read no field added since."""

pytestmark = pytest.mark.exhaustive


def _old_updater(tmp: Path, commit: str) -> tuple[Path, Path]:
    """The tree at `commit` and the `updater` of a virtual environment it is installed in."""
    tree = checked_out(commit, tmp / f"tree-{commit}")
    env_dir = tmp / f"venv-{commit}"
    venv.create(env_dir, with_pip=True)
    done = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(tree)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return tree, env_dir / "bin" / "updater"


def test_an_updater_from_before_manifests_upgrades_plain_releases_and_refuses_the_rest(
        tmp_path, repo, builds):
    tree, updater = _old_updater(tmp_path, OLD)
    root = tmp_path / "root"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(updater), *args, "--root", str(root)], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)

    with builtin_server(repo.path) as server:
        publish(repo, "stable", "1.0", builds("1.0"))
        done = run("init", "--repo", server.url, "--trust", str(repo.metadata_dir /
                                                                  "1.root.json"),
                   "--channel", "stable")
        assert done.returncode == 0, done.stderr
        # The machine's greenlight.toml as that version's own demo wrote it.
        port, dns_port = free_port(), free_port()
        subprocess.run([str(updater.parent / "python"), "-c",
                        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                        "from examples.demo.config import configure; "
                        "configure(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "
                        "soak=0.5)", str(tree), str(root), str(port), str(dns_port)],
                       check=True)
        try:
            for version in ("1.0", "1.1"):
                if version != "1.0":
                    publish(repo, "stable", version, builds(version))
                done = run("upgrade", "--json")
                assert done.returncode == 0, done.stdout + done.stderr
                assert json.loads(done.stdout)["installed"] == version
            publish(repo, "stable", "1.2", builds("1.2", "refuse-ui-token"))
            done = run("upgrade", "--json")  # a plain bad release: caught and rolled back
            assert done.returncode == 20, done.stdout + done.stderr
            assert json.loads(done.stdout)["installed"] == "1.1"

            # A release that carries a manifest: an entry that updater cannot read.
            product = tmp_path / "product.toml"
            from examples.demo.config import manifest_toml

            product.write_text(manifest_toml(soak=0.5))
            publish(repo, "stable", "1.3", builds("1.3"), manifest=product)
            done = run("check")
            assert done.returncode == 4 and "Traceback" not in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "manifest" in done.stderr, done.stderr
            assert run("status").returncode == 0  # and the machine it runs is as it was
            assert '"installed": "1.1"' in run("status", "--json").stdout

            # The way such a machine moves (docs/compatibility.md): its package manager
            # installs today's Greenlight over it, which reads what the old one wrote.
            done = subprocess.run([str(updater.parent / "python"), "-m", "pip", "install",
                                   "--quiet", "--disable-pip-version-check", str(REPO_ROOT)],
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
            done = run("upgrade", "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            assert json.loads(done.stdout)["installed"] == "1.3"
            history = json.loads(run("history", "--json").stdout)["entries"]
            assert [e["event"] for e in history][-3:] == ["upgraded", "rolled-back",
                                                          "upgraded"], history
            quarantined = json.loads(run("quarantine", "--json").stdout)["entries"]
            assert [q["version"] for q in quarantined] == ["1.2"]
        finally:
            run("stop")



FIRST_SELF_UPDATING = "19596f7"
"""The first commit whose updater moves itself (Greenlight 0.3.0): machines that run it take
newer Greenlight releases from greenlight-<channel> by themselves."""


def test_the_first_self_updating_greenlight_moves_itself_before_a_release_that_needs_it(
        tmp_path, repo, builds):
    """That updater, in a virtual environment of its own and entered by the root's bin/updater
    as a version side by side, against today's pipeline and collector: it upgrades a plain
    release; the census names it; a release that needs a newer Greenlight makes it move itself
    to today's (published as 0.4.0) and install the release in the same unattended cycle."""
    import httpx

    from greenlight.updater.store import InstallRoot, managed_version

    from conftest import ADMIN, FLEET, MARKER_PRODUCT, Collector
    from examples.demo.greenlights import greenlight_build, make_managed, publish_greenlight

    _, old = _old_updater(tmp_path, FIRST_SELF_UPDATING)
    path = tmp_path / "root"
    root = InstallRoot(path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(path / "bin" / "updater"), *args, "--root", str(path)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    def census() -> dict:
        answer = httpx.get(collector.url + "v1/census?channel=stable", timeout=10,
                           headers={"Authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 200, answer.text
        return dict(answer.json()["greenlight"])

    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    try:
        with builtin_server(repo.path) as server:
            publish(repo, "stable", "1.0", builds("1.0"))
            done = subprocess.run([str(old), "init", "--repo", server.url, "--trust",
                                   str(repo.metadata_dir / "1.root.json"), "--root", str(path)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            (path / "data").mkdir()
            (path / "data" / "fleet-token").write_text(FLEET + "\n")
            with (path / "greenlight.toml").open("a") as f:
                f.write(MARKER_PRODUCT + f'\n[report]\nurl = "{collector.url}"\n')
            entry = tmp_path / "old-entry"
            entry.write_text(f"#!/bin/sh\nexec {old} \"$@\"\n")
            entry.chmod(0o755)
            make_managed(root, entry, "0.3.0")  # as that version's offline installer leaves it
            done = run("upgrade", "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            assert census() == {"0.3.0": {"exe": 1}}

            publish(repo, "stable", "1.1", builds("1.1"))  # a plain release
            done = run("agent", "--once")
            assert done.returncode == 0 and root.installed_version() == "1.1", done.stdout

            publish_greenlight(repo, "stable", greenlight_build(tmp_path, "0.4.0"), "0.4.0",
                               tmp_path)
            publish(repo, "stable", "1.2", builds("1.2"), requires="0.4.0")
            done = run("agent", "--once")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "1.2 needs Greenlight >= 0.4.0; this machine runs 0.3.0: updating " \
                   "Greenlight first" in done.stdout, done.stdout
            assert managed_version(root) == "0.4.0"
            assert root.installed_version() == "1.2"
            assert census() == {"0.4.0": {"exe": 1}}
    finally:
        collector.stop()
