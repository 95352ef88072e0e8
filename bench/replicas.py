"""Collector replicas on one PostgreSQL: what a second replica and nginx in front give, what
each report costs in CPU, and how soon a survivor signs a halt once the leader is killed.

    python -m bench.replicas [--machines 8000] [--concurrency 32] [--rounds 3]

All on 127.0.0.1, on one throwaway PostgreSQL (`bench/postgres.py`, migrated once with
`release collector migrate`). Throughput: `--machines` signed reports, one per machine key,
a fresh set of keys per row (loaded first, `--enrolment preauthorized`), sent as
`bench/collector_load.py` sends them to one replica directly, to one behind nginx
(`bench/balancer.py`) and to two behind nginx; the anchor, measured in the same run, is
collector_load's bare Starlette endpoint. Beside each row, the CPU seconds per 1,000 reports
of the replicas, nginx and PostgreSQL (utime+stime of each process tree, from /proc) and of
the sender (this process, with its signing).

Failover, `--rounds` times on a fresh repository and database: three replicas with
`--repo --tick 0.5`, the first started with `GREENLIGHT_KILL_AT=sign:halt` (it kills itself
with SIGKILL just before it would sign a halt) and leading before the others start; 40
machines report on the current release, then on a planned rollout where every fourth rolls
back. Timed: from the first replica's exit to `rollouts/stable.json` saying halted. The bound
is the lease's TTL + RENEW (`release/fleet/_lease.py`).
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.balancer import balancer
from bench.collector_load import (
    _BARE,
    ADMIN,
    BIN,
    FLEET,
    _figures,
    _keys,
    _load,
    _port,
    _send,
    _wait,
)
from bench.postgres import temporary_postgres
from bench.rollout_halt import _halted

BURST = 100_000 / 600  # 100,000 machines each reporting once within a 10-minute step
PARTS = ("replicas", "nginx", "postgres", "sender", "machine")


def _replica(db: str, tokens: Path, port: int, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.Popen:
    """A replica started as collector_load's `measure` starts its one (tokens in `tokens`)."""
    return subprocess.Popen(
        [str(BIN / "release"), "collector", "--db", db, "--port", str(port),
         "--fleet-token-file", str(tokens / "fleet"),
         "--admin-token-file", str(tokens / "admin"),
         "--enrolment", "preauthorized", *extra],
        stdout=subprocess.DEVNULL, env=None if env is None else {**os.environ, **env})


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=20)


def _cpu(pg_port: int, nginx: Path | None, replicas: list[int]) -> dict[str, float]:
    """CPU seconds so far of the replicas', nginx's and PostgreSQL's process trees (children
    already reaped count in their parent's cutime/cstime), of this process, and of the whole
    machine (/proc/stat)."""
    tick, procs = os.sysconf("SC_CLK_TCK"), {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        procs[int(d.name)] = int(f[1]), cmd, sum(map(int, f[11:15])) / tick
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in procs.items():
        children.setdefault(parent, []).append(pid)

    def tree(roots: list[int]) -> float:
        todo, total = list(roots), 0.0
        while todo:
            pid = todo.pop()
            total += procs[pid][2] if pid in procs else 0.0
            todo += children.get(pid, [])
        return total

    def find(*words: str) -> list[int]:  # the topmost processes whose command has them all
        found = {pid for pid, (_, cmd, _) in procs.items() if all(w in cmd for w in words)}
        return [pid for pid in found if procs[pid][0] not in found]

    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return {"replicas": tree(replicas),
            "nginx": tree(find("nginx", f"{nginx}/nginx.conf")) if nginx else 0.0,
            "postgres": tree(find("bin/postgres", f"-p {pg_port} ")),
            "sender": time.process_time(),
            "machine": (sum(cpu) - cpu[3] - cpu[4]) / tick}  # all but idle and iowait


def throughput(db: str, pg_port: int, machines: int, concurrency: int, work: Path
               ) -> dict[str, dict[str, float]]:
    warm = 2 * concurrency
    keys = _keys(3 * machines + warm)  # a fresh set per row: no report is a duplicate
    sets = [keys[i * machines:(i + 1) * machines] for i in range(3)]
    ports, bare_port, results = [_port(), _port()], _port(), {}
    direct = [f"http://127.0.0.1:{p}/" for p in ports]
    replicas = [_replica(db, work, p) for p in ports]
    bare = subprocess.Popen([sys.executable, "-c", _BARE, str(bare_port)])
    try:
        for url in direct:
            _wait(url + "v1/rollouts")
        _wait(f"http://127.0.0.1:{bare_port}/v1/reports")
        _load(direct[0], keys)  # the replicas share the database: loaded once for both
        with balancer(ports[:1], work / "nginx1") as one, balancer(ports, work / "nginx2") as two:
            asyncio.run(_send(two + "v1/reports", keys[-warm:], concurrency))  # both warm
            results["bare starlette"] = _figures(*asyncio.run(_send(
                f"http://127.0.0.1:{bare_port}/v1/reports", sets[0], concurrency)))
            for name, url, these, nginx, used in [
                    ("one replica, direct", direct[0], sets[0], None, replicas[:1]),
                    ("one replica, nginx", one, sets[1], work / "nginx1", replicas[:1]),
                    ("two replicas, nginx", two, sets[2], work / "nginx2", replicas)]:
                pids = [r.pid for r in used]
                before, began = _cpu(pg_port, nginx, pids), time.monotonic()
                seconds, latencies = asyncio.run(_send(url + "v1/reports", these, concurrency))
                wall, after = time.monotonic() - began, _cpu(pg_port, nginx, pids)
                results[name] = {**_figures(seconds, latencies), "seconds": seconds,
                                 "wall": wall,
                                 **{k: (after[k] - before[k]) * 1000 / len(these)
                                    for k in after}}
    finally:
        _stop([*replicas, bare])
    return results


def _report(key: bytes, release_key: str, outcome: str, n: int) -> tuple[bytes, dict]:
    from greenlight.channels import key_id, sign_body

    at = datetime.now(UTC).isoformat()
    body = json.dumps({
        "schema": "greenlight.report/1", "installation": key_id(key), "at": at, "sent": at,
        "channel": "stable", "outcome": outcome, "release": release_key.split("@")[0],
        "release_key": release_key, "id": f"{n:032x}",
        "failed_checks": [{"name": "ui-session", "summary": "HTTP 403"}]
        if outcome == "rolled-back" else []}).encode()
    return body, {"Authorization": f"Bearer {FLEET}", "Content-Type": "application/json",
                  **sign_body(key, body)}


def _leads(url: str) -> bool:
    import httpx

    answer = httpx.get(url + "v1/rollouts", timeout=10,
                       headers={"Authorization": f"Bearer {ADMIN}"})
    if answer.status_code != 200:
        raise SystemExit(f"GET /v1/rollouts: HTTP {answer.status_code}: {answer.text[:300]}")
    return bool(answer.json()["leader"]["this"])


def failover(db: str, tokens: Path, work: Path, builds: Path) -> float:
    """Seconds from the leader's SIGKILL (where it would sign a halt) to the signed halt."""
    import httpx

    from greenlight.channels import HaltRule, RolloutPlan
    from greenlight.release import current_channel_file, init_repository, publish

    from examples.demo.build import build

    subprocess.run([str(BIN / "release"), "collector", "migrate", "--db", db], check=True,
                   capture_output=True)
    work.mkdir(parents=True, exist_ok=True)
    repo = init_repository(work / "repo")
    publish(repo, "stable", "1.0", build("1.0", builds / "1.0", ()))
    prior = current_channel_file(repo, "stable").identity.key
    extra = ["--repo", str(repo.path), "--tick", "0.5"]
    ports = [_port(), _port(), _port()]
    url = f"http://127.0.0.1:{ports[0]}/"
    first = _replica(db, tokens, ports[0], *extra, env={"GREENLIGHT_KILL_AT": "sign:halt"})
    replicas, failed = [first], []
    try:
        _wait(url + "v1/rollouts")
        deadline = time.monotonic() + 30
        while not _leads(url):
            if time.monotonic() > deadline:
                raise SystemExit("the first replica did not lead within 30 s")
            time.sleep(0.05)
        replicas += [_replica(db, tokens, p, *extra) for p in ports[1:]]
        for p in ports[1:]:
            _wait(f"http://127.0.0.1:{p}/v1/rollouts")
        machines = _keys(40)
        _load(url, machines)
        with balancer(ports, work / "nginx") as front, httpx.Client(timeout=30) as client:
            def send(release_key: str, outcome: str, n: int) -> None:
                body, headers = _report(machines[n % 40], release_key, outcome, n)
                answer = client.post(front + "v1/reports", content=body, headers=headers)
                if answer.status_code != 202:
                    failed.append(f"report {n}: HTTP {answer.status_code}: {answer.text}")

            for i in range(40):  # known on the current release first
                send(prior, "upgraded", i)
            key = publish(repo, "stable", "1.1", build("1.1", builds / "1.1", ()),
                          rollout_plan=RolloutPlan(
                              steps=[50, 100], soak=3600, started_at=datetime.now(UTC),
                              halt=HaltRule(rollbacks=3, failure_ratio=0.05, min_reports=20))
                          ).identity.key
            sender = threading.Thread(target=lambda: [
                send(key, "rolled-back" if i % 4 == 0 else "upgraded", 40 + i)
                for i in range(40)])
            sender.start()
            try:
                code = first.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise SystemExit(f"the leader was not killed within 60 s {failed}") from None
            killed = time.monotonic()
            if code != -9:
                raise SystemExit(f"the first replica exited with {code}, not SIGKILL")
            while not _halted(repo.path, "stable", key):
                if time.monotonic() - killed > 60:
                    raise SystemExit("no survivor signed the halt within 60 s")
                time.sleep(0.01)
            halted = time.monotonic() - killed
            sender.join()
    finally:
        _stop(replicas)
    if failed:
        raise SystemExit("\n".join(failed))
    return halted


def main() -> None:
    from greenlight.release.fleet._lease import RENEW, TTL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import sqlalchemy as sa

    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-replicas-"))
    (work / "fleet").write_text(FLEET)
    (work / "admin").write_text(ADMIN)
    pg_port, times = _port(), []
    try:
        with temporary_postgres(pg_port) as url:
            subprocess.run([str(BIN / "release"), "collector", "migrate", "--db", url],
                           check=True, capture_output=True)
            r = throughput(url, pg_port, args.machines, args.concurrency, work)
            engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
            for n in range(args.rounds):
                with engine.connect() as c:
                    c.execute(sa.text(f"CREATE DATABASE round{n}"))
                times.append(failover(url.rsplit("/", 1)[0] + f"/round{n}", work,
                                      work / f"round{n}", work / "builds"))
            engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.machines} signed reports per row, {args.concurrency} in flight, one "
          f"PostgreSQL, {os.cpu_count()} cores")
    print("  CPU s per 1,000 reports: of the replicas, nginx, PostgreSQL, the sender and the "
          "whole machine (both with the sender's signing)")
    print(f"  {'':<20} {'reports/s':>9} {'p50 ms':>7} {'p99 ms':>7}  " + " ".join(
        f"{k:>8}" for k in PARTS))
    for name, f in r.items():
        cpu = " ".join(f"{f[k]:8.2f}" for k in PARTS) if "replicas" in f else ""
        print(f"  {name:<20} {f['rate']:9.0f} {f['p50']:7.1f} {f['p99']:7.1f}  {cpu}")
    b, d, one, two = r.values()
    print(f"  two replicas / one: {two['rate'] / one['rate']:.2f}x (both behind nginx), "
          f"{two['rate'] / d['rate']:.2f}x (one direct); one behind nginx / direct: "
          f"{one['rate'] / d['rate']:.2f}x; each / bare: {d['rate'] / b['rate']:.2f}x, "
          f"{one['rate'] / b['rate']:.2f}x, {two['rate'] / b['rate']:.2f}x")
    busy = {k: two[k] * two["rate"] / 1000 for k in PARTS[:3]}
    print("  two replicas, cores busy while timed: " + ", ".join(
        f"{k} {v:.2f}" for k, v in busy.items()) + f"; the whole machine "
        f"{two['machine'] * args.machines / 1000 / two['wall']:.2f} of {os.cpu_count()} over "
        "the send with its signing")
    print(f"  100,000 machines reporting within a 10-minute step ({BURST:.0f} reports/s), at "
          "these costs: " + ", ".join(f"{k} {two[k] * BURST / 1000:.2f}" for k in PARTS[:3])
          + " cores")
    print(f"failover, leader killed (SIGKILL) where it would sign a halt, to the halt signed by "
          f"a survivor: median {statistics.median(times):.2f} s, worst {max(times):.2f} s over "
          f"{len(times)} rounds ({', '.join(f'{t:.2f}' for t in times)}); bound TTL {TTL:g} s "
          f"+ RENEW {RENEW:g} s = {TTL + RENEW:g} s: "
          f"{'met' if max(times) <= TTL + RENEW else 'EXCEEDED'}")

if __name__ == "__main__":
    main()
