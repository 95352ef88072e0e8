"""The product's listening sockets, held by Greenlight (`[[socket]]` in a release's manifest).

Under the process backend a small holder process per root (holder.py, the part systemd's
socket units play under systemd) binds them and keeps them open across every restart and
upgrade; `SocketHolder` asks it for them (file descriptors over its Unix socket, from this
user only) and the launcher hands them to each service with systemd's protocol. Preflight's
shadow sockets are bound here, by the updater itself, on addresses of their own.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from greenlight.channels import SocketConfig, expand, printable
from greenlight.updater._errors import StoreError
from greenlight.updater.product._runtime import holder_argv
from greenlight.updater.product.holder import bind, unix_address

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["Listening", "SocketHolder", "bind_shadow", "close", "socket_spec"]

Listening = dict[str, list[tuple[str, socket.socket]]]
"""service name -> its sockets, each with its LISTEN_FDNAMES name, in declared order"""

_START_LIMIT = 10.0


def socket_spec(sock: SocketConfig, values: dict[str, str],
                root: Path | None = None) -> dict[str, object]:
    """What the holder binds for `sock`. A Unix socket's stale file is replaced only inside
    the root (`replace`); elsewhere an existing file is refused, never removed.

    Raises:
        StoreError: a Unix socket inside the root under a symlinked folder.
    """
    listen = expand(sock.listen, values)
    spec: dict[str, object] = {"name": sock.name, "listen": listen, "kind": sock.kind,
                               "backlog": sock.backlog, "replace": False}
    if root is not None and listen.startswith("/"):
        real_root = Path(os.path.realpath(root))
        lexical = Path(os.path.normpath(listen))
        inside = lexical.is_relative_to(root) or lexical.is_relative_to(real_root)
        if inside:
            relative = lexical.relative_to(root if lexical.is_relative_to(root) else real_root)
            folder = real_root / relative.parent
            if os.path.realpath(folder) != str(folder) and folder.exists():
                raise StoreError(f"socket {sock.name}: {printable(listen)}: a folder on its way "
                                 "is a symlink (refused inside the installation root)")
            spec["replace"] = True
    return spec


def bind_shadow(sock: SocketConfig, values: dict[str, str],
                port: str | None = None) -> tuple[socket.socket, str]:
    """A socket like `sock` on an address of its own, for preflight: a TCP or UDP port the
    kernel picks on the same host (or `port`, one the shadow already has for another kind),
    or the same path under the shadow's folders (`values` already point there). Returns it
    and its port (or path).

    Raises:
        StoreError: it could not be bound.
    """
    spec = socket_spec(sock, values)
    listen = str(spec["listen"])
    if not listen.startswith("/"):
        spec["listen"] = f"{listen.rpartition(':')[0]}:{port or 0}"
    else:
        Path(listen).parent.mkdir(parents=True, exist_ok=True)
    try:
        bound = bind(spec)
    except OSError as e:
        raise StoreError(f"preflight: cannot bind a socket for {sock.name} "
                         f"({printable(str(spec['listen']))}): {e.strerror or e}") from None
    where = bound.getsockname()
    return bound, str(where[1]) if isinstance(where, tuple) else listen


class SocketHolder:
    """The root's socket holder, started on first need."""

    def __init__(self, root: "InstallRoot") -> None:
        self.root = root.path
        self.control = root.state / "run" / "sockets.ctl"

    def _ask(self, request: dict[str, object], count: int) -> tuple[dict[str, object], list[int]]:
        with socket.socket(socket.AF_UNIX) as conn:
            address, fd = unix_address(str(self.control))
            try:
                conn.settimeout(10)
                conn.connect(address)
            finally:
                if fd is not None:
                    os.close(fd)
            conn.sendall((json.dumps(request) + "\n").encode())
            data, fds, _, _ = socket.recv_fds(conn, 65536, max(1, count))
        try:
            reply = json.loads(data)
        except ValueError:
            reply = {"ok": False, "error": "the socket holder gave no answer"}
        return (reply if isinstance(reply, dict) else {"ok": False}), list(fds)

    def running(self) -> bool:
        try:
            self._ask({}, 0)
        except OSError:
            return False
        return True

    def _start(self) -> None:
        self.control.parent.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen([*holder_argv(), "--control", str(self.control)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + _START_LIMIT
        while not self.running():
            if holder.poll() is not None and not self.running():
                raise StoreError(f"the socket holder exited at once (status {holder.returncode})")
            if time.monotonic() > deadline:
                raise StoreError("the socket holder did not answer within "
                                 f"{_START_LIMIT:g}s")
            time.sleep(0.01)

    def hold(self, sockets: list[SocketConfig], values: dict[str, str]) -> Listening:
        """Exactly `sockets` held (bound now, or kept from before; the others closed), and
        each service's, as open descriptors of this process for its launcher.

        Raises:
            StoreError: the holder could not be started, or a socket could not be bound.
        """
        if not sockets and not self.control.exists():
            return {}
        if sockets and not self.running():
            self._start()
        specs = [socket_spec(s, values, self.root) for s in sockets]
        try:
            reply, fds = self._ask({"op": "hold", "sockets": specs, "only": True}, len(specs))
        except OSError as e:
            if not sockets:
                return {}
            raise StoreError(f"the socket holder: {e.strerror or e}") from None
        if not reply.get("ok") or len(fds) != len(specs):
            for fd in fds:
                os.close(fd)
            raise StoreError(f"cannot hold the product's sockets: "
                             f"{printable(str(reply.get('error', 'no descriptors')))}")
        held: Listening = {}
        for s, fd in zip(sockets, fds, strict=True):
            held.setdefault(s.service, []).append((s.name, socket.socket(fileno=fd)))
        return held

    def quit(self) -> None:
        """Close every held socket and end the holder (the product is stopped for good)."""
        if self.control.exists():
            try:
                self._ask({"op": "quit"}, 0)
            except OSError:
                self.control.unlink(missing_ok=True)


def close(listening: Listening) -> None:
    """Close this process's copies (the holder, or the services, keep theirs)."""
    for sockets in listening.values():
        for _, sock in sockets:
            sock.close()
