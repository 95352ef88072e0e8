"""A real systemd user manager for the tests, confined to what the test started.

`systemd --user` runs in a private mount namespace (`unshare --mount --propagation
private`) with:

- a tmpfs on `/run/systemd` holding an empty `system/` (without it the manager refuses to
  start: "the system has not been booted with systemd");
- fresh cgroup mounts (`name=systemd` v1 and cgroup2) on a tmpfs over `/sys/fs/cgroup`;
- before anything else, its own cgroup subtree: a new folder under both hierarchies, the
  starting shell written into `cgroup.procs`. Unconfined, the manager would take the root
  cgroup as its own and move every process of the machine into `init.scope`.

`systemctl --user` from outside reaches it through the private `XDG_RUNTIME_DIR` (no D-Bus).
Units go to `$XDG_RUNTIME_DIR/systemd/user/` (on the manager's search path) and stay
referenced from `default.target.wants`, or a cleanly stopped unit is unloaded and its
ExecMainCode and Result read as zeros. There is no journald: units write their output with
`StandardOutput=append:`.

Teardown asks the manager to exit, kills whatever is left in the subtree, removes the
subtree's folders bottom-up and checks that nothing of it remains: no folder, no process; the
mounts went with the namespace.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["UserManager", "user_manager"]

SYSTEMD = Path("/usr/lib/systemd/systemd")
HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))

_START = """\
set -e
mkdir -p /run/systemd
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/system
mount -t tmpfs cgroup /sys/fs/cgroup
mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
for h in systemd unified; do
  mkdir /sys/fs/cgroup/$h/$SUBTREE
  echo $$ > /sys/fs/cgroup/$h/$SUBTREE/cgroup.procs
done
exec {systemd} --user
"""


@dataclass
class UserManager:
    runtime: Path
    subtree: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def units(self) -> Path:
        return self.runtime / "systemd" / "user"

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["systemctl", "--user", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)}: {done.stderr.strip()}")
        return done

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        args = [a for p in properties for a in ("-p", p)]
        out = self.systemctl("show", *args, unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def install(self, *units: Path) -> None:
        """Copy unit files in, keep each referenced, and reload."""
        wants = self.units / "default.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        for unit in units:
            shutil.copy(unit, self.units / unit.name)
            link = wants / unit.name
            if not link.exists():
                link.symlink_to(self.units / unit.name)
        self.systemctl("daemon-reload")

    def processes(self) -> set[int]:
        """Every process in the manager's subtree, in either hierarchy."""
        pids: set[int] = set()
        for hierarchy in HIERARCHIES:
            top = hierarchy / self.subtree
            if not top.exists():
                continue
            for folder, _, files in os.walk(top):
                if "cgroup.procs" in files:
                    with suppress(OSError):
                        pids |= {int(p) for p in
                                 (Path(folder) / "cgroup.procs").read_text().split()}
        return pids

    def leftovers(self) -> list[str]:
        found = [str(h / self.subtree) for h in HIERARCHIES if (h / self.subtree).exists()]
        return found + [f"pid {p}" for p in sorted(self.processes())]


def _usable() -> str | None:
    if not SYSTEMD.exists() or shutil.which("systemctl") is None:
        return "systemd is not installed (tests/ensure_packages.sh installs it as root)"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "a private systemd user manager needs root and unshare"
    if not all((h / "cgroup.procs").exists() for h in HIERARCHIES):
        return "this machine has no name=systemd and cgroup2 hierarchies to confine it in"
    return None


def _remove(subtree: str) -> None:
    for hierarchy in HIERARCHIES:
        top = hierarchy / subtree
        if not top.exists():
            continue
        folders = sorted((Path(w[0]) for w in os.walk(top)), key=lambda p: -len(p.parts))
        for folder in folders:  # the deepest first: a cgroup folder goes once it is empty
            with suppress(FileNotFoundError):
                os.rmdir(folder)


@contextmanager
def user_manager(tmp: Path) -> Iterator[UserManager]:
    """A running `systemd --user` of this test's own, torn down without leftovers."""
    why = _usable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must run the systemd backend on a real systemd")
        pytest.skip(why)
    # The manager's bus is a Unix socket at $XDG_RUNTIME_DIR/systemd/private: a test's own
    # folder can be too deep for one (108 bytes), so its runtime folder is a short one.
    runtime = Path(tempfile.mkdtemp(prefix="gl-systemd-", dir="/tmp"))
    (runtime / "systemd" / "user").mkdir(parents=True)
    subtree = f"greenlight-test-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SUBTREE": subtree,
           "XDG_CONFIG_HOME": str(tmp / "xdg-config"), "HOME": str(tmp / "home")}
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    log = (tmp / "user-manager.log").open("wb")
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         _START.format(systemd=SYSTEMD)],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    manager = UserManager(runtime, subtree, process, env)
    try:
        deadline = time.monotonic() + 60
        while True:  # ready when it says so; a manager that died is an error, with its log
            state = manager.systemctl("show", "-p", "SystemState", "--value",
                                      check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                jobs = manager.systemctl("list-jobs", "--no-pager", check=False).stdout
                raise AssertionError(
                    f"systemd --user did not start (state {state!r}, exit "
                    f"{process.poll()}; jobs: {' '.join(jobs.split())[:500]}): "
                    + (tmp / "user-manager.log").read_text()[-2000:])
            time.sleep(0.02)
        yield manager
    finally:
        manager.systemctl("exit", check=False)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in manager.processes():  # units the manager could not stop in time
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while manager.processes() and time.monotonic() < deadline:
            time.sleep(0.02)
        _remove(subtree)
        log.close()
        shutil.rmtree(runtime, ignore_errors=True)
        left = manager.leftovers()
        assert not left, f"the user manager left {left} behind"
