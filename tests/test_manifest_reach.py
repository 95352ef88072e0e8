"""Nothing a signed manifest says reaches beyond the product's place.

A manifest configures the product's services; it must never write a directive of its own into
a unit file, or a file outside the product, even as root. Each hostile manifest is refused at
publish (the real `release publish`, nothing signed) and by the machine's loader; the updater
writes and deletes unit files only inside the folder it recorded; and units rendered from
generated manifests are loaded into a real systemd manager (tests/usermanager.py) and run:
each has exactly the directives Greenlight wrote, and its process gets exactly the argv,
environment and folder that the process backend gives it.
"""

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenlight.release import current_channel_file
from greenlight.updater import ConfigError, StoreError
from greenlight.updater.product import (
    DEFAULT_PATH,
    Config,
    ProcessBackend,
    ServiceConfig,
    SystemdBackend,
    identity,
    load_manifest,
    record_units,
    render_unit,
    render_units,
)
from greenlight.updater.store import InstallRoot

from tally import build
from usermanager import user_manager

BIN = Path(sys.executable).parent

_CORE = '[[service]]\nname = "core"\n'

HOSTILE = {
    "unit-climbs-out": (_CORE + 'command = ["x"]\nunit = "../../escaped/greenlight-core.service"\n',
                        "unit"),
    "unit-is-a-path": (_CORE + 'command = ["x"]\nunit = "/some/file"\n', "unit"),
    "unit-not-a-service": (_CORE + 'command = ["x"]\nunit = "core.timer"\n', "unit"),
    "newline-in-workdir": (_CORE + 'command = ["x"]\n'
                           'workdir = "{root}\\nExecStartPre=/bin/touch /tmp/owned"\n',
                           "control character \\n"),
    "newline-in-env": (_CORE + 'command = ["x"]\n[service.env]\n'
                       'A = "1\\"\\nExecStartPost=/bin/sh -c id"\n', "control character \\n"),
    "newline-in-argument": (_CORE + 'command = ["x", "a\\nExecStartPre=/bin/sh"]\n',
                            "control character \\n"),
    "escape-in-a-check": (_CORE + 'command = ["x"]\n[[check]]\nname = "c"\ntype = "http"\n'
                          'url = "http://127.0.0.1/\\u001b[2J"\n', "control character \\x1b"),
    "env-name-with-equals": (_CORE + 'command = ["x"]\n[service.env]\n"A=B" = "1"\n', "env"),
    "program-is-a-prefix": (_CORE + 'command = ["-/bin/sh", "-c", "id"]\n',
                            "may not start with '-'"),
    "release-dir-climbs-out": (_CORE + 'command = ["{release_dir}/../../../bin/sh"]\n',
                               "climbs out of {release_dir}"),
    "root-sibling": (_CORE + 'command = ["x"]\nworkdir = "{root}-evil"\n',
                     "must end a path component"),
    "value-climbs-out": ('[values]\nsub = "../.."\n' + _CORE
                         + 'command = ["{release_dir}/{sub}/etc/x"]\n',
                         "climbs out of {release_dir}"),
    "relative-workdir": (_CORE + 'command = ["x"]\nworkdir = "data"\n', "absolute path"),
    "unit-is-the-agents": (_CORE + 'command = ["x"]\nunit = "greenlight-agent.service"\n',
                           "is Greenlight's own"),
    "service-named-agent": ('[[service]]\nname = "agent"\ncommand = ["x"]\n',
                            "is Greenlight's own"),
    "service-named-sockets": ('[[service]]\nname = "sockets"\ncommand = ["x"]\n',
                              "is Greenlight's own"),
    "two-services-one-unit": (_CORE + 'command = ["x"]\nunit = "u.service"\n[[service]]\n'
                              'name = "ui"\ncommand = ["x"]\nunit = "u.service"\n',
                              "is another service's own"),
    "workdir-climbs-after-a-colon": (_CORE + 'command = ["x"]\n'
                                     'workdir = "{release_dir}/x:/../../.."\n',
                                     "without '.', '..', spaces"),
    "workdir-with-dots": (_CORE + 'command = ["x"]\nworkdir = "/srv/../etc"\n',
                          "without '.', '..', spaces"),
    "workdir-trailing-space": (_CORE + 'command = ["x"]\nworkdir = "/srv/x "\n',
                               "without '.', '..', spaces"),
    "workdir-joins-the-next-line": (_CORE + 'command = ["x"]\nworkdir = "/srv/x\\\\"\n',
                                    "a backslash at its end"),
    "data-dir-climbs-out": (_CORE + 'command = ["{data_dir}/../../../bin/sh"]\n',
                            "climbs out of {data_dir}"),
    "python-as-a-folder": (_CORE + 'command = ["{python}/../../sh"]\n',
                           "is the interpreter, not a folder"),
    "token-file-absolute": (_CORE + 'command = ["x"]\n[[check]]\nname = "c"\ntype = "http"\n'
                            'url = "http://127.0.0.1:1/"\nbearer_token_file = "/etc/shadow"\n',
                            "never outside it"),
    "token-file-climbs-out": (_CORE + 'command = ["x"]\n[[check]]\nname = "c"\n'
                              'type = "websocket"\nurl = "ws://127.0.0.1:1/"\n'
                              'bearer_token_file = "../../secret"\n', "never outside it"),
    "program-prefix-by-value": ('[values]\nprog = "+/bin/sh"\n' + _CORE
                                + 'command = ["{prog}"]\n', "may not start with '+'"),
    "program-is-a-semicolon": (_CORE + 'command = [";", "/bin/sh"]\n',
                               "may not start with ';'"),
    "line-separator": (_CORE + 'command = ["x", "a\u2028b"]\n', "control character"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_manifest_is_refused_by_the_machine_in_one_line(name):
    text, says = HOSTILE[name]
    with pytest.raises(ConfigError) as caught:
        load_manifest(text, "product.toml")
    assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize("name", ["unit-climbs-out", "newline-in-env", "release-dir-climbs-out",
                                  "value-climbs-out"])
def test_publish_refuses_a_hostile_manifest_and_signs_nothing(tmp_path, repo, name):
    archive = build("1.0", tmp_path / "b")["core"]
    bad = tmp_path / "product.toml"
    bad.write_text(HOSTILE[name][0])
    before = sorted(p.name for p in repo.metadata_dir.iterdir())
    done = subprocess.run([str(BIN / "release"), "publish", str(repo.path), "--channel",
                           "stable", "--version", "1.0", f"--component=core={archive}",
                           "--manifest", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and HOSTILE[name][1] in lines[0], done.stderr
    assert sorted(p.name for p in repo.metadata_dir.iterdir()) == before
    assert current_channel_file(repo, "stable") is None


def test_units_are_written_and_removed_only_inside_the_recorded_folder(tmp_path):
    """Even a configuration that skipped validation (built in memory) or a record changed by
    hand cannot make the updater write or delete a unit file outside the recorded folder."""
    root = InstallRoot(tmp_path / "root")
    units, outside = tmp_path / "units", tmp_path / "escaped"
    units.mkdir()
    outside.mkdir()
    victim = outside / "greenlight-core.service"
    victim.write_text("the admin's own file\n")
    bad = ServiceConfig.model_construct(**{
        **ServiceConfig(name="core", command=["x"]).__dict__,
        "unit": "../escaped/greenlight-core.service"})
    with pytest.raises(ConfigError, match="not a systemd unit name"):
        render_units(Config.model_construct(**{**Config().__dict__, "service": [bad]}),
                     {"root": str(root.path)})

    backend = SystemdBackend(root, systemctl="true")  # follow() refuses before any systemctl
    record_units(root, units, ["../escaped/greenlight-core.service"])  # a record changed by hand
    with pytest.raises(StoreError, match="is not a unit name; nothing written or removed"):
        backend.follow({"greenlight-core.service": "[Unit]\n"})
    record_units(root, units, ["greenlight-core.service"])
    with pytest.raises(StoreError, match="is not a unit name"):
        backend.follow({"../escaped/greenlight-core.service": "[Unit]\n"})
    assert victim.read_text() == "the admin's own file\n"
    assert sorted(p.name for p in units.iterdir()) == []


@pytest.mark.slow
def test_a_unit_greenlight_did_not_write_is_never_overwritten_or_masked(manager, tmp_path,
                                                                        monkeypatch):
    """A release's first start under a unit name that is already taken: a file in the
    recorded folder that Greenlight did not write, or a unit systemd loads from elsewhere (a
    vendor's, which a file in the recorded folder would mask). Both are refused, nothing is
    written, and the admin's files are as they were."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", manager.env["XDG_RUNTIME_DIR"])
    root = InstallRoot(tmp_path / "root")
    folder = manager.units
    vendor = Path(manager.env["XDG_CONFIG_HOME"]) / "systemd" / "user"
    vendor.mkdir(parents=True, exist_ok=True)
    (vendor / "vendor-daemon.service").write_text("[Service]\nExecStart=/bin/true\n")
    (folder / "admins-own.service").write_text("[Service]\nExecStart=/bin/true\n")
    manager.systemctl("daemon-reload")
    backend = SystemdBackend(root, user=True)
    record_units(root, folder, [])
    for name in ("admins-own.service", "vendor-daemon.service"):
        with pytest.raises(StoreError, match="a unit Greenlight did not write"):
            backend.follow({name: "[Service]\nExecStart=/bin/false\n"})
    assert (folder / "admins-own.service").read_text() == "[Service]\nExecStart=/bin/true\n"
    assert not (folder / "vendor-daemon.service").exists()
    # what Greenlight wrote itself it may rewrite
    service = ServiceConfig(name="mine", command=["/bin/true"])
    text = render_unit(service, {"root": str(root.path)}, user=True)
    assert backend.follow({"greenlight-mine.service": text}) == ["greenlight-mine.service"]
    manager.systemctl("daemon-reload")


# -- generated manifests, rendered, loaded into a real systemd and run --------------------

_TEXT = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
_WORD = st.one_of(st.text(_TEXT, max_size=12), st.sampled_from(
    [";", "\\;", "%", "%%", "%h", "$", "$$", "$HOME", "${HOME}", '"', "'", "\\", "\\n", " ",
     "", "a b", "-", "@x", "+x"]))
_ENV = st.dictionaries(st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z"), _WORD, max_size=4)
_FOLDER = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
                                blacklist_characters="/"),
                  min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s not in (".", "..") and not s.endswith("\\"))

_REPORT = ("import json,os,sys; out=sys.argv[1]; "
           "json.dump({'argv': sys.argv[2:], 'cwd': os.getcwd(), "
           "'env': {k: os.environ.get(k) for k in sys.argv[2].split(',') if k}}, "
           "open(out + '~', 'w')); os.replace(out + '~', out)")

_SERVICE_KEYS = ["Type", "WorkingDirectory", "ExecStart", "KillSignal", "TimeoutStopSec",
                 "TimeoutStartSec", "Restart", "RestartSec", "StandardOutput", "StandardError"]


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    with user_manager(tmp_path_factory.mktemp("systemd")) as running:
        yield running


def _seen(path: Path, what: str, alive=lambda: True) -> dict:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline and alive(), what
        time.sleep(0.01)
    return json.loads(path.read_text())


def _directives(unit: str) -> list[str]:
    """The [Service] directives of a unit file, by name, as systemd splits its lines."""
    section, names = "", []
    for line in unit.split("\n"):  # systemd splits lines at \n alone
        if line.startswith("["):
            section = line
        elif line.strip() and section == "[Service]":
            names.append(line.split("=", 1)[0])
    return names


@pytest.mark.slow
def test_generated_units_run_exactly_what_the_process_backend_runs(manager, tmp_path):
    """Words with quotes, backslashes, `%`, `$`, `;` and spaces, in arguments, environment
    values and the working folder: the unit has exactly the directives Greenlight wrote, and
    systemd's process gets the same argv, environment and folder as the process backend's."""
    _run_generated(manager, tmp_path, 25)


@pytest.mark.exhaustive
def test_generated_units_at_length(manager, tmp_path):
    """The same, on 400 generated services (make test-exhaustive)."""
    _run_generated(manager, tmp_path, 400)


def _run_generated(manager, tmp_path: Path, examples: int) -> None:
    root = InstallRoot(tmp_path / "root")
    (root.path / "logs").mkdir(parents=True)
    counter = itertools.count()

    @settings(max_examples=examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(words=st.lists(_WORD, max_size=5), env=_ENV, folder=_FOLDER)
    def run(words: list[str], env: dict[str, str], folder: str) -> None:
        n = next(counter)
        workdir = tmp_path / "work" / str(n) / folder
        workdir.mkdir(parents=True)
        keys = ",".join(env)
        outs = {b: tmp_path / f"{b}-{n}.json" for b in ("systemd", "process")}
        service = {b: ServiceConfig(
            name=f"p{n}{b[0]}", command=[sys.executable, "-c", _REPORT, str(outs[b]), keys,
                                         *words],
            workdir=str(workdir), env=env, restart="no") for b in outs}
        text = render_unit(service["systemd"], {"root": str(root.path)}, user=True)
        environment = {"PATH": DEFAULT_PATH, **identity(), **env}
        assert _directives(text) == [*_SERVICE_KEYS, *["Environment"] * len(environment)]
        unit = tmp_path / SystemdBackend.unit(service["systemd"])
        unit.write_text(text)
        manager.install(unit)
        manager.systemctl("start", unit.name)
        by_systemd = _seen(outs["systemd"], f"{unit.name} to run", lambda: manager.show(
            unit.name, "ActiveState")["ActiveState"] != "failed")
        process = ProcessBackend(root)
        process.start(service["process"], {"root": str(root.path)})
        by_process = _seen(outs["process"], "the process backend's service to run")
        process.stop(service["process"], timeout=5)
        expected = {"argv": [keys, *words], "cwd": str(workdir), "env": env}
        assert by_systemd == expected
        assert by_process == expected

    run()
