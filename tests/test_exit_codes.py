"""Every documented exit code, produced through the `updater` command line by the situation
the table says it means. The table is `EXIT_CODES`: a code added there without a scenario here
fails `test_every_documented_code_has_a_scenario`.

The product is conftest's MARKER_PRODUCT: no services and one real command check that fails on
demand (in the pre-check, the post-check or a rollback's own check).
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from greenlight.release import build_bundle, init_repository, publish, yank
from greenlight.updater._errors import EXIT_CODES
from greenlight.updater.store import InstallRoot, locked

from conftest import MARKER_PRODUCT as PRODUCT
from conftest import builtin_server, free_port

BIN = Path(sys.executable).parent




class Machine:
    def __init__(self, tmp: Path, repo, server, builds) -> None:
        self.tmp, self.repo, self.server, self.builds = tmp, repo, server, builds
        self.path = tmp / "root"
        self.trust = repo.metadata_dir / "1.root.json"

    def updater(self, *args: str, root: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--root", str(self.path)] if root else []
        return subprocess.run([str(BIN / "updater"), *args, *extra], capture_output=True,
                              text=True, timeout=120)

    def init(self, channel: str = "stable") -> None:
        done = self.updater("init", "--repo", self.server.url, "--trust", str(self.trust),
                            "--channel", channel)
        assert done.returncode == 0, done.stderr
        with (self.path / "greenlight.toml").open("a") as f:
            f.write(PRODUCT)

    def publish(self, version: str, *faults: str, channel: str = "stable") -> None:
        publish(self.repo, channel, version, self.builds(version, *faults),
                fallback="stable" if channel != "stable" else None)

    def installed(self, version: str = "1.0") -> None:
        """An installation running `version` of stable."""
        self.publish(version)
        self.init()
        done = self.updater("upgrade")
        assert done.returncode == 0, done.stderr

    def break_it(self, version: str = "1.0") -> None:
        (self.path / "data").mkdir(exist_ok=True)
        (self.path / "data" / f"broken-{version}").write_text("")


def ok(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    return m.updater("status")


def internal_error(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    program = ("import sys, greenlight.updater.operations as o\n"
               "def bug(*a, **k): raise RuntimeError('a planted bug')\n"
               "o.status = bug\n"
               "from greenlight.updater.cli import main\n"
               "sys.argv = ['updater', 'status', '--root', sys.argv[1]]\n"
               "main()\n")
    return subprocess.run([sys.executable, "-c", program, str(m.path)], capture_output=True,
                          text=True, timeout=60)


def usage(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    return m.updater("channel", "Not a channel!")


def no_root(m: Machine) -> subprocess.CompletedProcess[str]:
    return m.updater("status")


def wrong_root(m: Machine) -> subprocess.CompletedProcess[str]:
    m.publish("1.0")
    m.trust = init_repository(m.tmp / "other").metadata_dir / "1.root.json"
    done = m.updater("init", "--repo", m.server.url, "--trust", str(m.trust),
                     "--channel", "stable")
    assert done.returncode == 0, done.stderr  # init reads nothing: it works offline
    return m.updater("check")


def unreachable(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    config = m.path / "greenlight.toml"
    config.write_text(config.read_text().replace(m.server.url.rstrip("/"),
                                                 f"http://127.0.0.1:{free_port()}"))
    return m.updater("check")


def busy(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    with locked(InstallRoot(m.path)):
        return m.updater("upgrade")


def damaged_state(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    (m.path / "state" / "quarantine.json").write_text("{ not json")
    return m.updater("status")


def hostile_bundle(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    bundle = m.tmp / "bundle.tar"
    bundle.write_bytes(b"\x00" * 10240 + b"not a tar at all" * 100)
    return m.updater("sideload", str(bundle))


def unknown_channel(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    return m.updater("channel", "nightly")


def update_available(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    m.publish("1.1")
    return m.updater("check")


def precheck_fails(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    m.publish("1.1")
    m.break_it()
    return m.updater("upgrade")


def service_fails(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    with (m.path / "greenlight.toml").open("a") as f:
        f.write(f'\n[[service]]\nname = "core"\ncommand = ["sh", "-c", "exit 3"]\n'
                f'ready = "core-port"\n\n[[check]]\nname = "core-port"\ntype = "tcp"\n'
                f'host = "127.0.0.1"\nport = {free_port()}\n')
    return m.updater("start")


def other_channel(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    m.publish("1.1", channel="beta")
    bundle = m.tmp / "beta.tar"
    build_bundle(m.repo, "beta", bundle)
    return m.updater("sideload", str(bundle))


def yanked(m: Machine) -> subprocess.CompletedProcess[str]:
    m.publish("1.0")
    m.installed("1.1")
    yank(m.repo, "stable", "1.1", "corrupts the store")
    return m.updater("check")


def held(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    m.publish("1.1", "refuse-ui-token")
    assert m.updater("upgrade").returncode == 20
    return m.updater("check")


def damaged(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    (m.path / "current" / "core" / "planted").write_text("not signed\n")
    return m.updater("verify")


def needs_newer(m: Machine) -> subprocess.CompletedProcess[str]:
    """A newer pipeline's entry, signed as it is: it needs a Greenlight this one is not."""
    from greenlight.release import current_channel_file

    from conftest import sign_entry

    m.installed()
    m.publish("1.1")
    entry = current_channel_file(m.repo, "stable")
    assert entry is not None
    sign_entry(m.repo, entry.model_copy(update={"requires": "99.0.0"}))
    return m.updater("upgrade")


def rolled_back(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    m.publish("1.1", "refuse-ui-token")
    return m.updater("upgrade")


def dead_end(m: Machine) -> subprocess.CompletedProcess[str]:
    m.installed()
    m.publish("1.1", "refuse-ui-token")
    m.break_it()
    return m.updater("upgrade", "--force")


# code -> (the situation, what the one line or the report must say)
HANGING_CHECK = r'''
[[check]]
name = "slow"
type = "command"
command = ["sh", "-c", "test ! -e '{root}/data/hang-{version}' || exec sleep 60"]
timeout = 90.0
'''


def _in_step(journal: Path, step: str) -> bool:
    try:
        steps = json.loads(journal.read_text())["steps"]
    except (OSError, ValueError, KeyError):
        return False
    return any(s["name"] == step and s["state"] == "doing" for s in steps)


def _interrupted(signum: int) -> Callable[[Machine], subprocess.CompletedProcess[str]]:
    """A signal in the middle of the post-check of 1.1: undone, recorded, the signal's exit."""

    def situation(m: Machine) -> subprocess.CompletedProcess[str]:
        m.installed("1.0")
        with (m.path / "greenlight.toml").open("a") as f:
            f.write(HANGING_CHECK)
        m.publish("1.1")
        (m.path / "data").mkdir(exist_ok=True)
        (m.path / "data" / "hang-1.1").write_text("")
        journal = m.path / "state" / "journal.json"
        updater = subprocess.Popen([str(BIN / "updater"), "upgrade", "--root", str(m.path)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not _in_step(journal, "post-check"):
            assert updater.poll() is None, updater.communicate()
            assert time.monotonic() < deadline, "the upgrade never reached its post-check"
            time.sleep(0.02)
        updater.send_signal(signum)
        out, err = updater.communicate(timeout=60)
        history = json.loads(m.updater("history", "--json").stdout)["entries"]
        assert history[-1]["event"] == "interrupted", history[-1]
        assert InstallRoot(m.path).installed_version() == "1.0" and not journal.exists()
        return subprocess.CompletedProcess(updater.args, updater.returncode, out, err)

    return situation


SCENARIOS: dict[int, tuple[Callable[[Machine], subprocess.CompletedProcess[str]], str]] = {
    0: (ok, "installed"),
    1: (internal_error, "internal error: RuntimeError: a planted bug"),
    2: (usage, "invalid channel name"),
    3: (no_root, "not an installation root"),
    4: (wrong_root, "signatures do not verify against the trusted root"),
    5: (unreachable, "cannot reach the repository at http://127.0.0.1:"),
    6: (busy, "another updater holds this root"),
    7: (damaged_state, "quarantine.json: damaged quarantine list"),
    8: (hostile_bundle, "bundle.tar: not a readable archive: data after its end marker"),
    9: (unknown_channel, "channel 'nightly' is not published"),
    10: (update_available, "1.1 available"),
    11: (precheck_fails, "the running release 1.0 fails check marker"),
    12: (service_fails, "service core of 1.0 exited during start-up"),
    13: (other_channel, "--switch-channel"),
    14: (yanked, "YANKED: corrupts the store"),
    15: (held, "held back here"),
    16: (damaged, "1.0 differs from its signed file lists: 1 extra: extra core/planted"),
    17: (needs_newer, "stable 1.1 needs Greenlight >= 99.0.0"),
    20: (rolled_back, "ROLLED BACK"),
    21: (dead_end, "ROLLBACK FAILED"),
    130: (_interrupted(signal.SIGINT), "interrupted by SIGINT during post-check of 1.1; "
                                       "undone: 1.0 is installed"),
    143: (_interrupted(signal.SIGTERM), "interrupted by SIGTERM during post-check of 1.1; "
                                        "undone: 1.0 is installed"),
}


def test_every_documented_code_has_a_scenario():
    assert set(SCENARIOS) == set(EXIT_CODES)
    listed = subprocess.run([str(BIN / "updater"), "exit-codes"], capture_output=True,
                            text=True).stdout
    readme = (Path(__file__).parent.parent / "docs" / "updater.md").read_text()
    for code in EXIT_CODES:
        assert f"\n{code:>3}  " in "\n" + listed, code
        assert f"\n| {code} | " in readme, code


@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_exit_code(code, tmp_path, builds):
    repo = init_repository(tmp_path / "repo")
    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, repo, server, builds)
        situation, says = SCENARIOS[code]
        done = situation(m)
        assert done.returncode == code, (done.stdout, done.stderr)
        output = done.stdout + done.stderr
        assert says in output, output
        assert "Traceback" not in output
        if code not in (0, 10, 14, 15, 16, 20, 21):
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("updater: "), done.stderr
        if code in (20, 21):  # the history records it, and the root is left consistent
            history = json.loads(m.updater("history", "--json").stdout)["entries"]
            assert history[-1]["event"] == {20: "rolled-back", 21: "rollback-failed"}[code]
        if os.environ.get("GREENLIGHT_SHOW_EXITS"):
            print(code, done.stderr.strip() or done.stdout.strip().splitlines()[0])


def test_a_failing_precheck_changes_nothing_and_force_is_recorded(tmp_path, builds):
    repo = init_repository(tmp_path / "repo")
    with builtin_server(repo.path) as server:
        m = Machine(tmp_path, repo, server, builds)
        m.installed()
        m.publish("1.1")
        m.break_it()
        before = sorted(p.relative_to(m.path) for p in (m.path / "releases").rglob("*"))
        current = (m.path / "current").readlink()
        blocked = m.updater("upgrade")
        assert blocked.returncode == 11
        assert sorted(p.relative_to(m.path) for p in (m.path / "releases").rglob("*")) == before
        assert (m.path / "current").readlink() == current
        assert not (m.path / "state" / "journal.json").exists()
        history = json.loads(m.updater("history", "--json").stdout)["entries"]
        assert history[-1]["event"] == "precheck-blocked"
        assert history[-1]["failed_checks"][0]["name"] == "marker"

        forced = m.updater("upgrade", "--force", "--json")
        report = json.loads(forced.stdout)
        assert forced.returncode == 0 and report["forced"] is True
        assert report["outcome"] == "upgraded" and report["to_version"] == "1.1"
        history = json.loads(m.updater("history", "--json").stdout)["entries"]
        assert [e["event"] for e in history[-3:]] == ["precheck-blocked", "precheck-forced",
                                                      "upgraded"]
