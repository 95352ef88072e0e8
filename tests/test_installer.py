"""The offline installer, built for real with PyInstaller and run as an executable."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from greenlight.release import build_bundle, build_installer, init_repository, publish
from greenlight.updater.product import ProcessBackend, config_of
from greenlight.updater.store import InstallRoot, active_channel, set_active_channel

from conftest import free_port
from examples.demo.config import manifest_toml, product_toml

pytestmark = pytest.mark.slow
UPDATER = str(Path(sys.executable).parent / "updater")


@pytest.fixture(scope="module")
def kit(tmp_path_factory, builds):
    """stable 2.0 as a bundle; installers of 2.1 (good) and 2.2 (refuses the UI's token)."""
    tmp = tmp_path_factory.mktemp("installer")
    repo = init_repository(tmp / "repo")
    publish(repo, "stable", "2.0", builds("2.0"))
    bundle_20 = tmp / "stable-2.0.bundle"
    build_bundle(repo, "stable", bundle_20)
    product = tmp / "product.toml"
    ports = (free_port(), free_port())
    product.write_text(product_toml(*ports, grace=15.0, soak=1.0))
    publish(repo, "stable", "2.1", builds("2.1"))
    good = build_installer(repo, "stable", tmp / "dist", product_config=product,
                           work_dir=tmp / "work", repo_url="https://updates.example.test/")
    publish(repo, "stable", "2.2", builds("2.2", "refuse-ui-token"))
    broken = build_installer(repo, "stable", tmp / "dist", product_config=product,
                             work_dir=tmp / "work")
    return {"repo": repo, "bundle_20": bundle_20, "good": good, "broken": broken,
            "product": product}


@pytest.fixture
def roots(tmp_path):
    made: list[Path] = []
    yield made
    for path in made:
        if (path / "greenlight.toml").exists():
            subprocess.run([UPDATER, "stop", "--root", str(path)], capture_output=True)
        backend = ProcessBackend(InstallRoot(path))
        for name in ("ui", "core"):
            pid = backend.pid(name)
            if pid:
                os.killpg(pid, signal.SIGKILL)


def run(exe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)


def running(root: Path) -> dict[str, str | None]:
    backend = ProcessBackend(InstallRoot(root))
    return {n: json.loads((backend.run_dir / f"{n}.json").read_text())["release"]
            if backend.is_running(n) else None for n in ("core", "ui")}


def test_help_and_size(kit):
    done = run(kit["good"], "--help")
    assert done.returncode == 0 and "--root" in done.stdout and "exit codes" in done.stdout
    assert kit["good"].stat().st_size > 5_000_000  # the interpreter and libraries are inside


def test_fresh_install_from_the_executable(kit, tmp_path, roots):
    root = tmp_path / "fresh"
    roots.append(root)
    done = run(kit["good"], "--root", str(root), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["outcome"], report["installed"]) == ("upgraded", "2.1")
    assert report["source"] == "bundle bundle.tar"
    assert running(root) == {"core": "2.1", "ui": "2.1"}
    health = subprocess.run([UPDATER, "health", "--root", str(root)], capture_output=True)
    assert health.returncode == 0


def test_failed_fresh_install_leaves_nothing(kit, tmp_path, roots):
    root = tmp_path / "fresh-broken"
    roots.append(root)
    done = run(kit["broken"], "--root", str(root), "--offline")
    assert done.returncode == 20, done.stdout + done.stderr
    assert "not installed" in done.stdout and "denying api access" in done.stdout
    assert not root.exists()


def test_a_fresh_install_needs_a_repository_or_offline_and_says_which(kit, tmp_path, roots):
    """The repository a fresh root updates from is the installer's built-in one, --repo, or
    none with --offline (air-gapped); an installer with none built in asks, and installs
    nothing until asked right."""
    assert "https://updates.example.test/ (built in" in run(kit["good"], "--help").stdout
    assert "none is built in" in run(kit["broken"], "--help").stdout
    root = tmp_path / "no-repository"
    done = run(kit["broken"], "--root", str(root))
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.strip() == (
        "installer: error: this installer has no repository built in: pass --repo URL (where "
        "this machine gets later updates), or --offline for an air-gapped machine that only "
        "sideloads")
    assert not root.exists()

    online = tmp_path / "online"
    roots.append(online)
    done = run(kit["good"], "--root", str(online))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "later updates: online from https://updates.example.test/" in done.stdout
    # The same product on the same ports: the first copy must stop, or the second refuses
    # to take it for its own core.
    assert subprocess.run([UPDATER, "stop", "--root", str(online)]).returncode == 0

    offline = tmp_path / "air-gapped"
    roots.append(offline)
    done = run(kit["good"], "--root", str(offline), "--offline")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "later updates: air-gapped, by 'updater sideload BUNDLE'" in done.stdout
    assert "[repository]" not in (offline / "greenlight.toml").read_text().replace(
        "# [repository]", "")
    check = subprocess.run([UPDATER, "check", "--root", str(offline)], capture_output=True,
                           text=True)
    assert check.returncode == 3 and "this root is air-gapped" in check.stderr, check.stderr


def _installed_20(tmp_path: Path, kit) -> Path:
    root = tmp_path / "existing"
    subprocess.run([UPDATER, "init", "--root", str(root), "--repo", "http://127.0.0.1:9",
                    "--trust", str(kit["repo"].metadata_dir / "1.root.json")], check=True,
                   capture_output=True)
    with (root / "greenlight.toml").open("a") as f:
        f.write(kit["product"].read_text())
    done = subprocess.run([UPDATER, "sideload", str(kit["bundle_20"]), "--root", str(root)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_upgrade_of_an_existing_root(kit, tmp_path, roots):
    root = _installed_20(tmp_path, kit)
    roots.append(root)
    done = run(kit["good"], "--root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed 2.1 (stable)" in done.stdout and "replacing 2.0" in done.stdout
    assert running(root) == {"core": "2.1", "ui": "2.1"}


def test_upgrade_that_fails_its_checks_rolls_back(kit, tmp_path, roots):
    root = _installed_20(tmp_path, kit)
    roots.append(root)
    done = run(kit["broken"], "--root", str(root), "--json")
    assert done.returncode == 20, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "rolled-back" and report["installed"] == "2.0"
    assert any(c["name"] == "ui-session" for c in report["incident"]["failed_checks"])
    assert running(root) == {"core": "2.0", "ui": "2.0"}


def test_not_an_installation_root_is_refused(kit, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("mine")
    done = run(kit["good"], "--root", str(busy))
    assert done.returncode == 3 and "not empty and not an installation root" in done.stderr
    assert (busy / "something").read_text() == "mine"


def test_a_channel_mismatch_names_a_flag_the_installer_has(kit, tmp_path, roots):
    """The installation follows beta, the installer carries stable: exit 13, and the flag
    the message names is one the installer takes."""
    root = _installed_20(tmp_path, kit)
    roots.append(root)
    set_active_channel(InstallRoot(root), "beta", "followed by hand")
    done = run(kit["good"], "--root", str(root))
    assert done.returncode == 13, done.stdout + done.stderr
    assert "--switch-channel" in done.stderr and "Traceback" not in done.stderr
    done = run(kit["good"], "--root", str(root), "--switch-channel")
    assert done.returncode == 0, done.stdout + done.stderr
    assert active_channel(InstallRoot(root)).channel == "stable"
    assert running(root) == {"core": "2.1", "ui": "2.1"}


def test_the_help_lists_the_updaters_exit_codes(kit):
    from greenlight.updater._errors import EXIT_CODES

    done = run(kit["good"], "--help")
    for code in (2, 3, 4, 6, 7, 8, 11, 13, 20, 21):
        assert f"  {code:>3}  {EXIT_CODES[code][:20]}" in done.stdout


def test_an_init_root_gets_the_products_services_and_checks(kit, tmp_path, roots):
    """A root made by `updater init` has no services or checks: the installer writes its own,
    starts them, and the root is healthy with every check actually run."""
    root = tmp_path / "from-init"
    roots.append(root)
    subprocess.run([UPDATER, "init", "--root", str(root), "--repo", "http://127.0.0.1:9",
                    "--trust", str(kit["repo"].metadata_dir / "1.root.json")], check=True,
                   capture_output=True)
    done = run(kit["good"], "--root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert running(root) == {"core": "2.1", "ui": "2.1"}
    config = config_of(InstallRoot(root))
    assert [s.name for s in config.service] == ["core", "ui"] and len(config.check) >= 4
    assert config.repository.url == "http://127.0.0.1:9/"  # the root's own keys are kept
    health = subprocess.run([UPDATER, "health", "--root", str(root), "--json"],
                            capture_output=True, text=True)
    report = json.loads(health.stdout)
    assert health.returncode == 0 and report["healthy"] is True
    assert {r["name"] for r in report["results"]} >= {"ui-session", "core-dns", "core-running"}


def test_a_root_whose_checks_were_changed_by_hand_is_refused_unless_kept(kit, tmp_path, roots):
    root = _installed_20(tmp_path, kit)
    roots.append(root)
    config = root / "greenlight.toml"
    mine = config.read_text().replace("soak = 1.0", "soak = 0.5")
    config.write_text(mine)
    done = run(kit["good"], "--root", str(root))
    assert done.returncode == 3 and "--keep-config" in done.stderr, done.stderr
    assert config.read_text() == mine and running(root) == {"core": "2.0", "ui": "2.0"}
    done = run(kit["good"], "--root", str(root), "--keep-config")
    assert done.returncode == 0, done.stdout + done.stderr
    assert config.read_text() == mine and running(root) == {"core": "2.1", "ui": "2.1"}


def test_a_fresh_install_uses_provisioned_secrets_and_keeps_them(kit, tmp_path, roots):
    """A folder holding only data/ is a fresh install: the secrets in it are the ones used,
    and a failed install removes everything but them."""
    for installer, code in (("broken", 20), ("good", 0)):  # broken has no repository built in
        root = tmp_path / f"provisioned-{installer}"
        roots.append(root)
        (root / "data").mkdir(parents=True, mode=0o700)
        token = root / "data" / "ui-token"
        token.write_text("f" * 32 + "\n")
        token.chmod(0o600)
        done = run(kit[installer], "--root", str(root), "--repo", "http://127.0.0.1:9/")
        assert done.returncode == code, done.stdout + done.stderr
        assert token.read_text() == "f" * 32 + "\n"
        if code:
            assert sorted(p.name for p in root.iterdir()) == ["data"]
            assert sorted(p.name for p in (root / "data").iterdir()) == ["ui-token"]
        else:
            assert running(root) == {"core": "2.1", "ui": "2.1"}
            # The UI's session call succeeded with the provisioned token, so it was used.
            health = json.loads(subprocess.run([UPDATER, "health", "--root", str(root),
                                                "--json"], capture_output=True,
                                               text=True).stdout)
            assert {r["name"]: r["ok"] for r in health["results"]}["ui-session"] is True


def test_the_installer_leaves_a_working_updater(kit, tmp_path, roots):
    root = tmp_path / "with-updater"
    roots.append(root)
    done = run(kit["good"], "--root", str(root))
    assert done.returncode == 0 and f"{root}/bin/updater" in done.stdout
    updater = root / "bin" / "updater"
    assert updater.stat().st_size == kit["good"].stat().st_size  # this executable itself
    # It finds its root from where it sits, and is the whole updater.
    env = {k: v for k, v in os.environ.items() if k != "GREENLIGHT_ROOT"}
    status = subprocess.run([str(updater), "status", "--json"], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["installed"] == "2.1" and report["root"] == str(root)
    health = subprocess.run([str(updater), "health"], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert health.returncode == 0 and "2.1: healthy" in health.stdout, health.stderr
    # The 2.0 bundle was signed before the installer's: the same verification refuses it.
    done = subprocess.run([str(updater), "sideload", str(kit["bundle_20"])],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 4 and "older metadata than already trusted" in done.stderr
    codes = subprocess.run([str(updater), "exit-codes"], capture_output=True, text=True)
    assert codes.returncode == 0 and " 15  " in codes.stdout


def test_the_product_config_is_checked_when_the_installer_is_built(kit, tmp_path):
    """A product configuration the machine would refuse fails the build at once, with the
    machine's own one-line message, before PyInstaller runs."""
    cases = {
        'backend = "process"\n[repository]\nurl = "http://x/"\n': "'repository' is not part",
        '[[service]]\nname = "core"\ncommand = ["x"]\nready = "nope"\n': "names no [[check]]",
        "[[check]]\nname = \"c\"\ntype = \"http\"\nurl = 3\n": "check['c'].url",
        "[health\n": "not valid TOML",
    }
    for text, says in cases.items():
        product = tmp_path / "product.toml"
        product.write_text(text)
        done = subprocess.run(
            [str(Path(sys.executable).parent / "release"), "installer", str(kit["repo"].path),
             "--channel", "stable", "--output", str(tmp_path / "dist"),
             "--product-config", str(product)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (text, done.stderr)
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


# Kept out of `make test`'s time budget (one more PyInstaller build); CI runs it in
# `make test-exhaustive`.
@pytest.mark.exhaustive
def test_an_installer_installs_a_release_with_its_own_manifest(tmp_path, builds, roots):
    """No --product-config: the release's manifest, in the installer's bundle, says how the
    product runs; the installer writes only the machine's layer."""
    repo = init_repository(tmp_path / "repo")
    manifest = tmp_path / "product.toml"
    manifest.write_text(manifest_toml(core_port=free_port(), dns_port=free_port()))
    publish(repo, "stable", "3.0", builds("3.0"), manifest=manifest)
    exe = build_installer(repo, "stable", tmp_path / "dist", work_dir=tmp_path / "work",
                          repo_url="https://updates.example.test/")
    root = tmp_path / "fresh"
    roots.append(root)
    done = run(exe, "--root", str(root), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["installed"] == "3.0"
    assert running(root) == {"core": "3.0", "ui": "3.0"}
    health = subprocess.run([UPDATER, "health", "--root", str(root), "--json"],
                            capture_output=True, text=True)
    report = json.loads(health.stdout)
    assert health.returncode == 0 and report["from_release"], health.stdout
    assert report["services"] == {"core": "release", "ui": "release"}
    written = [line for line in (root / "greenlight.toml").read_text().splitlines()
               if line.startswith("[[")]
    assert written == [], written  # no [[service]] or [[check]] of the product's
    assert (root / "current" / "product.toml").is_file()
