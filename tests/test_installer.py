"""The offline installer, built for real with PyInstaller and run as an executable."""

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from greenlight.release import (
    build_bundle,
    build_installer,
    current_channel_file,
    init_repository,
    publish,
)
from greenlight.updater.product import ProcessBackend, config_of
from greenlight.updater.store import InstallRoot, active_channel, set_active_channel

from conftest import free_port
from examples.demo.config import product_toml

# Each test runs the real executables of two PyInstaller builds (about 100 s to build):
# make test-exhaustive, which CI runs after make test; make test builds one (test_selfupdate_exe).
pytestmark = [pytest.mark.slow, pytest.mark.exhaustive]
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


def test_it_carries_its_interpreter_client_and_payload_and_runs_without_them(kit, tmp_path):
    """One file a machine without Python runs: the interpreter, the client with its TUF
    verifier and HTTP stack, and the payload (the bundle and installer.json) are inside, as
    PyInstaller's own archive viewer lists them; and it answers with nothing of this
    environment on its path."""
    viewer = Path(sys.executable).parent / "pyi-archive_viewer"
    listed = subprocess.run([str(viewer), "-r", "-b", str(kit["good"])], capture_output=True,
                            text=True, timeout=120, check=True).stdout.split()
    assert any(name.startswith("libpython3") for name in listed)
    for name in ("greenlight.updater.cli", "greenlight.updater.trust._bundle", "tuf.ngclient",
                 "httpx", "securesystemslib.signer", "payload/bundle.tar",
                 "payload/installer.json"):
        assert name in listed, name
    done = subprocess.run([str(kit["good"]), "--help"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0 and "--root" in done.stdout and "exit codes" in done.stdout


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
    assert "repository" not in tomllib.loads((offline / "greenlight.toml").read_text())
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
    """A root made by `updater init` has no services or checks: the release's manifest (the
    installer's --product-config, signed as the release's at build time) brings them, the
    root is healthy with every check actually run, and greenlight.toml keeps only the
    machine's layer."""
    root = tmp_path / "from-init"
    roots.append(root)
    subprocess.run([UPDATER, "init", "--root", str(root), "--repo", "http://127.0.0.1:9",
                    "--trust", str(kit["repo"].metadata_dir / "1.root.json")], check=True,
                   capture_output=True)
    before = (root / "greenlight.toml").read_text()
    done = run(kit["good"], "--root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert running(root) == {"core": "2.1", "ui": "2.1"}
    assert (root / "greenlight.toml").read_text() == before
    config = config_of(InstallRoot(root))
    assert config.service == [] and config.repository.url == "http://127.0.0.1:9/"
    health = subprocess.run([UPDATER, "health", "--root", str(root), "--json"],
                            capture_output=True, text=True)
    report = json.loads(health.stdout)
    assert health.returncode == 0 and report["healthy"] is True
    assert report["from_release"] and report["services"] == {"core": "release", "ui": "release"}
    assert {r["name"] for r in report["results"]} >= {"ui-session", "core-dns", "core-running"}


# One more install from the executable: kept out of `make test`'s time budget; CI runs it in
# `make test-exhaustive`.
@pytest.mark.exhaustive
def test_a_root_with_its_own_services_and_checks_is_left_as_it_is(kit, tmp_path, roots):
    """greenlight.toml is the machine's: the installer never rewrites an existing one. Its
    services and checks ran 2.0 (no manifest); 2.1's manifest takes over, and says so."""
    root = _installed_20(tmp_path, kit)
    roots.append(root)
    config = root / "greenlight.toml"
    mine = config.read_text().replace("soak = 1.0", "soak = 0.5")
    config.write_text(mine)
    done = run(kit["good"], "--root", str(root), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2.1 brings its own product manifest" in json.loads(done.stdout)["note"]
    assert config.read_text() == mine and running(root) == {"core": "2.1", "ui": "2.1"}
    health = json.loads(subprocess.run([UPDATER, "health", "--root", str(root), "--json"],
                                       capture_output=True, text=True).stdout)
    assert health["healthy"] and health["from_release"]
    assert any("no longer apply" in w for w in health["warnings"]), health["warnings"]


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
        'backend = "vm"\n': "backend",
        '[[check]]\nname = "p"\ntype = "tcp"\nport = "{api}"\n': "{api} is not a placeholder",
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
    assert kit["repo"].pending() == []  # and nothing was signed


# Kept out of `make test`'s time budget (four more PyInstaller builds); CI runs it in
# `make test-exhaustive`.
@pytest.mark.exhaustive
def test_a_release_sequence_through_offline_installers(tmp_path, roots):
    """The manifest's sequence (tests/test_manifest.py) with every release arriving by an
    offline installer: 1.0 and 1.1 published bare and given their manifests by
    --product-config at build time, 1.2 and 1.3 published with --manifest. 1.0 installs
    fresh, writing only the machine's layer; 1.1 adds a service and its check; 1.2 moves the
    core to another port; a bad 1.3's new check fails, and the machine is back on 1.2 with
    1.2's services and checks. A check this machine disabled by name is shown as such."""
    from tally import build, manifest

    repo = init_repository(tmp_path / "repo")
    ports = {name: str(free_port()) for name in ("core_port", "api_port", "dns_port",
                                                 "relay_port")}
    values = dict(ports)

    def installer(version: str, product: str, by_config: bool = True,
                  extra: str = "") -> Path:
        text = tmp_path / f"product-{version}.toml"
        text.write_text(product)
        archives = build(version, tmp_path / "builds" / version)
        if by_config:
            publish(repo, "stable", version, archives)
            config = tmp_path / f"config-{version}.toml"
            config.write_text(extra + product)
            return build_installer(repo, "stable", tmp_path / "dist", product_config=config,
                                   work_dir=tmp_path / "work", repo_url="http://127.0.0.1:9/")
        publish(repo, "stable", version, archives, manifest=text)
        return build_installer(repo, "stable", tmp_path / "dist", work_dir=tmp_path / "work")

    def answers(port: str) -> str | None:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.split()[-1]
        except httpx.HTTPError:
            return None

    def health() -> dict:
        done = subprocess.run([UPDATER, "health", "--root", str(root), "--json"],
                              capture_output=True, text=True)
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout)

    root = tmp_path / "machine"
    roots.append(root)
    (root / "data").mkdir(parents=True, mode=0o700)
    (root / "data" / "api-key").write_text("k" * 32 + "\n")
    exe = installer("1.0", manifest("core_port", values=values), extra='backend = "process"\n')
    assert current_channel_file(repo, "stable").manifest is not None  # signed at build time
    done = run(exe, "--root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    written = (root / "greenlight.toml").read_text()
    assert 'backend = "process"' in written and "[[service]]" not in written
    assert answers(ports["core_port"]) == "1.0"
    # This machine's layer: its own ports, and a vendor check switched off by name.
    (root / "greenlight.toml").write_text(
        'disabled_checks = ["tally-dns"]\n' + written + "\n[values]\n"
        + "".join(f'{k} = "{v}"\n' for k, v in ports.items()))
    report = health()
    assert report["healthy"] and report["disabled"] == ["tally-dns"], report
    assert "tally-dns" not in {r["name"] for r in report["results"]}

    done = run(installer("1.1", manifest("core_port", relay=True, values=values)),
               "--root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    report = health()
    assert report["healthy"] and report["services"] == {"core": "release", "relay": "release"}
    assert "relay-up" in {r["name"] for r in report["results"]}

    done = run(installer("1.2", manifest("api_port", relay=True, values=values),
                         by_config=False), "--root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert answers(ports["api_port"]) == "1.2" and answers(ports["core_port"]) is None
    checks_12 = {r["name"] for r in health()["results"]}

    bad = ('\n[[check]]\nname = "core-v2"\ntype = "http"\n'
           'url = "http://127.0.0.1:{api_port}/v2/healthz"\n')
    done = run(installer("1.3", manifest("api_port", relay=True, values=values,
                                         extra_check=bad), by_config=False),
               "--root", str(root), "--json")
    assert done.returncode == 20, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [c["name"] for c in report["incident"]["failed_checks"]] == ["core-v2"]
    assert report["installed"] == "1.2" and answers(ports["api_port"]) == "1.2"
    report = health()
    assert report["healthy"] and {r["name"] for r in report["results"]} == checks_12
    assert report["disabled"] == ["tally-dns"]
    text = subprocess.run([UPDATER, "health", "--root", str(root)], capture_output=True,
                          text=True).stdout
    assert "off  tally-dns [release]: disabled by this machine" in text


# --- from source: the installer's module over a payload folder (no PyInstaller build) ---------
@pytest.fixture(scope="module")
def valued(tmp_path_factory):
    """A payload whose release (tally 1.0) leaves core_port and dns_port to the machine, the
    core_port's default one this machine has taken."""
    import socket

    from greenlight.release.distribution import write_payload

    from tally import build, manifest

    tmp = tmp_path_factory.mktemp("valued")
    taken = socket.socket()
    taken.bind(("127.0.0.1", free_port()))
    taken.listen()
    defaults = {"core_port": str(taken.getsockname()[1]), "dns_port": str(free_port())}
    repo = init_repository(tmp / "repo")
    product = tmp / "product.toml"
    product.write_text(manifest("core_port", values=defaults))
    publish(repo, "stable", "1.0", build("1.0", tmp / "builds"), manifest=product)
    write_payload(repo, "stable", tmp / "payload")
    yield {"payload": tmp / "payload", "defaults": defaults}
    taken.close()


def from_source(payload: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greenlight.updater.installer", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GREENLIGHT_PAYLOAD": str(payload)})


def test_a_fresh_install_sets_the_values_the_release_leaves_to_the_machine(valued, tmp_path,
                                                                          roots):
    """The release's default port is taken here: --value puts the core on another one, the
    product answers there and is healthy; --config brings the rest of the machine's layer.
    An existing installation refuses --value."""
    import httpx

    root = tmp_path / "valued"
    roots.append(root)
    (root / "data").mkdir(parents=True, mode=0o700)
    (root / "data" / "api-key").write_text("k" * 32 + "\n")
    port, dns_port = str(free_port()), str(free_port())
    assert port != valued["defaults"]["core_port"]
    machine = tmp_path / "machine.toml"
    machine.write_text(f'disabled_checks = ["tally-dns"]\n[values]\ncore_port = "1"\n'
                       f'dns_port = "{dns_port}"\n')
    helped = from_source(valued["payload"], "--help")
    assert f"core_port (default {valued['defaults']['core_port']})" in helped.stdout
    assert "--value NAME=VALUE" in helped.stdout and "--config FILE" in helped.stdout
    done = from_source(valued["payload"], "--root", str(root), "--offline",
                       "--config", str(machine), "--value", f"core_port={port}")
    assert done.returncode == 0, done.stdout + done.stderr
    config = tomllib.loads((root / "greenlight.toml").read_text())
    assert config["values"] == {"core_port": port, "dns_port": dns_port}  # --value wins
    assert config["disabled_checks"] == ["tally-dns"]
    assert "repository" not in config and config["channel"] == "stable"
    assert httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.split()[-1] == "1.0"
    health = subprocess.run([UPDATER, "health", "--root", str(root), "--json"],
                            capture_output=True, text=True)
    report = json.loads(health.stdout)
    assert health.returncode == 0 and report["healthy"], health.stdout + health.stderr
    assert report["disabled"] == ["tally-dns"]

    before = (root / "greenlight.toml").read_text()
    again = from_source(valued["payload"], "--root", str(root), "--value", "core_port=1")
    assert again.returncode == 2 and again.stdout == "", again.stdout + again.stderr
    assert again.stderr.startswith(f"installer: error: {root} is an installation already: "
                                   "--config and --value set up a fresh root only")
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert (root / "greenlight.toml").read_text() == before


def test_a_bad_value_is_refused_in_one_line_and_nothing_is_created(valued, tmp_path):
    bad_config = tmp_path / "machine.toml"
    bad_config.write_text('channel = "beta"\n')
    cases = {
        ("--value", "Core-Port=18080"): "--value: 'Core-Port': a value's name is lower case",
        ("--value", "version=2"): "--value: 'version': a value's name is lower case",
        ("--value", "core_port=80\x1b[2J"): "--value: field values.core_port: String should "
                                            "match pattern",
        ("--value", "core_port=" + "9" * 5000): "at most 4096 characters",
        ("--value", "core_port"): "--value 'core_port': expected NAME=VALUE",
        ("--value", "core_prot=18080"): "--value core_prot: 1.0 declares no such value; it "
                                        "declares core_port (default",
        ("--value", "core_port=1", "--value", "core_port=2"): "--value core_port: given twice",
        ("--config", str(bad_config)): "'channel' is not set by --config",
    }
    provisioned = tmp_path / "provisioned"
    (provisioned / "data").mkdir(parents=True, mode=0o700)
    (provisioned / "data" / "api-key").write_text("k" * 32 + "\n")
    for n, (args, says) in enumerate(cases.items()):
        root = provisioned if n % 2 else tmp_path / "never"
        done = from_source(valued["payload"], "--root", str(root), "--offline", *args)
        assert done.returncode == 2 and done.stdout == "", (args, done.stdout + done.stderr)
        assert done.stderr.startswith("installer: error: ") and says in done.stderr, \
            (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert "\x1b" not in done.stderr
        assert not (tmp_path / "never").exists(), args
        assert [p.relative_to(provisioned).as_posix() for p in sorted(provisioned.rglob("*"))] \
            == ["data", "data/api-key"], args
