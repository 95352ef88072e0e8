"""nginx on 127.0.0.1 in front of collector replicas, as docs/fleet.md configures it: a
report a replica did not answer (it died, it refused the connection, it said 502 or 503) is
sent to the next one, since a report is counted once by its signed id whichever replica
stores it. No replica is ever marked down (`max_fails=0`): one that is restarting refuses a
connection at once and the next is tried, where a replica marked down would be skipped after
it came back, and with all of them marked, nginx answers 502 itself."""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.postgres import Unavailable

__all__ = ["balancer"]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

_CONF = """
user root;
worker_processes 1;
worker_rlimit_nofile 40000;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 16384; }}
http {{
    access_log {tmp}/access.log;
    # Idle and slow clients wait here, not in the replicas' tables: a client has 10 s to
    # send its request, 5 s of keep-alive after; one address has 256 requests under way.
    client_header_timeout 10s;
    client_body_timeout 10s;
    keepalive_timeout 5s;
    limit_conn_zone $binary_remote_addr zone=per_address:10m;
    limit_conn per_address 256;
    limit_conn_status 503;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream collectors {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 256k;
        location / {{
            proxy_pass http://collectors;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;  # the collectors' --allowed-host
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 15s;
        }}
    }}
}}
"""


@contextmanager
def balancer(ports: list[int], tmp: Path, port: int | None = None) -> Iterator[str]:
    """nginx on 127.0.0.1 (`port`, or one the kernel picks) over the collectors on `ports`:
    its URL. Raises `Unavailable` when nginx is not installed."""
    if NGINX is None:
        raise Unavailable("nginx is not installed (tests/ensure_packages.sh installs it)")
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or _port()
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;"
                        for p in ports)
    conf = tmp / "nginx.conf"
    conf.write_text(_CONF.format(tmp=tmp, port=port, servers=servers))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("nginx did not start: "
                                   f"{proc.stderr.read() if proc.stderr else ''}") from None
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
