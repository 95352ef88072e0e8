"""A development static server for a repository, on 127.0.0.1 only.

A repository is plain files; in production any static server or CDN serves `metadata/` and
`targets/`. This one serves just those two folders, keeps connections alive, answers single
byte ranges, sends files with sendfile(2), and counts requests and TCP connections so that
tests and benchmarks can see what a client really did.

What it refuses, whatever the encoding of the request (`..`, `%2e%2e`, `..%2f`, `\\`, NUL):
- any path whose decoded segments include `.` or `..`, or that is not under `metadata/` or
  `targets/`;
- anything but a regular file, and any path with a symlink anywhere below the repository
  (the file is opened with O_NOFOLLOW after every parent was checked with lstat);
- a `Host` header other than 127.0.0.1, localhost or the bound address (DNS rebinding).
"""

import os
import re
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["RepositoryServer", "serving"]

_SERVED = ("metadata", "targets")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RepositoryServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.root = root.resolve()
        self.connections = 0
        self.paths: list[str] = []
        self.honour_ranges = True
        # Fault for tests of resumption: cut the next file response after this many bytes.
        self.drop_once_after: int | None = None
        # Fault for tests of deadlines: bodies of paths with this prefix go out a byte at a time.
        self.trickle: tuple[str, float] | None = None
        self.bytes_sent = 0
        self.ranges: list[str] = []
        self._count_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def get_request(self) -> Any:
        conn = super().get_request()
        with self._count_lock:
            self.connections += 1
        return conn

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away; nothing to report
        super().handle_error(request, client_address)

    def reset_counts(self) -> None:
        with self._count_lock:
            self.connections = 0
            self.paths = []
            self.bytes_sent = 0
            self.ranges = []


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body
    # until the client's delayed ACK, 40 ms on every small response.
    disable_nagle_algorithm = True
    server: RepositoryServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(args[2].root), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _count(self) -> None:
        with self.server._count_lock:
            self.server.paths.append(self.path)

    def _refuse(self, status: HTTPStatus, body: bytes) -> None:
        # Not send_error(): it closes the connection, and a missing next root.json is the
        # answer to every check; keep the connection for the timestamp that follows.
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _host_allowed(self) -> bool:
        host = self.headers.get("Host")
        if host is None:
            return True  # HTTP/1.0 without Host: not a browser
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        bound = str(self.server.server_address[0])
        return name in ("127.0.0.1", "localhost", bound)

    def _open_served(self) -> Any:
        """The requested file, opened without following links, or None."""
        path = unquote(urlsplit(self.path).path)
        if "\\" in path or "\x00" in path:
            return None
        parts = path.split("/")
        if any(p in (".", "..") for p in parts):
            return None
        parts = [p for p in parts if p]
        if not parts or parts[0] not in _SERVED:
            return None
        current = self.server.root
        try:
            for part in parts:
                current = current / part
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    return None
            fd = os.open(current, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO, a device
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")

    def send_head(self) -> Any:
        self._count()
        if not self._host_allowed():
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host\n")
            return None
        f = self._open_served()
        if f is None:
            self._refuse(HTTPStatus.NOT_FOUND, b"not found\n")
            return None
        size = os.fstat(f.fileno()).st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if self.headers.get("Range"):
            self.server.ranges.append(f"{self.path} {self.headers['Range']}")
        match = _RANGE.match(self.headers.get("Range", "")) if self.server.honour_ranges else None
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(size - int(match.group(2)), 0)
            if start > end or start >= size:
                f.close()
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        f.seek(start)
        self._span = end - start + 1
        return f

    def copyfile(self, source: Any, outputfile: Any) -> None:
        outputfile.flush()
        trickle = self.server.trickle
        if trickle is not None and self.path.startswith(trickle[0]):
            for _ in range(self._span):
                try:
                    outputfile.write(source.read(1))
                    outputfile.flush()
                except OSError:
                    return  # the client gave up
                time.sleep(trickle[1])
            return
        span, cut = self._span, self.server.drop_once_after
        if cut is not None and span > cut:
            self.server.drop_once_after = None
            sent = self.connection.sendfile(source, source.tell(), cut)
            self.server.bytes_sent += sent
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.server.bytes_sent += self.connection.sendfile(source, source.tell(), span)


@contextmanager
def serving(root: Path, port: int = 0) -> Iterator[RepositoryServer]:
    """Serve `root` on 127.0.0.1 in a background thread for the duration of the block."""
    server = RepositoryServer(root, port)
    thread = threading.Thread(target=server.serve_forever, name="repository-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
