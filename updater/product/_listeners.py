"""Who listens on a local TCP port, from /proc: how `updater start` tells the service it
started from a stray process that happens to answer on the same port.

The kernel's socket tables (`/proc/net/tcp`, `/proc/net/tcp6`) give the inode of each
listening socket; the processes holding it are found among `/proc/<pid>/fd`. Processes this
user cannot read are skipped, so the answer can be partial: callers treat "nobody found" as
"cannot tell", never as proof.
"""

import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from greenlight.channels import (
    CheckConfig,
    HttpCheck,
    TcpCheck,
    VersionCheck,
    WebSocketCheck,
    expand,
    printable,
)

__all__ = ["describe_process", "listen_address", "listeners"]

_LOCAL = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
_LISTEN = "0A"


def listen_address(check: CheckConfig, values: dict[str, str]) -> tuple[str, int] | None:
    """The local host and port a check talks to, or None when it talks to none."""
    if isinstance(check, TcpCheck):
        port_text = expand(str(check.port), values)
        if not port_text.isdigit():
            return None
        host, port = expand(check.host, values), int(port_text)
    elif isinstance(check, HttpCheck | VersionCheck | WebSocketCheck):
        try:
            parts = urlsplit(expand(check.url, values))
            host, port = parts.hostname or "", parts.port or (
                443 if parts.scheme in ("https", "wss") else 80)
        except ValueError:
            return None
    else:
        return None
    return (host, port) if host in _LOCAL else None


def _inodes(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _LISTEN:
                    continue
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def listeners(port: int) -> list[int]:
    """The pids holding a socket that listens on local TCP `port` (those readable here)."""
    wanted = {f"socket:[{inode}]" for inode in _inodes(port)}
    if not wanted:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{entry}/fd")
            for fd in os.listdir(fds):
                with contextlib.suppress(OSError):
                    if os.readlink(fds / fd) in wanted:
                        pids.append(int(entry))
                        break
    return sorted(pids)


def describe_process(pid: int) -> str:
    """'pid 4242 (python3 -m http.server 8080)', escaped for a terminal."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        command = " ".join(a.decode(errors="replace") for a in argv)[:120]
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({printable(command)})"
