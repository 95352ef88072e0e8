"""The product's services: started in the configured order, stopped in reverse.

Two backends share one interface. `ProcessBackend` (the embedded default) runs each service
under the stdlib-only `launcher.py` in its own process group, with a pid file in `state/run/`,
output in `logs/<name>.log`, and the exit status recorded when it ends, in the environment a
systemd unit would have (`_environment.py`), not the updater's. `SystemdBackend`
drives units with `systemctl` (`_systemd.py`, with the unit files rendered from the config).

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
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from greenlight.channels import ServiceConfig, atomic_write, expand, now
from greenlight.updater._errors import StoreError
from greenlight.updater.product._environment import service_environment
from greenlight.updater.product._placeholders import expand_command
from greenlight.updater.product._runtime import launcher_argv

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["ProcessBackend", "Restarts", "ServiceBackend", "StopOutcome", "clean_statuses",
           "drain", "restart_clean", "returncode_of", "stop_slot"]


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
    watchdog: bool = False
    """the last end was its watchdog's: it stopped sending WATCHDOG=1 in time"""

    def describe(self, service: str) -> str:
        times = f"{self.count} time{'s' if self.count != 1 else ''}"
        ends = [_end(self.last_returncode)] if self.last_returncode is not None else []
        if self.watchdog:
            ends.insert(0, "its watchdog ran out: no WATCHDOG=1 in time")
        how = f" ({', '.join(ends)})" if ends else ""
        if self.gave_up:
            return (f"service {service} is in a crash loop: it crashed again{how} after being "
                    f"restarted {times}, and its supervisor gave up")
        return f"service {service} crashed{how} and was restarted {times}"


class ServiceBackend(Protocol):
    def start(self, service: ServiceConfig, values: dict[str, str],
              listen: list[tuple[str, socket.socket]] | None = None) -> None:
        """Start `service`, passing it `listen` (its held sockets, each with its name)."""
        ...
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


def returncode_of(record: dict[str, object] | None) -> int | None:
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
    def __init__(self, root: "InstallRoot", slot: str = "") -> None:
        """`slot` "preflight": preflight's copies of the services, with records and logs of
        their own (state/run/preflight/, logs/preflight/); "next": a handover's successors,
        started beside the running services (records in state/run/next/, then adopted)."""
        self.root = root
        self.run_dir = root.state / "run" / slot
        self.logs = root.path / "logs" / ("preflight" if slot == "preflight" else "")
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._stop_started: dict[str, float] = {}
        # A successor's files are its own (name-NONCE.exit): the launcher it replaces was
        # itself a successor once, and keeps writing the files its command line names.
        self._nonce = os.urandom(4).hex() if slot == "next" else ""
        self.log_limits = (10 * 1024 * 1024, 3)
        """`[logs] max_size` and `keep`: each service's log is bounded by its launcher"""

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _exit_file(self, name: str) -> Path:
        return self.run_dir / f"{name}{'-' + self._nonce if self._nonce else ''}.exit"

    def _restarts_file(self, name: str) -> Path:
        return self.run_dir / f"{name}{'-' + self._nonce if self._nonce else ''}.restarts"

    def _notify_file(self, name: str) -> Path:
        return self.run_dir / f"{name}{'-' + self._nonce if self._nonce else ''}.notify"

    def _recorded(self, name: str, key: str, default: Path) -> Path:
        """Where the running launcher of `name` writes (its record says: a service adopted
        from a handover's slot keeps the files its launcher was started with)."""
        try:
            where = json.loads(self._pid_file(name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return default
        run = self.root.state / "run"
        if isinstance(where, str) and Path(where).parent in (run, run / "next"):
            return Path(where)
        return default

    def restarts(self, name: str) -> Restarts:
        lines: list[dict[str, object]] = []
        with contextlib.suppress(OSError):
            for line in self._recorded(name, "restarts_file",
                                   self._restarts_file(name)).read_text().splitlines():
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        ended = self.last_exit(name) or {}
        gave_up = bool(ended.get("gave_up"))
        final = ended if gave_up else lines[-1] if lines else {}
        last = final.get("returncode")
        return Restarts(len(lines), last if isinstance(last, int) else None, gave_up,
                        bool(final.get("watchdog")))

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
        needle = b"\0--exit-file\0" + (os.fsencode(self.run_dir / f"{name}-") if self._nonce
                                        else os.fsencode(self._exit_file(name)) + b"\0")
        try:
            entries = os.listdir("/proc")
        except OSError:
            return None
        adopted = None
        if self.run_dir != self.root.state / "run":  # a slot: not the service it replaced
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                main = self.root.state / "run" / f"{name}.json"
                adopted = int(json.loads(main.read_text())["pid"])
        for entry in entries:
            if not entry.isdigit() or int(entry) == adopted:
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
            path = self._recorded(name, "exit_file", self._exit_file(name))
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return None

    def start(self, service: ServiceConfig, values: dict[str, str],
              listen: list[tuple[str, socket.socket]] | None = None,
              notify: bool = False) -> None:
        """Start the service under the launcher; return once the launcher forwards signals.
        The launcher passes `listen` on to it by systemd's protocol (see launcher.py). With
        `notify` (or when the service is `notify`, has a watchdog or is given sockets), its
        launcher gives it a NOTIFY_SOCKET for its life, across restarts (`wait_notified`).

        Raises:
            StoreError: the command or its launcher could not be started.
        """
        if self.is_running(service.name):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._exit_file(service.name).unlink(missing_ok=True)
        self._restarts_file(service.name).unlink(missing_ok=True)
        self._notify_file(service.name).unlink(missing_ok=True)
        ready = self.run_dir / f"{service.name}.ready"
        ready.unlink(missing_ok=True)
        command = expand_command(service.command, values)
        workdir = expand(service.workdir, values)
        env = service_environment(service, values)  # never the updater's own (see there)
        notifying = ["--notify-file", str(self._notify_file(service.name)),
                     "--type", "notify" if service.notify else "simple",
                     "--watchdog", str(service.watchdog)
                     ] if notify or service.notify or service.watchdog or listen else []
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
                 "--restarts-file", str(self._restarts_file(service.name)),
                 "--log-file", str(log_path), "--log-max", str(self.log_limits[0]),
                 "--log-keep", str(self.log_limits[1]),
                 "--record", str(self.root.state / "run" / f"{service.name}.json"),
                 *notifying, *_listen_args(listen or []), "--", *command],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, pass_fds=[s.fileno() for _, s in listen or []],
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
                  "command": command, "exit_file": str(self._exit_file(service.name)),
                  "restarts_file": str(self._restarts_file(service.name)),
                  **({"notify_file": str(self._notify_file(service.name))} if notifying else {})}
        atomic_write(self._pid_file(service.name), json.dumps(record).encode())

    def notified(self, name: str) -> dict[str, object] | None:
        """What the service said on its NOTIFY_SOCKET since its launcher last started it (READY,
        STOPPING, STATUS, its watchdog; see launcher.py), or None: it was given none."""
        try:
            path = self._recorded(name, "notify_file", self._notify_file(name))
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def wait_notified(self, name: str, timeout: float) -> str | None:
        """Until the service started with a NOTIFY_SOCKET says READY=1 on it (None), or why
        not: it ended, or did not say it within `timeout`. Its launcher reads the socket and
        checks who sent each message (launcher.py)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running(name):
                return "it exited before it said READY=1"
            said = self.notified(name)
            if said is not None and said.get("ready"):
                return None
            time.sleep(0.01)
        return f"it did not say READY=1 within {timeout:g}s"

    def adopt(self, name: str, successor: "ProcessBackend") -> None:
        """The successor's service of `name` (a handover's, in its slot) becomes the service:
        its record replaces the predecessor's, in one rename."""
        os.replace(successor._pid_file(name), self._pid_file(name))
        child = successor._children.pop(name, None)
        if child is not None:
            self._children[name] = child

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
        returncode = returncode_of(exit_record)
        self._pid_file(service.name).unlink(missing_ok=True)
        return StopOutcome(service.name, True, returncode, killed, time.monotonic() - started,
                           clean_statuses(service))


def stop_slot(root: "InstallRoot", slot: str, names: list[str] | None = None) -> list[str]:
    """Stop every service of a slot (preflight's shadows, a handover's successors) that an
    interrupted updater left running: by its record, or by its launcher's command line when
    it was killed before it wrote one (of the services `names`); then remove the records.
    Returns those it stopped."""
    backend = ProcessBackend(root, slot=slot)
    stopped = []
    recorded = [r.stem for r in backend.run_dir.glob("*.json") if r.stem != "supervised"]
    for name in sorted({*recorded, *(names or [])}):
        with contextlib.suppress(ValueError, OSError):
            # Its name is what a stop needs; the command is never run (any valid one does).
            service = ServiceConfig(name=name, command=["true"])
            if backend.stop(service, 10.0).was_running:
                stopped.append(name)
    kept = set()  # what the services' own launchers (adopted from a handover) write to
    for record in (root.state / "run").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fields = json.loads(record.read_text())
            kept |= {fields.get(k) for k in ("exit_file", "restarts_file", "notify_file")}
    for leftover in backend.run_dir.glob("*") if backend.run_dir.is_dir() else ():
        if (leftover.is_file() and str(leftover) not in kept
                and leftover.suffix in (".json", ".exit", ".restarts", ".ready", ".notify")):
            leftover.unlink(missing_ok=True)
    return stopped


def _listen_args(listen: list[tuple[str, socket.socket]]) -> list[str]:
    if not listen:
        return []
    return ["--listen-fds", ",".join(str(s.fileno()) for _, s in listen),
            "--listen-names", ",".join(name for name, _ in listen)]


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
