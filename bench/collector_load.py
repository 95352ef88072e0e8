"""The fleet collector under load: 10,000 simulated machines each send one signed report.

    python -m bench.collector_load [--machines 10000] [--concurrency 64] [--rate R]
                                   [--db URL | --postgres]

The collector runs as its own process (`release collector`, uvicorn) on 127.0.0.1 with a fresh
SQLite file (or `--db`), its machines' keys loaded first (`--enrolment preauthorized`, as a
fleet in its steady state: every machine known). Each report is signed with its machine's
Ed25519 key, which the collector verifies. Reports are sent over keep-alive connections from
a bare asyncio HTTP/1.1 client with `--concurrency` in flight (httpx's client was the
bottleneck: it reached only 566 requests/s against the bare endpoint). Printed: reports per
second and the latency percentiles, and, as the anchor measured in the same run, the same
requests against a bare Starlette endpoint that answers 202 without storing or verifying
anything. `--rate R` offers R reports a second instead (open loop), latency counted from when
each was due. Targets: at least 1,000 reports/s, p99 at most 50 ms, with SQLite and with
PostgreSQL (`--postgres`).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FLEET, ADMIN = "f" * 24, "a" * 24

_BARE = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def take(request):
    await request.body()
    return JSONResponse({"accepted": True}, 202)
app = Starlette(routes=[Route("/v1/reports", take, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer") from None
            time.sleep(0.05)


def _keys(machines: int) -> list[bytes]:
    from greenlight.channels import new_private_key

    return [new_private_key() for _ in range(machines)]


def _report(i: int, key: bytes) -> bytes:
    from greenlight.channels import key_id

    return json.dumps({
        "schema": "greenlight.report/1",
        "installation": key_id(key),
        "at": "2026-11-22T10:00:00Z", "channel": "beta",
        "outcome": "rolled-back" if i % 20 == 0 else "upgraded", "release": "1.6.11",
        "failed_checks": [{"name": "ui-session", "summary": "HTTP 403"}] if i % 20 == 0
        else []}).encode()


async def _send(url: str, keys: list[bytes], concurrency: int, rate: float | None = None
                ) -> tuple[float, list[float]]:
    """Send every report over `concurrency` keep-alive connections, one request in flight on
    each. A bare HTTP/1.1 client on asyncio streams (requests made up front, the answer read
    by its Content-Length), so that the sending side costs little beside the server.

    With `rate`, open loop: report i is due at i/rate seconds, and its latency counts from
    that moment, so that a server that falls behind is charged for the wait of the requests
    it held up (no coordinated omission)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    from greenlight.channels import sign_body

    latencies: list[float] = []
    requests = []
    for i, key in enumerate(keys):  # made and signed up front: the machines' own work
        body = _report(i, key)
        signed = "".join(f"{k}: {v}\r\n" for k, v in sign_body(key, body).items())
        requests.append((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         f"Authorization: Bearer {FLEET}\r\nContent-Type: application/json"
                         f"\r\n{signed}Content-Length: {len(body)}\r\n\r\n").encode() + body)
    next_report = iter(range(len(keys)))

    def request(i: int) -> bytes:
        return requests[i]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in next_report:
                data = request(i)
                started = time.perf_counter()
                if rate is not None:
                    due = began + i / rate
                    if due > started:
                        await asyncio.sleep(due - started)
                    started = due
                writer.write(data)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12]
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != b"202":
                    raise SystemExit(f"report {i}: HTTP {status.decode()}: {answer[:200]!r}")
        finally:
            writer.close()

    began = time.perf_counter() + (0.2 if rate else 0)  # open loop: connections open first
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies


def _load(url: str, keys: list[bytes]) -> None:
    """The fleet's keys, loaded as its provisioning would (`release machines load`)."""
    import httpx

    from greenlight.channels import public_key_text

    for start in range(0, len(keys), 10_000):
        answer = httpx.post(url + "v1/machines/load", timeout=120,
                            headers={"Authorization": f"Bearer {ADMIN}"},
                            json={"keys": [public_key_text(k)
                                           for k in keys[start:start + 10_000]]})
        if answer.status_code != 200:
            raise SystemExit(f"loading the keys: HTTP {answer.status_code}: {answer.text}")


def _figures(seconds: float, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"rate": len(latencies) / seconds,
            "p50": statistics.median(ordered) * 1000,
            "p99": ordered[int(len(ordered) * 0.99) - 1] * 1000}


def measure(machines: int, concurrency: int, db: str | None, rate: float | None = None
            ) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-collector-"))
    (work / "fleet").write_text(FLEET)
    (work / "admin").write_text(ADMIN)
    results = {}
    port = _port()
    collector = subprocess.Popen(
        [str(BIN / "release"), "collector", "--db", db or f"sqlite:///{work / 'c.sqlite3'}",
         "--port", str(port), "--fleet-token-file", str(work / "fleet"),
         "--admin-token-file", str(work / "admin"), "--enrolment", "preauthorized"],
        stdout=subprocess.DEVNULL)
    bare_port = _port()
    bare = subprocess.Popen([sys.executable, "-c", _BARE, str(bare_port)])
    keys = _keys(machines)
    try:
        _wait(f"http://127.0.0.1:{port}/v1/rollouts")
        _wait(f"http://127.0.0.1:{bare_port}/v1/reports")
        _load(f"http://127.0.0.1:{port}/", keys)
        results["collector"] = _figures(*asyncio.run(
            _send(f"http://127.0.0.1:{port}/v1/reports", keys, concurrency, rate)))
        results["bare starlette"] = _figures(*asyncio.run(
            _send(f"http://127.0.0.1:{bare_port}/v1/reports", keys, concurrency, rate)))
    finally:
        for proc in (collector, bare):
            proc.terminate()
            proc.wait(timeout=20)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop: offer this many reports a second, over "
                             "--concurrency connections (default: as fast as answered)")
    parser.add_argument("--db", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--postgres", action="store_true",
                        help="a throwaway PostgreSQL from Debian's packages (bench/postgres.py)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if args.postgres:
        from bench.postgres import temporary_postgres

        with temporary_postgres(_port()) as url:
            results = measure(args.machines, args.concurrency, url, args.rate)
    else:
        results = measure(args.machines, args.concurrency, args.db, args.rate)
    where = "PostgreSQL" if args.postgres else (args.db or "SQLite")
    offered = f"offered at {args.rate:.0f}/s over {args.concurrency} connections" if args.rate \
        else f"{args.concurrency} in flight"
    print(f"{args.machines} reports, {offered}, {where}")
    for name, f in results.items():
        print(f"  {name:<16} {f['rate']:7.0f} reports/s  p50 {f['p50']:6.1f} ms  "
              f"p99 {f['p99']:6.1f} ms")
    c, b = results["collector"], results["bare starlette"]
    print(f"  collector / bare: {c['rate'] / b['rate']:.2f}x the rate")


if __name__ == "__main__":
    main()
