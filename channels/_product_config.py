"""greenlight.toml: the repository, the channel, the product's services and health checks.

Read with tomllib, validated by pydantic; an invalid file gives one line naming the file and
the field. Example:

    channel = "stable"
    keep_releases = 3

    [repository]
    url = "http://127.0.0.1:8080/"

    [[service]]                    # started in this order, stopped in reverse
    name = "core"
    command = ["{python}", "{release_dir}/core/core.py", "--port", "18080"]
    ready = "core-ping"            # a check that must pass before the next service starts

    [[check]]
    name = "core-ping"
    type = "http"
    url = "http://127.0.0.1:18080/api/ping"

Placeholders in commands, URLs and check fields: {root}, {release_dir}, {version}, {python}.
The checks' models are in `_product_checks`. The client reads greenlight.toml with `Config`;
the pipeline checks a product's configuration with the same models (`check_product`,
`with_machine_parts`).
"""

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from greenlight.channels._cohort import LABEL_PATTERN
from greenlight.channels._errors import ConfigError
from greenlight.channels._invalid import describe_validation
from greenlight.channels._paths import check_channel_name
from greenlight.channels._placeholders import BUILT_IN, placeholders
from greenlight.channels._product_checks import CheckConfig, ProcessCheck, TcpCheck
from greenlight.channels._product_fields import (
    RESERVED_UNITS,
    EnvName,
    Line,
    UnitName,
    check_folder,
    check_inside,
    check_program,
    unit_of,
)
from greenlight.channels._records import Record

__all__ = ["INSTALLER_MACHINE_PARTS", "AgentConfig", "Config", "HealthConfig", "LogsConfig",
           "ReportConfig", "RepositoryConfig", "ServiceConfig", "SocketConfig", "StopConfig",
           "check_product", "with_machine_parts"]


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/") + "/"


class _Section(Record):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class RepositoryConfig(_Section):
    url: Annotated[str, AfterValidator(_url)] = Field(
        description="base URL; metadata/ and targets/ are below it"
    )
    metadata_url: Annotated[str, AfterValidator(_url)] | None = None
    targets_url: Annotated[str, AfterValidator(_url)] | None = None
    timeout: float = Field(
        default=30.0, gt=0,
        description="seconds: a whole metadata request, and the slack of every download")
    min_rate: int = Field(
        default=65536, gt=0,
        description="bytes/s: an artifact must arrive within timeout + size / min_rate")

    @property
    def metadata(self) -> str:
        return self.metadata_url or self.url + "metadata/"

    @property
    def targets(self) -> str:
        return self.targets_url or self.url + "targets/"


StopSignal = Literal["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL", "SIGPIPE", "SIGUSR1",
                     "SIGUSR2"]


class ServiceConfig(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    command: list[Line] = Field(
        min_length=1, description="the program and its arguments, each one line; the "
                                  "program does not start with @ - : + ! |")
    workdir: Line = Field(default="{root}",
                          description="an absolute path once its placeholders are filled")
    env: dict[EnvName, Line] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False},
        description="the service's environment beyond the documented minimum; each name a "
                    "shell name, each value one line")
    ready: str | None = Field(default=None, description="name of a check that means 'ready'")
    start_timeout: float = Field(default=20.0, gt=0)
    drain_url: Line | None = Field(
        default=None,
        description="called before the stop signal; answers when in-flight work is done"
    )
    stop_signal: Literal["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"] = "SIGTERM"
    success_exit_status: list[Annotated[int, Field(ge=0, le=255)] | StopSignal] = Field(
        default_factory=list,
        description="more ways to stop cleanly, as systemd's SuccessExitStatus: exit "
                    "statuses (143) or signal names (SIGINT); exit 0 and death by the stop "
                    "signal always are")
    unit: UnitName | None = Field(
        default=None, description="systemd unit (systemd backend): a plain NAME.service in "
                                  "systemd's grammar, never a path")
    restart: Literal["no", "on-failure", "always"] = Field(
        default="on-failure",
        description="as systemd's Restart=: on-failure restarts a service that exits non-zero "
                    "(not a success status) or dies of a signal other than SIGHUP, SIGINT, "
                    "SIGTERM and SIGPIPE; always also after a clean exit; never after a stop "
                    "Greenlight asked for")
    restart_delay: float = Field(default=1.0, ge=0, le=3600,
                                 description="seconds before a restart (RestartSec=)")
    restart_burst: int = Field(
        default=5, ge=1, le=1000,
        description="starts allowed within restart_interval; one more is a crash loop and the "
                    "service is left down (StartLimitBurst=)")
    restart_interval: float = Field(default=60.0, gt=0, le=86400,
                                    description="seconds (StartLimitIntervalSec=)")
    notify: bool = Field(
        default=False,
        description="as systemd's Type=notify: the service says READY=1 on its NOTIFY_SOCKET "
                    "once it serves, and a start waits for it (then for its ready check)")
    watchdog: float = Field(
        default=0.0, ge=0, le=86400,
        description="seconds (WatchdogSec=; 0: none): the service sends WATCHDOG=1 on its "
                    "NOTIFY_SOCKET at least this often once ready, or it is sent SIGABRT and "
                    "restarted by its policy")

    @model_validator(mode="after")
    def _runs_inside(self) -> "ServiceConfig":
        check_program(self.command[0])
        check_folder(self.workdir)
        for text in [*self.command, *self.env.values()]:
            check_inside(text)
        return self


class SocketConfig(_Section):
    """A listening socket Greenlight binds and holds for a service, passed to it with
    systemd's socket-activation protocol (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES): it stays
    open while the service restarts, so connections wait in its backlog, never refused."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
                      description="its name in LISTEN_FDNAMES")
    service: str = Field(description="the [[service]] it is passed to")
    listen: Line = Field(
        min_length=1,
        description="HOST:PORT (TCP or UDP) or an absolute path (a Unix socket); for a "
                    "release that runs side by side, the port (or a folder of the path) "
                    "is a [values] placeholder, so that preflight can give the new release "
                    "its own")
    kind: Literal["stream", "datagram"] = Field(
        default="stream", description="stream: TCP or a Unix stream socket; datagram: UDP")
    backlog: int = Field(default=4096, ge=1, le=65535,
                         description="connections the kernel keeps waiting (listen(2))")


def _shadowable(sock: SocketConfig) -> None:
    """A socket preflight can give another address: its port (or its path's folder) is a
    placeholder of the release's, not a built-in one.

    Raises:
        ValueError: it is not.
    """
    own = [n for n in placeholders(sock.listen) if n not in BUILT_IN]
    if not own:
        raise ValueError(
            f"socket {sock.name!r} listens on the fixed address {sock.listen!r}; preflight "
            "runs the new release beside the running one on an address of its own: make the "
            "port (or the path's folder) a [values] placeholder, or set side_by_side = false")
    if not sock.listen.startswith(("/", "{")) and sock.listen.rsplit(":", 1)[1] != f"{{{own[-1]}}}":
        raise ValueError(
            f"socket {sock.name!r}: listen = {sock.listen!r}: the port must be a placeholder "
            "of its own (HOST:{port_value}) for preflight to give it another")


_ANY_HOST = {"", "0.0.0.0", "::", "*"}


def _held_by(check: CheckConfig, sockets: list[SocketConfig]) -> SocketConfig | None:
    """The held stream socket a tcp check connects to, if any: such a check passes on the
    socket alone (a held socket completes the handshake from its backlog)."""
    if not isinstance(check, TcpCheck):
        return None
    for sock in sockets:
        if sock.kind != "stream" or sock.listen.startswith(("/", "{")):
            continue
        host, port = sock.listen.rsplit(":", 1)
        if port == str(check.port) and host.strip("[]") in _ANY_HOST | {check.host.strip("[]")}:
            return sock
    return None


class HealthConfig(_Section):
    grace: float = Field(default=15.0, ge=0, description="seconds for start-up after a switch")
    soak: float = Field(default=3.0, ge=0, description="seconds the checks must keep passing")
    interval: float = Field(default=0.5, gt=0)
    probation: float = Field(
        default=600.0, ge=0,
        description="seconds after its commit during which a crash loop of the release is "
                    "as bad as a failed post-check: the agent rolls it back to the previous "
                    "release (quarantined); later, or with no previous release, it stays down "
                    "and is reported; 0: never roll back for a crash loop")


class StopConfig(_Section):
    drain: bool = Field(
        default=True,
        description="stop in reverse order, each drained and given `timeout` to exit; "
        "false signals every service at once",
    )
    timeout: float = Field(default=10.0, ge=0)


_WINDOW = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"


class AgentConfig(_Section):
    interval: float = Field(default=21600.0, gt=0, description="seconds between cycles (6 h)")
    jitter: float = Field(default=600.0, ge=0,
                          description="up to this many random seconds added to each wait, so a "
                                      "fleet does not arrive at once")
    apply: Literal["auto", "download", "notify"] = Field(
        default="auto", description="auto: install; download: fetch and verify, then wait for "
                                    "`updater upgrade`; notify: only report")
    window: list[Annotated[str, Field(pattern=_WINDOW)]] = Field(
        default_factory=list, description="local times it may install, e.g. \"02:00-05:00\"; "
                                          "empty: any time. Downloads happen at any time")
    leave_revoked_at_once: bool = Field(
        default=True, description="leave a revoked installed release at the next cycle, "
                                  "outside the windows and inside a hold")
    on_event: list[Line] = Field(default_factory=list,
                                description="a command run with each event as JSON on stdin")
    hook_timeout: float = Field(default=10.0, gt=0)
    retry: float = Field(default=30.0, gt=0,
                         description="first wait after a repository error; doubles up to "
                                     "`interval`")
    verify_every: float = Field(
        default=604800.0, ge=0, description="seconds between verifications of the installed "
                                            "tree against its signed file lists (7 days); 0: "
                                            "never")
    repair: bool = Field(default=False,
                         description="re-stage the installed release when a verification "
                                     "finds it changed; else report it only")


class ReportConfig(_Section):
    url: Annotated[str, AfterValidator(_url)] = Field(
        description="the fleet collector's base URL; reports go to <url>v1/reports")
    token_file: Line = Field(default="data/fleet-token",
                            description="file (relative to the root) holding the fleet token")
    queue_max: int = Field(default=200, ge=1, description="reports kept while unreachable; "
                                                          "the oldest go first")
    timeout: float = Field(default=2.0, gt=0,
                           description="seconds one flush may take, all reports together")
    cohort_label: str | None = Field(
        default=None, pattern=LABEL_PATTERN,
        description="the vendor's label of this kind of machine (a hardware model, say), the "
                    "last part of the cohort its reports name and its rollouts obey")


class LogsConfig(_Section):
    max_size: int = Field(
        default=10 * 1024 * 1024, ge=0,
        description="bytes a service's log (logs/<name>.log) may hold before it is rotated "
                    "(copied to <name>.log.1, then emptied in place); 0: never")
    keep: int = Field(default=3, ge=0, le=100,
                      description="rotated copies kept (<name>.log.1 ... .N)")


class Config(_Section):
    repository: RepositoryConfig | None = Field(
        default=None, description="where updates come from; none: an air-gapped root, updated "
                                  "only by `updater sideload` (and offline installers)")
    channel: Annotated[str, AfterValidator(check_channel_name)] = "stable"
    keep_releases: int = Field(default=3, ge=1)
    backend: Literal["process", "systemd"] = "process"
    systemd_scope: Literal["system", "user"] = Field(
        default="system", description="backend = \"systemd\": the system's manager, or the "
                                      "user's (systemctl --user)")
    service: list[ServiceConfig] = Field(default_factory=list)
    socket: list[SocketConfig] = Field(default_factory=list)
    side_by_side: bool = Field(
        default=True,
        description="the new release can run beside the running one (on sockets and "
                    "per-instance state of its own) for preflight; false: stop, then start")
    per_instance: list[str] = Field(
        default_factory=list,
        description="[values] naming folders of per-instance state: preflight gives the new "
                    "release a copy of each")
    handover: bool = Field(
        default=False,
        description="the services take over their held sockets while their predecessors still "
                    "serve them, say READY=1 on NOTIFY_SOCKET, and drain when stopped: the "
                    "new release starts beside the old, which then drains (process backend)")
    check: list[CheckConfig] = Field(default_factory=list)
    health: HealthConfig = Field(default_factory=HealthConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    report: ReportConfig | None = Field(default=None, description="opt-in fleet reports")
    logs: LogsConfig = Field(default_factory=LogsConfig,
                             description="the services' logs, each bounded (process backend)")
    values: dict[str, Line] = Field(
        default_factory=dict, description="the machine's placeholder values ({name}): ports "
                                          "and paths a release's manifest leaves to it")
    disabled_checks: list[str] = Field(
        default_factory=list, description="checks of a release's manifest this machine does "
                                          "not run, each named")

    @model_validator(mode="after")
    def _references(self) -> "Config":
        services = [s.name for s in self.service]
        checks = [c.name for c in self.check]
        for kind, names in (("service", services), ("check", checks)):
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValueError(f"{kind} names must be unique: {', '.join(sorted(dupes))}")
        for s in self.service:
            if s.ready is not None and s.ready not in checks:
                raise ValueError(f"service {s.name!r}: ready = {s.ready!r} names no [[check]]")
        for c in self.check:
            if isinstance(c, ProcessCheck) and c.service not in services:
                raise ValueError(f"check {c.name!r}: service = {c.service!r} names no [[service]]")
        units = [unit_of(s.name, s.unit) for s in self.service]
        for unit in units:
            if unit in RESERVED_UNITS or units.count(unit) > 1:
                whose = "Greenlight" if unit in RESERVED_UNITS else "another service"
                raise ValueError(f"unit {unit!r} is {whose}'s own: give the service a unit "
                                 "of its own")
        names = [k.name for k in self.socket]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"socket names must be unique: {', '.join(sorted(dupes))}")
        for k in self.socket:
            if k.service not in services:
                raise ValueError(f"socket {k.name!r}: service = {k.service!r} names no "
                                 "[[service]]")
            if not k.listen.startswith(("/", "{")) and ":" not in k.listen:
                raise ValueError(f"socket {k.name!r}: listen = {k.listen!r} is neither "
                                 "HOST:PORT nor an absolute path")
            if self.side_by_side:
                _shadowable(k)
        for c in self.check:
            held = _held_by(c, self.socket)
            if held is not None:
                raise ValueError(
                    f"check {c.name!r} connects to socket {held.name!r}, which Greenlight "
                    "holds: the kernel accepts there whether or not the service runs, so it "
                    "cannot fail; check the service over http, websocket or a command")
        if self.handover and not (self.side_by_side and self.socket):
            raise ValueError("handover runs a release beside its predecessor on the sockets "
                             "Greenlight holds: it needs [[socket]]s and side_by_side")
        return self

    @classmethod
    def load(cls, path: Path) -> "Config":
        """The greenlight.toml at `path`, validated.

        Raises:
            ConfigError: missing, unreadable, not TOML or invalid (one line naming the field).
        """
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no configuration (create the root with 'updater init')"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"{path}: {describe_validation(e, data, limit=1)}") from None

    @property
    def outbox_size(self) -> int | None:
        """How many fleet reports the outbox keeps; None when reporting is off."""
        return None if self.report is None else self.report.queue_max


INSTALLER_MACHINE_PARTS = ("backend", "systemd_scope")
"""What of an installer's product configuration (`release installer --product-config`) is the
machine's: written into a fresh root's greenlight.toml. The rest is the release's manifest."""

_PLACEHOLDER_REPOSITORY = {"url": "http://127.0.0.1/"}


def check_product(data: dict[str, Any], source: str) -> None:
    """The product's parts of `data` (services, checks, health, stop, ...) checked as the
    machine's Config checks them, references between them included.

    Raises:
        ConfigError: one line naming the first problem.
    """
    try:
        Config.model_validate({"repository": _PLACEHOLDER_REPOSITORY, **data})
    except ValidationError as e:
        raise ConfigError(f"{source}: {describe_validation(e, data, limit=1)}") from None


def with_machine_parts(config_text: str, parts: dict[str, object], source: str) -> str:
    """greenlight.toml with the installer's machine settings (`backend`, `systemd_scope`)
    set: the installation's other keys kept, top-level keys first, validated.

    Raises:
        ConfigError: the result would not load.
    """
    data = tomllib.loads(config_text)
    merged = {k: v for k, v in data.items() if k not in parts} | parts
    try:
        Config.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(f"{source}: {describe_validation(e, merged, limit=1)}") from None
    return ("# greenlight.toml: this machine's layer (repository, channel, backend, values);\n"
            "# how the product runs comes with each release's manifest. Reference: Greenlight's\n"
            "# docs/configuration.md and docs/manifest.md. Top-level keys stay above the first\n"
            "# [table].\n\n" + tomli_w.dumps(merged))
