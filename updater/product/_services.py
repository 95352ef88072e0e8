"""The product's services: started in the configured order, stopped in reverse.

Two backends share one interface. `ProcessBackend` (the embedded default) runs each service
under the stdlib-only `launcher.py` in its own process group, with a pid file in `state/run/`,
output in `logs/<name>.log`, and the exit status recorded when it ends. `SystemdBackend`
drives units with `systemctl` (unit files rendered from the config by `render_unit`).

Stopping is where the restart incident lived: a reader left blocked on a pipe its peer closed.
With `[stop] drain = true` (the default) services stop one at a time, UI before core: the
drain URL is called (in-flight work finishes, bounded), then the stop signal, then up to
`timeout` to exit, then a kill of the whole group. A service that exits non-zero when asked to
stop has crashed, and the transaction treats that as a failed health check.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from greenlight.channels import atomic_write, now
from greenlight.updater._errors import ConfigError, StoreError
from greenlight.updater.product._config import Config, ServiceConfig
from greenlight.updater.product._placeholders import expand, expand_command
from greenlight.updater.product._runtime import launcher_argv

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["ProcessBackend", "Restarts", "ServiceBackend", "StopOutcome", "SystemdBackend",
           "backend_for", "clean_statuses", "drain", "render_unit", "restart_clean"]


@dataclass
class StopOutcome:
    """How a service ended when it was asked to stop, judged as systemd judges it.

    A clean stop is: exit 0; death by the stop signal Greenlight sent (most services have no
    handler and simply die of SIGTERM); or a status or signal listed in the service's
    `success_exit_status`. Any other exit or signal before the kill timeout is a crash on
    stop. Killed after the timeout means stubborn, not crashed. A returncode below zero is
    death by that signal, as subprocess reports it.
    """

    service: str
    was_running: bool
    returncode: int | None
    killed: bool
    seconds: float
    clean: frozenset[int] = frozenset({0})

    @property
    def crashed(self) -> bool:
        return (self.was_running and not self.killed and self.returncode is not None
                and self.returncode not in self.clean)

    def describe(self) -> str:
        if not self.was_running:
            return f"{self.service}: was not running"
        if self.killed:
            return f"{self.service}: killed after not exiting within the stop timeout"
        took = f"in {self.seconds:.2f}s"
        if self.returncode is not None and self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            verdict = "a clean stop" if not self.crashed else "a crash on stop"
            return f"{self.service}: died of {name} {took} ({verdict})"
        return f"{self.service}: exited with status {self.returncode} {took}"


def clean_statuses(service: ServiceConfig) -> frozenset[int]:
    """The returncodes that are a clean stop for `service` (see StopOutcome)."""
    clean = {0, -int(getattr(signal, service.stop_signal))}
    for entry in service.success_exit_status:
        clean.add(entry if isinstance(entry, int) else -int(getattr(signal, entry)))
    return frozenset(clean)


def restart_clean(service: ServiceConfig) -> frozenset[int]:
    """The ends that `restart = "on-failure"` does not restart, as systemd: exit 0, death by
    SIGHUP, SIGINT, SIGTERM or SIGPIPE, and the service's `success_exit_status`."""
    clean = {0, *(-int(s) for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM,
                                    signal.SIGPIPE))}
    for entry in service.success_exit_status:
        clean.add(entry if isinstance(entry, int) else -int(getattr(signal, entry)))
    return frozenset(clean)


def _end(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"death by {signal.Signals(-returncode).name}"
        return f"death by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass(frozen=True)
class Restarts:
    """What the service's supervisor (the launcher, or systemd) did since Greenlight started
    it: how many times it restarted the service after a crash, how the last crash ended, and
    whether it gave up (a crash loop: more starts than the burst within the interval)."""

    count: int = 0
    last_returncode: int | None = None
    gave_up: bool = False

    def describe(self, service: str) -> str:
        times = f"{self.count} time{'s' if self.count != 1 else ''}"
        how = f" ({_end(self.last_returncode)})" if self.last_returncode is not None else ""
        if self.gave_up:
            return (f"service {service} is in a crash loop: it crashed again{how} after being "
                    f"restarted {times}, and its supervisor gave up")
        return f"service {service} crashed{how} and was restarted {times}"


class ServiceBackend(Protocol):
    def start(self, service: ServiceConfig, values: dict[str, str]) -> None: ...
    def is_running(self, name: str) -> bool: ...
    def pid(self, name: str) -> int | None: ...
    def stop(self, service: ServiceConfig, timeout: float, wait: bool = True) -> StopOutcome: ...
    def wait_stopped(self, service: ServiceConfig, timeout: float) -> StopOutcome: ...
    def last_exit(self, name: str) -> dict[str, object] | None: ...
    def crashed(self, name: str) -> bool:
        """Started by Greenlight and not running now, without Greenlight stopping it."""
        ...
    def restarts(self, name: str) -> Restarts:
        """What the supervisor did since Greenlight last started the service."""
        ...
    def owns(self, name: str, pid: int) -> bool | None:
        """Whether process `pid` is the service's (None: cannot tell)."""
        ...


_LAUNCHER_MARK = b"launcher.py"


def _returncode(record: dict[str, object] | None) -> int | None:
    value = None if record is None else record.get("returncode")
    return value if isinstance(value, int) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


class ProcessBackend:
    def __init__(self, root: "InstallRoot") -> None:
        self.root = root
        self.run_dir = root.state / "run"
        self.logs = root.path / "logs"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._stop_started: dict[str, float] = {}

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _exit_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.exit"

    def _restarts_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.restarts"

    def restarts(self, name: str) -> Restarts:
        lines: list[dict[str, object]] = []
        with contextlib.suppress(OSError):
            for line in self._restarts_file(name).read_text().splitlines():
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        ended = self.last_exit(name) or {}
        gave_up = bool(ended.get("gave_up"))
        last = ended.get("returncode") if gave_up else (
            lines[-1].get("returncode") if lines else None)
        return Restarts(len(lines), last if isinstance(last, int) else None, gave_up)

    def owns(self, name: str, pid: int) -> bool | None:
        leader = self.pid(name)
        if leader is None:
            return False
        try:
            return os.getpgid(pid) == leader  # the launcher leads the service's group
        except OSError:
            return None

    def _unrecorded(self, name: str) -> int | None:
        """A launcher of this service that no record names: its updater was killed between
        spawning it and writing the record. Found by the exit file on its command line,
        which is unique to this root and service."""
        needle = b"\0--exit-file\0" + os.fsencode(self._exit_file(name)) + b"\0"
        try:
            entries = os.listdir("/proc")
        except OSError:
            return None
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline and _alive(int(entry)):
                return int(entry)
        return None

    def pid(self, name: str) -> int | None:
        try:
            record = json.loads(self._pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return self._unrecorded(name)
        pid = int(record["pid"])
        child = self._children.get(name)
        if child is not None and child.pid == pid:
            return pid if child.poll() is None else None
        if not _alive(pid):
            return self._unrecorded(name)
        try:  # a recycled pid is not our service
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if _LAUNCHER_MARK not in cmdline and b"--greenlight-launch" not in cmdline:
                return None
        except OSError:
            pass
        return pid

    def is_running(self, name: str) -> bool:
        return self.pid(name) is not None

    def crashed(self, name: str) -> bool:
        # A stop Greenlight makes removes the record; a service that died keeps it.
        return self._pid_file(name).exists() and not self.is_running(name)

    def last_exit(self, name: str) -> dict[str, object] | None:
        try:
            return dict(json.loads(self._exit_file(name).read_text()))
        except (FileNotFoundError, ValueError):
            return None

    def start(self, service: ServiceConfig, values: dict[str, str]) -> None:
        """Start the service under the launcher; return once the launcher forwards signals.

        Raises:
            StoreError: the command or its launcher could not be started.
        """
        if self.is_running(service.name):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._exit_file(service.name).unlink(missing_ok=True)
        self._restarts_file(service.name).unlink(missing_ok=True)
        ready = self.run_dir / f"{service.name}.ready"
        ready.unlink(missing_ok=True)
        command = expand_command(service.command, values)
        workdir = expand(service.workdir, values)
        env = {**os.environ, **{k: expand(v, values) for k, v in service.env.items()}}
        log_path = self.logs / f"{service.name}.log"
        try:
            log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                                    os.O_NOFOLLOW, 0o640), "ab")
        except OSError as e:
            raise StoreError(f"{log_path}: cannot open the service's log: {e.strerror} "
                             "(a symlink there is refused)") from None
        try:
            child = subprocess.Popen(
                [*launcher_argv(), "--exit-file", str(self._exit_file(service.name)),
                 "--ready-file", str(ready), "--restart", service.restart,
                 "--restart-delay", str(service.restart_delay),
                 "--burst", str(service.restart_burst),
                 "--interval", str(service.restart_interval),
                 "--clean", ",".join(str(c) for c in sorted(restart_clean(service))),
                 "--restarts-file", str(self._restarts_file(service.name)), "--", *command],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
        except OSError as e:
            raise StoreError(f"service {service.name}: cannot start {command[0]} in {workdir}: "
                             f"{e.strerror}: {e.filename}") from None
        finally:
            log.close()
        self._children[service.name] = child
        # The launcher says when its signal handlers are in place and the service started:
        # a stop that comes sooner would kill the launcher instead of being forwarded.
        while not ready.exists() and child.poll() is None:
            time.sleep(0.005)
        ready.unlink(missing_ok=True)
        record = {"pid": child.pid, "release": values.get("version"), "started_at": str(now()),
                  "command": command}
        atomic_write(self._pid_file(service.name), json.dumps(record).encode())

    def stop(self, service: ServiceConfig, timeout: float, wait: bool = True) -> StopOutcome:
        """Signal the service; with `wait`, bound its exit by `timeout`, then kill it."""
        started = time.monotonic()
        pid = self.pid(service.name)
        if pid is None:
            return StopOutcome(service.name, False, None, False, 0.0, clean_statuses(service))
        self._stop_started[service.name] = started
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, getattr(signal, service.stop_signal))
        if not wait:
            return StopOutcome(service.name, True, None, False, 0.0, clean_statuses(service))
        return self.wait_stopped(service, timeout)

    def wait_stopped(self, service: ServiceConfig, timeout: float) -> StopOutcome:
        started = self._stop_started.pop(service.name, time.monotonic())
        pid = self.pid(service.name)
        deadline = started + timeout
        while pid is not None and self.is_running(service.name) and time.monotonic() < deadline:
            time.sleep(0.02)
        killed = False
        if pid is not None and self.is_running(service.name):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            killed = True
            while self.is_running(service.name):
                time.sleep(0.02)
        child = self._children.pop(service.name, None)
        if child is not None:
            child.wait()
        exit_record = self.last_exit(service.name)
        returncode = _returncode(exit_record)
        self._pid_file(service.name).unlink(missing_ok=True)
        return StopOutcome(service.name, True, returncode, killed, time.monotonic() - started,
                           clean_statuses(service))


class SystemdBackend:
    """Services as systemd units; systemd does the signalling, timeouts and restarts."""

    def __init__(self, root: "InstallRoot", systemctl: str = "systemctl",
                 services: list[ServiceConfig] | None = None, user: bool = False) -> None:
        self.root = root
        self.systemctl = systemctl
        self.user = user
        self._units = {s.name: self.unit(s) for s in services or []}

    def _unit_of(self, name: str) -> str:
        """The unit of the service `name`: its configured `unit`, else greenlight-NAME."""
        return self._units.get(name, f"greenlight-{name}.service")

    @staticmethod
    def unit(service: ServiceConfig) -> str:
        return service.unit or f"greenlight-{service.name}.service"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            scope = ["--user"] if self.user else []
            return subprocess.run([self.systemctl, *scope, *args], capture_output=True,
                                  text=True, timeout=120)
        except FileNotFoundError:
            raise ConfigError(
                "backend = \"systemd\" but systemctl is not on this machine"
            ) from None

    def start(self, service: ServiceConfig, values: dict[str, str]) -> None:
        # A fresh start: the restart counter and the start limit begin again, as with the
        # launcher (a unit that hit its limit would refuse the start).
        self._run("reset-failed", self.unit(service))
        done = self._run("start", self.unit(service))
        if done.returncode != 0:
            raise StoreError(f"systemctl start {self.unit(service)}: {done.stderr.strip()}")

    def is_running(self, name: str) -> bool:
        return self._run("is-active", "--quiet", self._unit_of(name)).returncode == 0

    def crashed(self, name: str) -> bool:
        # systemd's own word: a unit that stopped without being asked to is "failed".
        return self._run("is-failed", "--quiet", self._unit_of(name)).returncode == 0

    def _show(self, name: str, *properties: str) -> dict[str, str]:
        args = [a for p in properties for a in ("-p", p)]
        done = self._run("show", *args, self._unit_of(name))
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def restarts(self, name: str) -> Restarts:
        fields = self._show(name, "NRestarts", "Result", "ActiveState")
        count = fields.get("NRestarts", "0")
        ended = self.last_exit(name)
        # Given up: the start limit refused a restart. systemd 252 leaves Result at the
        # crash's (exit-code, signal) and the unit "failed" with restarts behind it.
        gave_up = fields.get("Result") == "start-limit-hit" or (
            fields.get("ActiveState") == "failed" and count not in ("", "0"))
        # systemd forgets how the main process ended once it restarts it: only a unit left
        # down still says how its last crash ended.
        last = _returncode(ended) if gave_up else None
        return Restarts(int(count) if count.isdigit() else 0, last, gave_up)

    def owns(self, name: str, pid: int) -> bool | None:
        group = self._show(name, "ControlGroup").get("ControlGroup", "")
        if not group:
            return False
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        return any(line.split(":", 2)[-1] == group or
                   line.split(":", 2)[-1].startswith(group + "/") for line in lines)

    def pid(self, name: str) -> int | None:
        done = self._run("show", "-p", "MainPID", "--value", self._unit_of(name))
        value = done.stdout.strip()
        return int(value) if value.isdigit() and value != "0" else None

    def last_exit(self, name: str) -> dict[str, object] | None:
        """The main process's end: ExecMainCode 1 (exited) with its status, or 2/3 (killed,
        dumped) with the signal, as a negative returncode like subprocess's; and the unit's
        Result ("timeout" when systemd killed it after TimeoutStopSec)."""
        done = self._run("show", "-p", "ExecMainCode", "-p", "ExecMainStatus", "-p", "Result",
                         self._unit_of(name))
        fields = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        status = fields.get("ExecMainStatus", "")
        if not status.lstrip("-").isdigit():
            return None
        killed = fields.get("ExecMainCode") in ("2", "3")
        return {"returncode": -int(status) if killed else int(status),
                "code": fields.get("ExecMainCode"), "result": fields.get("Result")}

    def stop(self, service: ServiceConfig, timeout: float, wait: bool = True) -> StopOutcome:
        started = time.monotonic()
        was_running = self._run("is-active", "--quiet", self.unit(service)).returncode == 0
        args = ["stop"] if wait else ["stop", "--no-block"]
        self._run(*args, self.unit(service))
        status = self.last_exit(service.name) if wait else None
        returncode = _returncode(status)
        # Killed by systemd after TimeoutStopSec: stubborn, not crashed, as with processes.
        stubborn = status is not None and status.get("result") == "timeout"
        return StopOutcome(service.name, was_running, returncode, stubborn,
                           time.monotonic() - started, clean_statuses(service))

    def wait_stopped(self, service: ServiceConfig, timeout: float) -> StopOutcome:
        return self.stop(service, timeout, wait=True)


UNIT_TEMPLATE = """\
[Unit]
Description=Greenlight-managed service {name}
After=network.target {after}
StartLimitIntervalSec={limit_interval}
StartLimitBurst={limit_burst}

[Service]
Type=simple
WorkingDirectory={workdir}
ExecStart={exec_start}
KillSignal={signal}
TimeoutStopSec={timeout}
Restart={restart}
RestartSec={restart_delay}
StandardOutput=append:{log}
StandardError=inherit
{environment}
[Install]
WantedBy={wanted_by}
"""


def render_unit(service: ServiceConfig, values: dict[str, str], after: str = "",
                timeout: float = 10.0, user: bool = False) -> str:
    """A systemd unit for `service`, its release_dir through the root's `current` link; its
    output appended to `logs/<name>.log` as with the process backend, and restarted with the
    service's policy and limits."""
    import shlex

    environment = "".join(
        f"Environment={shlex.quote(f'{k}={expand(v, values)}')}\n" for k, v in service.env.items()
    )
    return UNIT_TEMPLATE.format(
        name=service.name,
        after=after,
        workdir=expand(service.workdir, values),
        exec_start=" ".join(shlex.quote(p) for p in expand_command(service.command, values)),
        signal=service.stop_signal,
        timeout=max(1, round(timeout)),
        restart=service.restart,
        restart_delay=f"{service.restart_delay:g}s",
        limit_interval=f"{service.restart_interval:g}s",
        limit_burst=service.restart_burst,
        log=str(Path(values.get("root", ".")) / "logs" / f"{service.name}.log"),
        wanted_by="default.target" if user else "multi-user.target",
        environment=environment + (
            "SuccessExitStatus=" + " ".join(str(s) for s in service.success_exit_status) + "\n"
            if service.success_exit_status else ""),
    )


def backend_for(root: "InstallRoot", config: Config) -> ServiceBackend:
    if config.backend == "systemd":
        return SystemdBackend(root, services=config.service,
                              user=config.systemd_scope == "user")
    return ProcessBackend(root)


def drain(service: ServiceConfig, values: dict[str, str], timeout: float) -> str | None:
    """Ask the service to finish in-flight work; None when it did, else what happened."""
    if service.drain_url is None:
        return None
    import httpx

    try:
        response = httpx.get(expand(service.drain_url, values), timeout=timeout + 1)
        return None if response.status_code < 400 else f"drain answered HTTP {response.status_code}"
    except httpx.HTTPError as e:
        return f"drain failed: {type(e).__name__}"
