"""The socket holder a root's services get their listening sockets from; the standard library
only, imports nothing of Greenlight.

    python -I -S holder.py --control PATH

It is the process backend's systemd socket unit: it binds the sockets a release declares
(`[[socket]]`) and keeps them open for as long as the product is installed, so that while a
service stops and its successor starts, the kernel keeps connections waiting in the socket's
backlog instead of refusing them. The updater asks for them over the Unix socket PATH and
receives them as file descriptors (SCM_RIGHTS), which the launcher passes on to the service
with systemd's protocol (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES).

One request per connection, one JSON line each way; the reply carries the descriptors:

    {"op": "hold", "sockets": [{"name", "listen", "kind", "backlog", "replace"}, ...],
     "only": bool}
        each socket, bound now or the one already held for the same address; with "only",
        the held sockets not named are closed (a release that no longer declares them)
    {"op": "quit"}      close every socket and exit

It exits by itself when PATH is removed or replaced (the root is gone), and a second holder
started for the same PATH leaves the first in place. Addresses are HOST:PORT (TCP, or UDP
for "kind": "datagram"; [::1]:PORT for IPv6) or an absolute path (a Unix socket: its folder
is made; a file already there is refused unless it is a socket and "replace" is set, which
the updater sets inside the installation root only; a symlink is never followed there).
"""

import contextlib
import errno
import json
import os
import select
import socket
import stat
import struct
import sys

USAGE = "usage: holder.py --control PATH"
_MAX_REQUEST = 1 << 20


def unix_address(path: str) -> tuple[str, int | None]:
    """An address for `path` within AF_UNIX's 108 bytes: a long one is reached through its
    folder's descriptor (/proc/self/fd/N/name); the caller closes N once bound or connected."""
    if len(os.fsencode(path)) < 100:
        return path, None
    folder, name = os.path.split(path)
    fd = os.open(folder or ".", os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{name}", fd


def _on_unix(sock: socket.socket, path: str, connect: bool = False) -> None:
    address, fd = unix_address(path)
    try:
        sock.connect(address) if connect else sock.bind(address)
    finally:
        if fd is not None:
            os.close(fd)


def bind(spec: dict[str, object]) -> socket.socket:
    """A socket bound (and listening, for a stream) as `spec` says."""
    listen, kind = str(spec["listen"]), spec.get("kind", "stream")
    kind_of = socket.SOCK_DGRAM if kind == "datagram" else socket.SOCK_STREAM
    if listen.startswith("/"):
        os.makedirs(os.path.dirname(listen), mode=0o755, exist_ok=True)  # as systemd does
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(listen).st_mode):
                raise OSError(errno.EEXIST, "exists and is not a socket")
            if not spec.get("replace"):  # outside the product's root: never removed
                raise OSError(errno.EADDRINUSE, "a socket file is there already")
            os.unlink(listen)  # a socket file left by a process that is gone
        sock = socket.socket(socket.AF_UNIX, kind_of)
        address: object = None
    else:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, kind_of)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (host, int(port))
    try:
        if address is None:
            _on_unix(sock, listen)
        else:
            sock.bind(address)  # type: ignore[arg-type]
        if kind_of == socket.SOCK_STREAM:
            sock.listen(int(spec.get("backlog", 4096)))  # type: ignore[call-overload]
    except OSError:
        sock.close()
        raise
    return sock


def _key(spec: dict[str, object]) -> str:
    return f"{spec.get('kind', 'stream')} {spec['listen']}"


def _serve(control: socket.socket, held: dict[str, socket.socket]) -> bool:
    """One request (from this user only); False when told to quit."""
    conn, _ = control.accept()
    with conn:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  struct.calcsize("3i")))[1]
        if uid != os.getuid():
            return True
        conn.settimeout(10)
        data = b""
        try:
            while not data.endswith(b"\n") and len(data) < _MAX_REQUEST:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            request = json.loads(data)
        except (OSError, ValueError):
            return True
        reply: dict[str, object] = {"ok": True}
        fds: list[int] = []
        spec: dict[str, object] = {}
        if not isinstance(request, dict):
            return True
        if request.get("op") == "quit":
            for key, sock in held.items():
                _close(key, sock)
            held.clear()
            with contextlib.suppress(OSError):
                conn.sendall(b'{"ok": true}\n')
            return False
        try:
            specs = list(request.get("sockets", []))
            for spec in specs:
                key = _key(spec)
                if key not in held:
                    held[key] = bind(spec)
                elif not _listening(held[key]):  # shut by a launcher that gave up
                    held[key].listen(int(spec.get("backlog", 4096)))  # type: ignore[call-overload]
                fds.append(held[key].fileno())
            if request.get("only"):
                wanted = {_key(s) for s in specs}
                for key in [k for k in held if k not in wanted]:
                    _close(key, held.pop(key))
        except (OSError, ValueError, KeyError, TypeError) as e:
            reply, fds = {"ok": False, "error": f"{spec.get('listen')}: {_why(e)}"}, []
        with contextlib.suppress(OSError):
            socket.send_fds(conn, [(json.dumps(reply) + "\n").encode()], fds)
    return True


def _listening(sock: socket.socket) -> bool:
    return (sock.type != socket.SOCK_STREAM
            or bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)))


def _why(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _close(key: str, sock: socket.socket) -> None:
    path = key.split(" ", 1)[1]
    sock.close()
    if path.startswith("/"):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _live(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            _on_unix(probe, path, connect=True)
        except OSError:
            return False
        probe.sendall(b"{}\n")
    return True


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if len(args) != 2 or args[0] != "--control":
        print(USAGE, file=sys.stderr)
        return 2
    path = args[1]
    if os.path.exists(path) and _live(path):
        return 0  # another holder serves this root
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    control = socket.socket(socket.AF_UNIX)
    old = os.umask(0o177)
    try:
        _on_unix(control, path)
    finally:
        os.umask(old)
    control.listen(16)
    mine = os.stat(path).st_ino
    held: dict[str, socket.socket] = {}
    while True:
        ready, _, _ = select.select([control], [], [], 2.0)
        try:
            if os.stat(path).st_ino != mine:
                break
        except OSError:
            break  # the root is gone: nothing to hold for
        if ready and not _serve(control, held):
            break
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == mine:
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
