"""The product Greenlight manages: its configuration (`greenlight.toml`), placeholders, its
services (process or systemd backend, and the stdlib-only launcher) and its health checks.

Heavy libraries (httpx, websockets, dnspython) are imported by the probes that use them.
"""

from greenlight.updater.product._config import (
    CheckConfig,
    CommandCheck,
    Config,
    DnsCheck,
    HealthConfig,
    HttpCheck,
    ProcessCheck,
    RepositoryConfig,
    ServiceConfig,
    StopConfig,
    TcpCheck,
    VersionCheck,
    WebSocketCheck,
    describe,
)
from greenlight.updater.product._control import HealthFailure, ServiceControl
from greenlight.updater.product._health import (
    CheckResult,
    HealthChecker,
    all_checks,
    failed_required,
)
from greenlight.updater.product._placeholders import expand, expand_command, values_for
from greenlight.updater.product._runtime import frozen, launcher_argv, python_argv
from greenlight.updater.product._services import (
    ProcessBackend,
    ServiceBackend,
    StopOutcome,
    SystemdBackend,
    backend_for,
    drain,
    render_unit,
)

__all__ = [
    "CheckConfig",
    "CheckResult",
    "CommandCheck",
    "Config",
    "DnsCheck",
    "HealthChecker",
    "HealthConfig",
    "HealthFailure",
    "HttpCheck",
    "ProcessBackend",
    "ProcessCheck",
    "RepositoryConfig",
    "ServiceBackend",
    "ServiceConfig",
    "ServiceControl",
    "StopConfig",
    "StopOutcome",
    "SystemdBackend",
    "TcpCheck",
    "VersionCheck",
    "WebSocketCheck",
    "all_checks",
    "backend_for",
    "describe",
    "drain",
    "expand",
    "expand_command",
    "failed_required",
    "frozen",
    "launcher_argv",
    "python_argv",
    "render_unit",
    "values_for",
]
