"""The updaters already out there, against today's pipeline (docs/compatibility.md): an
updater built from an earlier commit of this repository, installed into a virtual environment
of its own as a machine has it, keeps upgrading the releases that use no newer feature, and
refuses, in one line, one it cannot read; nothing it ran is changed by that. Today's
Greenlight, installed over it by the package manager, reads everything it wrote."""

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from greenlight.release import publish

from conftest import builtin_server, free_port

REPO_ROOT = Path(__file__).parent.parent
OLD = "6ebc7a9"
"""The last commit before a release could carry a manifest: the updaters it left on machines
read no field added since."""

pytestmark = pytest.mark.exhaustive


def _old_updater(tmp: Path, commit: str) -> tuple[Path, Path]:
    """The tree at `commit` and the `updater` of a virtual environment it is installed in."""
    known = subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True)
    if known.returncode != 0:
        why = f"commit {commit} is not in this clone's history"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must test the updaters already out there")
        pytest.skip(why)
    tree = tmp / f"tree-{commit}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
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

