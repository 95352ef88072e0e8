"""A service's environment: what the release's manifest and the machine declare, over a
documented minimum, and nothing inherited from whoever ran `updater`.

A systemd unit starts from a clean environment; so does a service under the process
backend, so that both backends run a service alike (docs/configuration.md, "Environment"):

- `PATH`: systemd's default, `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;
- `LANG`: the locale, when the updater has one (systemd passes the system's);
- `HOME`, `USER`, `LOGNAME`, `SHELL`: of the user the service runs as, from the passwd
  database (none when the user has no entry there);
- the service's `env`, placeholders filled; it may override any of the above;
- what Greenlight sets for the service itself, last: `LISTEN_FDS`, `LISTEN_PID` and
  `LISTEN_FDNAMES` (held sockets), `NOTIFY_SOCKET` (a handover).

A `type = "command"` check runs with the same minimum (without any service's `env`): as the
UI would, never with the variables of a shell, a test or a cron job.
"""

import os
import pwd

from greenlight.channels import ServiceConfig, expand

__all__ = ["DEFAULT_PATH", "base_environment", "identity", "service_environment"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""systemd's default PATH for the services it runs."""

def identity(uid: int | None = None) -> dict[str, str]:
    """HOME, USER, LOGNAME and SHELL of user `uid` (this process's, the user services run
    as), from the passwd database, as systemd sets them with `User=`; empty without an
    entry."""
    try:
        entry = pwd.getpwuid(os.getuid() if uid is None else uid)
    except KeyError:
        return {}
    return {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name,
            "SHELL": entry.pw_shell or "/bin/sh"}


def base_environment() -> dict[str, str]:
    """The minimum every service and command check starts from (see the module)."""
    env = {"PATH": DEFAULT_PATH, **identity()}
    lang = os.environ.get("LANG")
    if lang:
        env["LANG"] = lang
    return env


def service_environment(service: ServiceConfig, values: dict[str, str]) -> dict[str, str]:
    """`service`'s environment: the minimum, then its `env` with `values` filled in."""
    return {**base_environment(), **{k: expand(v, values) for k, v in service.env.items()}}
