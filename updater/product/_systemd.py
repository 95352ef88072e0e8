"""The systemd backend: the product's services as units, driven with `systemctl` (system or
`--user` scope), and the units rendered from the config. systemd does the signalling, the
stop timeouts and the restarts (Restart=, RestartSec=, the start limit); this backend reads
back what it did (ExecMainCode/ExecMainStatus, Result, NRestarts, ControlGroup).
"""

import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from greenlight.channels import (
    AGENT_UNIT,
    CONTROL,
    GATE_UNIT,
    Config,
    ServiceConfig,
    SocketConfig,
    atomic_write,
    check_folder,
    check_program,
    expand,
    is_unit_file_name,
    unit_of,
)
from greenlight.updater._errors import ConfigError, StoreError
from greenlight.updater.product._environment import DEFAULT_PATH, identity
from greenlight.updater.product._placeholders import expand_command
from greenlight.updater.product._services import (
    Restarts,
    StopOutcome,
    clean_statuses,
    returncode_of,
)

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["AGENT_UNIT", "GATE_UNIT", "MARK", "UNITS_RECORD", "SystemdBackend",
           "escape_specifiers", "record_units", "recorded_units", "render_gate", "render_socket",
           "render_unit", "render_units", "socket_unit", "systemd_quote"]

UNITS_RECORD = "systemd-units.json"
"""In the root's state: the folder `updater systemd-units` wrote the product's units into,
and their names, so that each start makes them those of the release it starts."""


class SystemdBackend:
    """Services as systemd units; systemd does the signalling, timeouts and restarts."""

    def __init__(self, root: "InstallRoot", systemctl: str = "systemctl",
                 services: list[ServiceConfig] | None = None, user: bool = False) -> None:
        self.root = root
        self.systemctl = systemctl
        self.user = user
        self._units = {s.name: self.unit(s) for s in services or []}

    def know(self, services: list[ServiceConfig]) -> None:
        """Name `services`' units (a release's, from its manifest, under greenlight.toml):
        asked about a service by name, the backend asks systemd about its unit."""
        self._units.update({s.name: self.unit(s) for s in services})

    def _unit_of(self, name: str) -> str:
        """The unit of the service `name`: its configured `unit`, else greenlight-NAME."""
        return self._units.get(name, unit_of(name, None))

    def foreign(self, folder: Path, names: list[str]) -> list[str]:
        """Of `names`, about to be written into `folder` for the first time, those that are
        not Greenlight's to write: a file there that it did not write (no `MARK` line), or a
        unit systemd already loads from another folder (a vendor's `sshd.service`, which a
        file here would mask)."""
        found = []
        for name in names:
            text = _text_of(folder / name)
            if text is not None and not text.startswith(MARK):
                found.append(name)
                continue
            try:
                fragment = self._run("show", "-p", "FragmentPath", "--value",
                                     name).stdout.strip()
            except ConfigError:  # no systemctl here: no unit loads from anywhere
                fragment = ""
            if fragment and Path(fragment).parent != folder:
                found.append(name)
        return found

    @staticmethod
    def unit(service: ServiceConfig) -> str:
        return unit_of(service.name, service.unit)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            scope = ["--user"] if self.user else []
            return subprocess.run([self.systemctl, *scope, *args], capture_output=True,
                                  text=True, timeout=120)
        except FileNotFoundError:
            raise ConfigError(
                "backend = \"systemd\" but systemctl is not on this machine"
            ) from None

    def start(self, service: ServiceConfig, values: dict[str, str],
              listen: list[tuple[str, socket.socket]] | None = None) -> None:
        """Start the service's unit (its held sockets are systemd's, not `listen`).

        Raises:
            StoreError: systemctl could not start the unit.
            ConfigError: systemctl is not on this machine.
        """
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
        last = returncode_of(ended) if gave_up else None
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
        returncode = returncode_of(status)
        # Killed by systemd after TimeoutStopSec: stubborn, not crashed, as with processes.
        stubborn = status is not None and status.get("result") == "timeout"
        return StopOutcome(service.name, was_running, returncode, stubborn,
                           time.monotonic() - started, clean_statuses(service))

    def wait_stopped(self, service: ServiceConfig, timeout: float) -> StopOutcome:
        return self.stop(service, timeout, wait=True)

    def follow(self, units: dict[str, str]) -> list[str]:
        """Make the product's unit files those of the release about to start (`units`, from
        `render_units`): each one that differs is rewritten, each one the previous release had
        and this one has not is disabled and removed, a changed or removed socket unit is
        stopped first (its service is stopped: the next start binds it anew), new units are
        enabled when the product's were, and systemd reloads. Only in the folder `updater
        systemd-units` wrote to, as recorded in `UNITS_RECORD`; nothing without that record.
        Returns the units changed.

        Raises:
            StoreError: the record or a unit file could not be read or written.
        """
        recorded = recorded_units(self.root)
        if recorded is None:
            return []
        folder, before = recorded
        record = self.root.state / UNITS_RECORD
        # Only plain unit names, each a file of the recorded folder: a name with a folder in
        # it (a hostile manifest's, or a record changed by hand) is never joined to a path.
        strange = sorted(n for n in [*units, *before]
                         if not isinstance(n, str) or not is_unit_file_name(n))
        if strange or not folder.is_absolute():
            raise StoreError(f"{record}: {strange[0]!r} is not a unit name; nothing written "
                             "or removed" if strange else
                             f"{record}: {str(folder)!r} is not an absolute folder; run "
                             "'updater systemd-units' again")
        try:
            changed = [n for n, text in units.items() if _text_of(folder / n) != text]
            gone = sorted(before - set(units))
            if not changed and not gone:
                return []
            foreign = self.foreign(folder, [n for n in changed if n not in before])
            if foreign:
                raise StoreError(f"{folder / foreign[0]}: a unit Greenlight did not write "
                                 "(or one systemd loads from elsewhere); the release's units "
                                 "were not written: give its service a unit of its own")
            # enabled at boot, as the admin left the product's units (or the agent's)
            enabled = any(self._run("is-enabled", "--quiet", n).returncode == 0
                          for n in [*sorted(before), AGENT_UNIT] if n.endswith(".service"))
            for name in [*changed, *gone]:
                if name.endswith(".socket"):
                    self._run("stop", name)
            if enabled and gone:
                self._run("disable", *gone)
            for name in changed:
                atomic_write(folder / name, units[name].encode())
            for name in gone:
                (folder / name).unlink(missing_ok=True)
            record_units(self.root, folder, list(units))
        except OSError as e:
            raise StoreError(f"{folder}: cannot write the release's systemd units: "
                             f"{e.strerror or e}") from None
        self._run("daemon-reload")
        new = [n for n in changed if n not in before and n != GATE_UNIT]
        if enabled and new:
            self._run("enable", *new)
        return [*changed, *gone]


def recorded_units(root: "InstallRoot") -> tuple[Path, set[str]] | None:
    """The folder `updater systemd-units` wrote the product's units into, and their names
    (`UNITS_RECORD`); None before it ran.

    Raises:
        StoreError: the record is unreadable.
    """
    record = root.state / UNITS_RECORD
    try:
        written = json.loads(record.read_text())
        return Path(written["dir"]), set(written["units"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{record}: unreadable ({e}); run 'updater systemd-units' "
                         "again") from None


def record_units(root: "InstallRoot", folder: Path, names: list[str]) -> None:
    """Record (`UNITS_RECORD`) that the product's units `names` are in `folder`.

    Raises:
        OSError: the record could not be written.
    """
    root.state.mkdir(parents=True, exist_ok=True)
    atomic_write(root.state / UNITS_RECORD, json.dumps(
        {"dir": str(folder), "units": sorted(names)}, indent=1).encode())


def _text_of(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return ""  # not a unit Greenlight wrote


MARK = "# Written by Greenlight from the release's manifest: replaced at each start.\n"
"""The first line of every unit file Greenlight writes: it overwrites or removes no other."""

UNIT_TEMPLATE = MARK + """\
[Unit]
Description=Greenlight-managed service {name}
After=network.target {after}
{requires}StartLimitIntervalSec={limit_interval}
StartLimitBurst={limit_burst}

[Service]
Type={type}
{notify}WorkingDirectory={workdir}
ExecStart={exec_start}
KillSignal={signal}
TimeoutStopSec={timeout}
TimeoutStartSec={start_timeout}
Restart={restart}
RestartSec={restart_delay}
StandardOutput=append:{log}
StandardError=inherit
{sockets}{environment}
[Install]
WantedBy={wanted_by}
"""


def escape_specifiers(text: str) -> str:
    """`text` for a unit file setting that expands systemd's `%` specifiers and nothing
    else (WorkingDirectory=, ListenStream=, StandardOutput=append:), taken as it is.

    Raises:
        ValueError: it ends with a backslash, which would join the unit file's next line
            to this setting.
    """
    if text.endswith("\\"):
        raise ValueError(f"{text!r} ends with a backslash, which continues a unit file's "
                         "line")
    return text.replace("%", "%%")


_PLAIN = re.compile(r"[A-Za-z0-9_+=:,./-]+")


def systemd_quote(word: str, expand_variables: bool = True) -> str:
    """`word` as one double-quoted word systemd reads back as it is: backslashes and quotes
    escaped, `%` doubled (specifiers), and `$` doubled where systemd expands variables
    (ExecStart=, not Environment=). A plain word (letters, digits, `_+=:,./-`) is written
    as it is."""
    if _PLAIN.fullmatch(word):
        return word
    if word == ";":  # a lone ";" separates commands, quoted or not
        return "\\;"
    quoted = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if expand_variables:
        quoted = quoted.replace("$", "$$")
    return f'"{quoted}"'


def render_unit(service: ServiceConfig, values: dict[str, str], after: str = "",
                timeout: float = 10.0, user: bool = False,
                sockets: list[SocketConfig] | None = None) -> str:
    """A systemd unit for `service`, its release_dir through the root's `current` link; its
    output appended to `logs/<name>.log` as with the process backend, and restarted with the
    service's policy and limits. Its held `sockets` (see `render_socket`) are passed to it by
    systemd, in order (`Sockets=`), and started with it.

    Every word is written so that systemd reads back exactly the argv, environment and folder
    the process backend uses (`systemd_quote`: no specifier, variable or escape of systemd's
    applies); the configuration's patterns keep every directive on its own line.

    Raises:
        ConfigError: a filled placeholder made the program or the folder unusable.
    """
    held = [socket_unit(s) for s in sockets or [] if s.service == service.name]
    argv = expand_command(service.command, values)
    workdir = expand(service.workdir, values)
    try:
        check_program(argv[0])
    except ValueError as e:
        raise ConfigError(f"service {service.name!r}: {e}") from None
    for word in [*argv, workdir, *(expand(v, values) for v in service.env.values())]:
        _one_line(word)
    try:
        check_folder(workdir)
        settings = {"workdir": escape_specifiers(workdir), "log": escape_specifiers(
            str(Path(values.get("root", ".")) / "logs" / f"{service.name}.log"))}
    except ValueError as e:
        raise ConfigError(f"service {service.name!r}: {e}") from None
    # The minimum the process backend gives (systemd sets no HOME, USER, ... without User=;
    # LANG is the system's), then the service's own, which may override it.
    declared = {"PATH": DEFAULT_PATH, **identity(),
                **{k: expand(v, values) for k, v in service.env.items()}}
    environment = "".join(
        f"Environment={systemd_quote(f'{k}={v}', expand_variables=False)}\n"
        for k, v in declared.items())
    return UNIT_TEMPLATE.format(
        name=service.name,
        type="notify" if service.notify else "simple",
        notify=("NotifyAccess=all\n" if service.notify or service.watchdog else "") + (
            f"WatchdogSec={service.watchdog:g}s\n" if service.watchdog else ""),
        after=" ".join([after, *held]).strip(),
        requires=f"Requires={' '.join(held)}\n" if held else "",
        sockets=f"Sockets={' '.join(held)}\n" if held else "",
        workdir=settings["workdir"],
        exec_start=" ".join(systemd_quote(p) for p in argv),
        signal=service.stop_signal,
        timeout=max(1, round(timeout)),
        start_timeout=f"{service.start_timeout:g}s",
        restart=service.restart,
        restart_delay=f"{service.restart_delay:g}s",
        limit_interval=f"{service.restart_interval:g}s",
        limit_burst=service.restart_burst,
        log=settings["log"],
        wanted_by="default.target" if user else "multi-user.target",
        environment=environment + (
            "SuccessExitStatus=" + " ".join(str(s) for s in service.success_exit_status) + "\n"
            if service.success_exit_status else ""),
    )


def socket_unit(sock: SocketConfig) -> str:
    return f"greenlight-{sock.service}-{sock.name}.socket"


def render_socket(sock: SocketConfig, values: dict[str, str]) -> str:
    """A `.socket` unit holding `sock` (systemd binds it and keeps it open while the service
    restarts), named for LISTEN_FDNAMES, triggering only the gate (`GATE_UNIT`).

    Raises:
        ConfigError: a filled placeholder made the listen address unusable.
    """
    listen = "ListenDatagram" if sock.kind == "datagram" else "ListenStream"
    try:
        address = escape_specifiers(_one_line(expand(sock.listen, values)))
    except ValueError as e:
        raise ConfigError(f"socket {sock.name!r}: {e}") from None
    return (f"{MARK}[Unit]\nDescription=Greenlight-held socket {sock.name} of {sock.service}\n\n"
            f"[Socket]\n{listen}={address}\n"
            f"FileDescriptorName={sock.name}\nService={GATE_UNIT}\n"
            + (f"Backlog={sock.backlog}\n" if sock.kind == "stream" else "")
            + "\n[Install]\nWantedBy=sockets.target\n")


def _one_line(text: str) -> str:
    """`text`, which goes into a unit file, on one line.

    Raises:
        ConfigError: it holds a control character (a filled placeholder brought it).
    """
    if CONTROL.search(text):
        raise ConfigError(f"{text!r} holds a control character; it cannot go into a unit "
                          "file")
    return text


def render_gate() -> str:
    return (f"{MARK}[Unit]\nDescription=Greenlight: traffic on held sockets waits for the "
            "product's services\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n"
            "RemainAfterExit=yes\n")


def render_units(config: Config, values: dict[str, str]) -> dict[str, str]:
    """The product's units for `config` (a release's, under greenlight.toml), by file name:
    a `.socket` unit per held socket and the gate, then a service unit per service, each
    after the one before it.

    Raises:
        ConfigError: a name that makes no systemd unit name, or a filled placeholder that
            made a program, folder or listen address unusable.
    """
    units: dict[str, str] = {}
    names = [*map(socket_unit, config.socket), *map(SystemdBackend.unit, config.service)]
    for name in names:
        if not is_unit_file_name(name):
            raise ConfigError(f"{name!r} is not a systemd unit name (NAME.service)")
    for sock in config.socket:
        units[socket_unit(sock)] = render_socket(sock, values)
    if config.socket:
        units[GATE_UNIT] = render_gate()
    previous = ""
    for service in config.service:
        unit = SystemdBackend.unit(service)
        units[unit] = render_unit(service, values, after=previous, timeout=config.stop.timeout,
                                  user=config.systemd_scope == "user", sockets=config.socket)
        previous = unit
    return units
