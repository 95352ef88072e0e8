"""A release says how it runs: its signed product manifest, under the machine's layer.

The loader (one code at publish and on the machine), the merge rules of docs/manifest.md, the
refusal at publish, and a life on tally (tests/tally) through the `updater` CLI with real
processes: a release adds a service, the next moves the core's port, a bad one ships a check
that fails and is rolled back to the previous release *and* its manifest.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from greenlight.release import current_channel_file, publish
from greenlight.updater import ConfigError
from greenlight.updater.product import Config, ProcessBackend, layered, load_manifest
from greenlight.updater.store import InstallRoot
from greenlight.updater.transaction import STEPS

from conftest import builtin_server, free_port
from tally import build, manifest, product_toml

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).parents[1]


def _machine(**extra: object) -> Config:
    return Config.model_validate({"repository": {"url": "http://127.0.0.1/"}, **extra})


@pytest.mark.parametrize("text, says", [
    ("[[service]\nname=1", "not valid TOML"),
    ('channel = "beta"\n', "'channel' does not belong in a release's manifest"),
    ('[[service]]\nname = "core"\ncommand = ["{core_prt}"]\n',
     "{core_prt} is not a placeholder the machine fills"),
    ('[[service]]\nname = "core"\ncommand = ["x"]\nready = "up"\n', "names no [[check]]"),
    ('[values]\nroot = "/"\n', "not one of root"),
    ('[[service]]\nname = "core"\ncommand = ["x"]\n[[socket]]\nname = "api"\n'
     'service = "core"\nlisten = "127.0.0.1:8080"\n', "listens on the fixed address"),
    ('[values]\np = "1"\n[[service]]\nname = "core"\ncommand = ["x"]\n[[socket]]\n'
     'name = "api"\nservice = "core"\nlisten = "127.0.0.1:{p}0"\n',
     "the port must be a placeholder of its own"),
    ('[[service]]\nname = "core"\ncommand = ["x"]\n[[socket]]\nname = "api"\n'
     'service = "ui"\nlisten = "127.0.0.1:8080"\n', "names no [[service]]"),
    ('per_instance = ["cache"]\n', "per_instance names 'cache'"),
    # a tcp check on a socket Greenlight holds cannot fail: the backlog answers for the service
    ('[values]\np = "1"\n[[service]]\nname = "core"\ncommand = ["x"]\nready = "up"\n'
     '[[socket]]\nname = "api"\nservice = "core"\nlisten = "0.0.0.0:{p}"\n'
     '[[check]]\nname = "up"\ntype = "tcp"\nport = "{p}"\n',
     "check 'up' connects to socket 'api', which Greenlight holds"),
])
def test_a_manifest_that_does_not_load_is_named_in_one_line(text, says):
    with pytest.raises(ConfigError) as caught:
        load_manifest(text, "product.toml")
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_machine_layer_merge_rules():
    release = load_manifest(manifest(relay=True, values={"relay_port": "9000"}), "m")
    machine = _machine(
        values={"core_port": "7001", "gone": "1"}, disabled_checks=["tally-dns", "nope"],
        check=[{"name": "core-up", "type": "tcp", "host": "127.0.0.1", "port": 1},
               {"name": "local-disk", "type": "command", "command": ["true"]}],
        service=[{"name": "old", "command": ["x"]}])
    layer = layered(machine, release, "1.1")
    assert [s.name for s in layer.config.service] == ["core", "relay"]  # the release's
    names = [c.name for c in layer.config.check]
    # the release's (less the disabled one), its core-up over the machine's, then the extra
    assert names == ["core-up", "core-version", "ui-items", "relay-up", "local-disk"]
    assert layer.config.check[0].type == "http"
    assert layer.sources["local-disk"] == "machine" and layer.sources["core-up"] == "release"
    assert layer.disabled == ["tally-dns"]
    assert layer.values == {"core_port": "7001", "dns_port": "5353", "relay_port": "9000"}
    assert any("'gone'" in w and "release 1.1 does not declare" in w for w in layer.warnings)
    assert any("'nope'" in w for w in layer.warnings)
    # Without a manifest, greenlight.toml alone (today's behaviour).
    alone = layered(machine, None)
    assert not alone.from_release and [s.name for s in alone.config.service] == ["old"]


def test_a_ready_check_cannot_be_disabled():
    release = load_manifest(manifest(), "m")
    layer = layered(_machine(disabled_checks=["core-up"]), release, "1.0")
    assert "core-up" in [c.name for c in layer.config.check] and not layer.disabled
    assert any("stays on" in w for w in layer.warnings)


def test_publish_refuses_a_manifest_before_signing_anything(tmp_path, repo):
    archive = build("1.0", tmp_path / "b")["core"]
    bad = tmp_path / "product.toml"
    bad.write_text('[[service]]\nname = "core"\ncommand = ["{nope}"]\n')
    before = sorted(p.name for p in repo.metadata_dir.iterdir())
    done = subprocess.run([str(BIN / "release"), "publish", str(repo.path), "--channel",
                           "stable", "--version", "1.0", f"--component=core={archive}",
                           "--manifest", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "{nope} is not a placeholder" in lines[0], done.stderr
    assert sorted(p.name for p in repo.metadata_dir.iterdir()) == before
    assert current_channel_file(repo, "stable") is None


def test_the_exported_schema_is_current():
    from greenlight.updater.product import manifest_schema

    path = REPO_ROOT / "channels" / "schema" / "product-manifest.v1.schema.json"
    assert path.read_text() == manifest_schema(), "regenerate channels/schema"


class Machine:
    """A root made by `updater init`, with only the machine's layer in greenlight.toml."""

    def __init__(self, tmp: Path, repo, url: str) -> None:
        self.tmp, self.repo, self.path = tmp, repo, tmp / "root"
        done = self.run("init", "--repo", url, "--trust",
                        str(repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        self.ports = {name: str(free_port()) for name in ("core_port", "api_port",
                                                           "dns_port")}
        self.relay = str(free_port())
        (self.path / "data").mkdir(exist_ok=True)
        (self.path / "data" / "api-key").write_text("k" * 32 + "\n")
        config = self.path / "greenlight.toml"  # top-level keys above the first table
        config.write_text('disabled_checks = ["tally-dns"]\n' + config.read_text()
                          + "\n[values]\n" + "".join(f'{k} = "{v}"\n'
                                                     for k, v in self.ports.items()))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updater"), *args, "--root", str(self.path)],
                              capture_output=True, text=True, timeout=180)

    def publish(self, version: str, text: str) -> None:
        product = self.tmp / f"product-{version}.toml"
        product.write_text(text)
        archives = build(version, self.tmp / "builds" / version)
        publish(self.repo, "stable", version, archives, manifest=product)

    def upgrade(self, expect: int) -> dict:
        done = self.run("upgrade", "--json")
        assert done.returncode == expect, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout)

    def health(self) -> dict:
        done = self.run("health", "--json")
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout)

    def answers(self, port: str) -> str | None:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.split()[-1]
        except httpx.HTTPError:
            return None


@pytest.mark.slow
def test_each_release_runs_and_is_checked_by_its_own_manifest(tmp_path, repo):
    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, repo, server.url)
        try:
            _life(m)
        finally:
            m.run("stop")


def _life(m: Machine) -> None:
    relay = {"relay_port": m.relay}  # a value the machine leaves at the release's default
    m.publish("1.0", manifest("core_port"))
    assert m.upgrade(0)["outcome"] == "upgraded"
    assert m.answers(m.ports["core_port"]) == "1.0"
    health = m.health()
    assert health["healthy"] and health["from_release"] and health["disabled"] == ["tally-dns"]
    assert {r["name"]: r["source"] for r in health["results"]} == {
        "core-running": "release", "core-up": "release", "core-version": "release",
        "ui-items": "release"}
    # api_port is the machine's, for a later release; 1.0 does not declare it: a note.
    assert any("'api_port'" in w for w in health["warnings"])
    status = m.run("status")
    assert "configured by  its release's manifest, under greenlight.toml" in status.stdout
    text = m.run("health").stdout
    assert "off  tally-dns [release]: disabled by this machine" in text
    assert "core-up [release]" in text

    # 1.1 adds a service and its check: started after the core, checked, stopped first.
    m.publish("1.1", manifest("core_port", relay=True, values=relay))
    assert m.upgrade(0)["outcome"] == "upgraded"
    health = m.health()
    assert health["healthy"] and health["services"] == {"core": "release", "relay": "release"}
    assert "relay-up" in {r["name"] for r in health["results"]}

    # 1.2 moves the core to the port the machine names api_port; the UI's check follows.
    m.publish("1.2", manifest("api_port", relay=True, values=relay))
    assert m.upgrade(0)["outcome"] == "upgraded"
    assert m.answers(m.ports["api_port"]) == "1.2"
    assert m.answers(m.ports["core_port"]) is None  # 1.1's core was stopped by 1.1's manifest
    checks_12 = {r["name"] for r in m.health()["results"]}

    # A bad 1.3 ships a check that fails: rolled back to 1.2 and 1.2's manifest.
    bad = ('\n[[check]]\nname = "core-v2"\ntype = "http"\n'
           'url = "http://127.0.0.1:{api_port}/v2/healthz"\n')
    m.publish("1.3", manifest("api_port", relay=True, values=relay, extra_check=bad))
    report = m.upgrade(20)
    failed = {c["name"]: c for c in report["incident"]["failed_checks"]}
    assert set(failed) == {"core-v2"} and failed["core-v2"]["source"] == "release"
    # it ran with a value this machine set: the evidence says which, a local cause to weigh
    assert failed["core-v2"]["evidence"]["machine_values"] == {"api_port": m.ports["api_port"]}
    assert report["installed"] == "1.2" and m.answers(m.ports["api_port"]) == "1.2"
    health = m.health()
    assert health["healthy"] and {r["name"] for r in health["results"]} == checks_12
    assert "core-v2" not in checks_12
    history = json.loads(m.run("history", "--json").stdout)["entries"]
    assert history[-1]["event"] == "rolled-back"
    kept = InstallRoot(m.path).release_dir(InstallRoot(m.path).installed_release() or "")
    assert "relay" in (kept / "product.toml").read_text()


HOSTILE = '[[service]]\nname = "core"\ncommand = ["{nope}"]\n'


@pytest.mark.parametrize("how, code", [("tampered", 4), ("hostile", 3)])
def test_a_refused_manifest_is_refused_before_any_archive_is_fetched(tmp_path, repo, how,
                                                                      code):
    """Issue 38: the release's manifest (and its file lists) are fetched, verified and
    loaded before its archives. A manifest tampered on the mirror (exit 4), or signed but
    refused by the machine's loader (exit 3: published by hand around `release publish`'s
    own check), leaves no archive in downloads/ and never asks the mirror for one."""
    from greenlight.release import attach_manifest

    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, repo, server.url)
        if how == "tampered":
            m.publish("1.0", manifest("core_port"))
            ref = current_channel_file(repo, "stable").manifest
            folder = repo.path / "targets" / Path(ref.target).parent
            (stored,) = folder.glob(f"{ref.sha256}.*")
            stored.write_text(stored.read_text().replace("core", "c0re"))
        else:
            publish(repo, "stable", "1.0", build("1.0", tmp_path / "builds" / "1.0"))
            attach_manifest(repo, "stable", HOSTILE, "hostile.toml")
        release = current_channel_file(repo, "stable")
        server.reset()
        done = m.run("upgrade")
        asked = server.paths()
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "manifest" in done.stdout + done.stderr
    archives = {a.sha256 for a in release.components.values()}
    assert not [p for p in asked if any(sha in p for sha in archives)], asked
    kept = [p.name for p in (m.path / "downloads").rglob("*") if p.is_file()]
    assert not [k for k in kept if any(sha in k for sha in archives)], kept
    assert InstallRoot(m.path).installed_release() is None


KILL_POINTS = [f"{step.name}:{when}" for step in STEPS for when in ("before", "after")]
SAMPLED = {"stop:after", "start:after", "post-check:after"}


@pytest.mark.slow
@pytest.mark.parametrize("point", [
    p if p in SAMPLED else pytest.param(p, marks=pytest.mark.exhaustive) for p in KILL_POINTS])
def test_killed_while_the_services_change_recovers_to_one_whole_release(tmp_path, repo, point):
    """1.0 runs the core alone on core_port; 1.1 adds a service and moves the core to
    api_port. Killed at any step, recovery leaves one whole release running by its own
    manifest: 1.0's services and port, or 1.1's."""
    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, repo, server.url)
        try:
            relay = {"relay_port": m.relay}
            m.publish("1.0", manifest("core_port"))
            assert m.upgrade(0)["outcome"] == "upgraded"
            m.publish("1.1", manifest("api_port", relay=True, values=relay))
            killed = subprocess.run([str(BIN / "updater"), "upgrade", "--root", str(m.path)],
                                    env={**os.environ, "GREENLIGHT_KILL_AT": point},
                                    capture_output=True, text=True, timeout=180)
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            done = m.run("recover")
            assert done.returncode == 0, done.stdout + done.stderr
            expected = ("1.1" if point in ("post-check:after", "commit:before", "commit:after")
                        else "1.0")
            root = InstallRoot(m.path)
            assert root.installed_version() == expected
            backend = ProcessBackend(root)
            assert backend.is_running("relay") == (expected == "1.1")
            port, other = ((m.ports["api_port"], m.ports["core_port"]) if expected == "1.1"
                           else (m.ports["core_port"], m.ports["api_port"]))
            assert m.answers(port) == expected and m.answers(other) is None
            health = m.health()
            assert health["healthy"] and health["installed"] == expected, health
            if expected == "1.0":  # and the next upgrade goes through from there
                assert m.upgrade(0)["outcome"] == "upgraded"
                assert backend.is_running("relay") and m.answers(m.ports["api_port"]) == "1.1"
        finally:
            m.run("stop")


@pytest.mark.slow
def test_a_bundle_carries_its_release_manifest(tmp_path, repo):
    """Sideloading takes the manifest from the release as an upgrade does: a bundle carries
    it, verified the same way; a bad release from a bundle rolls back to the one before and
    its manifest."""
    from greenlight.release import build_bundle

    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, repo, server.url)
    try:
        relay = {"relay_port": m.relay}
        m.publish("1.0", manifest("core_port"))
        build_bundle(repo, "stable", tmp_path / "1.0.bundle")
        done = m.run("sideload", str(tmp_path / "1.0.bundle"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert m.answers(m.ports["core_port"]) == "1.0"
        m.publish("1.1", manifest("api_port", relay=True, values=relay))
        build_bundle(repo, "stable", tmp_path / "1.1.bundle")
        done = m.run("sideload", str(tmp_path / "1.1.bundle"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "brings its own product manifest" not in done.stdout  # 1.0 brought one too
        health = m.health()
        assert health["healthy"] and health["services"] == {"core": "release",
                                                            "relay": "release"}
        bad = ('\n[[check]]\nname = "core-v2"\ntype = "http"\n'
               'url = "http://127.0.0.1:{core_port}/v2/healthz"\n')
        m.publish("1.2", manifest("core_port", extra_check=bad))
        build_bundle(repo, "stable", tmp_path / "1.2.bundle")
        done = m.run("sideload", str(tmp_path / "1.2.bundle"))
        assert done.returncode == 20, done.stdout + done.stderr
        assert "check core-v2" in done.stdout
        assert m.answers(m.ports["api_port"]) == "1.1"
        assert ProcessBackend(InstallRoot(m.path)).is_running("relay")
        assert {r["name"] for r in m.health()["results"]} >= {"relay-up", "relay-running"}
    finally:
        m.run("stop")


@pytest.mark.slow
def test_a_root_configured_by_hand_keeps_working_then_a_manifest_takes_over(tmp_path, repo):
    """Today's roots: greenlight.toml holds the product's services and checks. A release
    without a manifest runs by them, as before; the first release with one takes over, and
    says so once."""
    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, repo, server.url)
        try:
            with (m.path / "greenlight.toml").open("a") as f:
                f.write(product_toml(int(m.ports["core_port"]), int(m.ports["dns_port"]),
                                     soak=1.0))
            publish(repo, "stable", "1.0", build("1.0", tmp_path / "b" / "1.0"))
            assert m.upgrade(0)["outcome"] == "upgraded"
            health = m.health()
            assert health["healthy"] and not health["from_release"]
            assert "tally-dns" in {r["name"] for r in health["results"]}  # not disabled here
            m.publish("1.1", manifest("core_port", extra_check=(
                '\n[[check]]\nname = "core-items"\ntype = "http"\n'
                'url = "http://127.0.0.1:{core_port}/healthz"\n')))
            report = m.upgrade(0)
            assert "1.1 brings its own product manifest" in (report["note"] or "")
            health = m.health()
            assert health["healthy"] and health["from_release"], health
            assert health["disabled"] == ["tally-dns"]
            assert "core-items" in {r["name"] for r in health["results"]}
            assert any("[[service]] entries (core) no longer apply" in w
                       for w in health["warnings"])
            m.publish("1.2", manifest("core_port"))
            assert m.upgrade(0)["note"] is None  # said once
        finally:
            m.run("stop")


def test_every_text_field_of_a_check_takes_the_machine_values():
    """A placeholder works in any field of any check (the DNS resolver, a TCP port, headers,
    a command), not only in the fields a probe happened to expand."""
    from pydantic import TypeAdapter

    from greenlight.updater.product import CheckConfig
    from greenlight.updater.product._health import expanded

    values = {"dns_port": "5300", "api_port": "7000", "root": "/r"}
    checks = TypeAdapter(list[CheckConfig]).validate_python([
        {"name": "d", "type": "dns", "resolver": "127.0.0.1:{dns_port}", "query": "x.test"},
        {"name": "t", "type": "tcp", "port": "{api_port}"},
        {"name": "h", "type": "http", "url": "http://127.0.0.1:{api_port}/",
         "headers": {"X-Root": "{root}"}, "bearer_token_file": "{root}/t"},
        {"name": "c", "type": "command", "command": ["{python}", "{root}/p", "{api_port}"]},
        {"name": "w", "type": "websocket", "url": "ws://127.0.0.1:{api_port}/ws",
         "send": ['{"auth": "{token}"}']},
    ])
    d, t, h, c, w = (expanded(check, values) for check in checks)
    assert d.resolver == "127.0.0.1:5300" and t.port == "7000"
    assert h.url == "http://127.0.0.1:7000/" and h.headers == {"X-Root": "/r"}
    assert h.bearer_token_file == "/r/t"
    assert c.command == ["{python}", "/r/p", "7000"]  # a frozen updater's argv comes later
    assert w.url == "ws://127.0.0.1:7000/ws" and w.send == ['{"auth": "{token}"}']
    with pytest.raises(ConfigError, match="port"):
        load_manifest('[[check]]\nname = "t"\ntype = "tcp"\nport = "api"\n', "m")


def test_an_installers_product_config_becomes_the_release_manifest(tmp_path, repo):
    """`release installer --product-config` on a release published without a manifest signs
    the product part as the release's manifest (a new release key, the same components);
    the machine's part (backend) stays the machine's. A release that carries that manifest
    already is left alone; another manifest, or a staged rollout, is refused in one line."""
    from greenlight.channels import ReleaseId
    from greenlight.release import attach_manifest
    from greenlight.release._errors import Conflict
    from greenlight.updater.product import split_product_config

    publish(repo, "stable", "1.0", build("1.0", tmp_path / "b"))
    before = current_channel_file(repo, "stable")
    text, machine = split_product_config('backend = "process"\n' + manifest(), "config")
    assert machine == {"backend": "process"} and "backend" not in text
    load_manifest(text, "split")  # what is left is a manifest
    made, changed = attach_manifest(repo, "stable", text, "config")
    assert changed and made.release == "1.0" and made.components == before.components
    assert made.manifest is not None and repo.pending() == []
    key = ReleaseId.of(made.release, made.components, made.manifest).key
    assert key != ReleaseId.of(before.release, before.components).key
    assert attach_manifest(repo, "stable", text, "config") == (made, False)
    with pytest.raises(Conflict, match="carries another product manifest"):
        attach_manifest(repo, "stable", manifest(relay=True, values={"relay_port": "1"}),
                        "config")
    publish(repo, "stable", "1.1", build("1.1", tmp_path / "c"), rollout_percent=10)
    with pytest.raises(Conflict, match="staged rollout"):
        attach_manifest(repo, "stable", text, "config")
    assert current_channel_file(repo, "stable").manifest is None
    with pytest.raises(ConfigError, match="'channel' is not part"):
        split_product_config('channel = "beta"\n', "config")


def test_a_failure_says_whose_check_failed():
    """The machine's own check failing after an upgrade is named as the machine's; a
    release's check that ran with this machine's values carries them as evidence."""
    from datetime import UTC, datetime

    from greenlight.updater.product import CheckResult
    from greenlight.updater.product._control import _describe, _tagged

    release = load_manifest(manifest(), "m")
    machine = _machine(values={"core_port": "7001"}, check=[
        {"name": "local-disk", "type": "command", "command": ["false"]}])
    layer = layered(machine, release, "1.1")

    def failed(name: str) -> CheckResult:
        return CheckResult(name=name, type="x", required=True, ok=False, summary="no",
                           attempts=1, latency_ms=0.0, evidence={}, at=datetime.now(UTC))

    ours, theirs = _tagged([failed("local-disk"), failed("core-up")], layer.config.check,
                           layer)
    assert (ours.source, theirs.source) == ("machine", "release")
    assert "machine_values" not in ours.evidence
    assert theirs.evidence["machine_values"] == {"core_port": "7001"}
    assert "check local-disk (a check of this machine's greenlight.toml, not of the release)" \
        in _describe([ours], "1.1@abc", "did not become healthy", layer)
    assert "check core-up: no" in _describe([theirs], "1.1@abc", "did not become healthy",
                                            layer)
