"""The product Greenlight manages: its configuration (`greenlight.toml`), placeholders, its
services (process or systemd backend, and the stdlib-only launcher) and its health checks.
The models of greenlight.toml and of a release's manifest, and their loaders, are the shared
layer's (`greenlight.channels`: the pipeline checks a product with the same code); the ones
the client uses are re-exported here.

Heavy libraries (httpx, websockets, dnspython) are imported by the probes that use them, and
the names below are loaded on first use (PEP 562), so that reading the configuration (what
`updater check` needs) does not load the services and health checks.
"""

from typing import TYPE_CHECKING, Any

from greenlight.channels._lazy import lazy_export

if TYPE_CHECKING:
    from greenlight.channels import (
        AgentConfig,
        CheckConfig,
        CommandCheck,
        Config,
        DnsCheck,
        HttpCheck,
        ProductManifest,
        RepositoryConfig,
        ServiceConfig,
        SocketConfig,
        TcpCheck,
        VersionCheck,
        WebSocketCheck,
        check_value,
        layered,
        load_manifest,
        manifest_schema,
        split_product_config,
        with_machine_parts,
    )
    from greenlight.updater.product._control import (
        HealthFailure,
        ServiceControl,
        Shadow,
        backend_for,
    )
    from greenlight.updater.product._environment import (
        DEFAULT_PATH,
        base_environment,
        identity,
        service_environment,
    )
    from greenlight.updater.product._handover import hand_over, hands_over, stop_successors
    from greenlight.updater.product._health import (
        CheckResult,
        HealthChecker,
        all_checks,
        failed_required,
    )
    from greenlight.updater.product._placeholders import expand_command, values_for
    from greenlight.updater.product._preflight import preflight, runs_preflight, stop_shadows
    from greenlight.updater.product._redaction import REDACTED, redact, scrub, secrets_of
    from greenlight.updater.product._rootconfig import (
        config_of,
        forget_config,
        init_root,
        machine_cohort,
    )
    from greenlight.updater.product._runtime import frozen, launcher_argv, python_argv
    from greenlight.updater.product._services import (
        ProcessBackend,
        Restarts,
        ServiceBackend,
        StopOutcome,
        drain,
    )
    from greenlight.updater.product._sockets import SocketHolder
    from greenlight.updater.product._systemd import (
        AGENT_UNIT,
        GATE_UNIT,
        UNITS_RECORD,
        SystemdBackend,
        record_units,
        recorded_units,
        render_gate,
        render_socket,
        render_unit,
        render_units,
        socket_unit,
    )

__all__ = [
    "AGENT_UNIT",
    "DEFAULT_PATH",
    "GATE_UNIT",
    "REDACTED",
    "UNITS_RECORD",
    "AgentConfig",
    "CheckConfig",
    "CheckResult",
    "CommandCheck",
    "Config",
    "DnsCheck",
    "HealthChecker",
    "HealthFailure",
    "HttpCheck",
    "ProcessBackend",
    "ProductManifest",
    "RepositoryConfig",
    "Restarts",
    "ServiceBackend",
    "ServiceConfig",
    "Shadow",
    "SocketConfig",
    "SocketHolder",
    "ServiceControl",
    "StopOutcome",
    "SystemdBackend",
    "TcpCheck",
    "VersionCheck",
    "WebSocketCheck",
    "all_checks",
    "backend_for",
    "base_environment",
    "check_value",
    "config_of",
    "drain",
    "expand_command",
    "failed_required",
    "forget_config",
    "frozen",
    "identity",
    "init_root",
    "layered",
    "load_manifest",
    "machine_cohort",
    "split_product_config",
    "launcher_argv",
    "manifest_schema",
    "python_argv",
    "hand_over",
    "hands_over",
    "preflight",
    "render_gate",
    "render_socket",
    "render_unit",
    "render_units",
    "record_units",
    "recorded_units",
    "redact",
    "scrub",
    "secrets_of",
    "socket_unit",
    "runs_preflight",
    "service_environment",
    "stop_shadows",
    "stop_successors",
    "values_for",
    "with_machine_parts",
]

_HOME = {
    "DEFAULT_PATH": "greenlight.updater.product._environment",
    "base_environment": "greenlight.updater.product._environment",
    "identity": "greenlight.updater.product._environment",
    "service_environment": "greenlight.updater.product._environment",
    "AgentConfig": "greenlight.channels",
    "CheckConfig": "greenlight.channels",
    "CheckResult": "greenlight.updater.product._health",
    "CommandCheck": "greenlight.channels",
    "Config": "greenlight.channels",
    "DnsCheck": "greenlight.channels",
    "HealthChecker": "greenlight.updater.product._health",
    "HealthFailure": "greenlight.updater.product._control",
    "HttpCheck": "greenlight.channels",
    "ProcessBackend": "greenlight.updater.product._services",
    "ProductManifest": "greenlight.channels",
    "RepositoryConfig": "greenlight.channels",
    "Restarts": "greenlight.updater.product._services",
    "ServiceBackend": "greenlight.updater.product._services",
    "ServiceConfig": "greenlight.channels",
    "SocketConfig": "greenlight.channels",
    "Shadow": "greenlight.updater.product._control",
    "SocketHolder": "greenlight.updater.product._sockets",
    "preflight": "greenlight.updater.product._preflight",
    "hand_over": "greenlight.updater.product._handover",
    "hands_over": "greenlight.updater.product._handover",
    "stop_successors": "greenlight.updater.product._handover",
    "runs_preflight": "greenlight.updater.product._preflight",
    "REDACTED": "greenlight.updater.product._redaction",
    "redact": "greenlight.updater.product._redaction",
    "scrub": "greenlight.updater.product._redaction",
    "secrets_of": "greenlight.updater.product._redaction",
    "stop_shadows": "greenlight.updater.product._preflight",
    "ServiceControl": "greenlight.updater.product._control",
    "StopOutcome": "greenlight.updater.product._services",
    "SystemdBackend": "greenlight.updater.product._systemd",
    "TcpCheck": "greenlight.channels",
    "VersionCheck": "greenlight.channels",
    "WebSocketCheck": "greenlight.channels",
    "all_checks": "greenlight.updater.product._health",
    "backend_for": "greenlight.updater.product._control",
    "config_of": "greenlight.updater.product._rootconfig",
    "forget_config": "greenlight.updater.product._rootconfig",
    "init_root": "greenlight.updater.product._rootconfig",
    "layered": "greenlight.channels",
    "check_value": "greenlight.channels",
    "load_manifest": "greenlight.channels",
    "machine_cohort": "greenlight.updater.product._rootconfig",
    "split_product_config": "greenlight.channels",
    "manifest_schema": "greenlight.channels",
    "drain": "greenlight.updater.product._services",
    "expand_command": "greenlight.updater.product._placeholders",
    "failed_required": "greenlight.updater.product._health",
    "frozen": "greenlight.updater.product._runtime",
    "launcher_argv": "greenlight.updater.product._runtime",
    "python_argv": "greenlight.updater.product._runtime",
    "render_unit": "greenlight.updater.product._systemd",
    "render_gate": "greenlight.updater.product._systemd",
    "render_socket": "greenlight.updater.product._systemd",
    "socket_unit": "greenlight.updater.product._systemd",
    "GATE_UNIT": "greenlight.updater.product._systemd",
    "UNITS_RECORD": "greenlight.updater.product._systemd",
    "AGENT_UNIT": "greenlight.updater.product._systemd",
    "render_units": "greenlight.updater.product._systemd",
    "record_units": "greenlight.updater.product._systemd",
    "recorded_units": "greenlight.updater.product._systemd",
    "values_for": "greenlight.updater.product._placeholders",
    "with_machine_parts": "greenlight.channels",
}


def __getattr__(name: str) -> Any:
    return lazy_export(__name__, _HOME, name)
