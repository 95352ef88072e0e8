"""Collector replicas on one PostgreSQL: what a second replica and nginx in front give, what
a report costs in CPU, and how soon a survivor signs a halt once the leader is killed.

    python -m bench.replicas [--machines 10000] [--concurrency 32] [--rounds 3]

All on 127.0.0.1, on one throwaway PostgreSQL (`bench/postgres.py`, migrated once with
`release collector migrate`). Throughput: `--machines` signed reports, one per machine key,
a fresh set of keys per row (all loaded first, `--enrolment preauthorized`), sent as
`bench/collector_load.py` sends them: to one replica directly, to one behind nginx
(`bench/balancer.py`), to two behind nginx. The anchor, measured in the same run, is
collector_load's bare Starlette endpoint. `VACUUM ANALYZE` before each row (no autovacuum of
the fresh tables in one row and not another). Beside each row, CPU seconds per 1,000 reports
of the replicas, nginx and PostgreSQL (utime+stime of each process tree, from /proc), of the
sender (this process, with its signing) and of the whole machine (/proc/stat, with the
signing too), and what the machine spent outside those (others: when another program ran,
the row is DISTURBED); cores busy: the replicas' while timed, the machine's over the send.

Failover, `--rounds` times, each on a fresh repository and database: three replicas with
`--repo --tick 0.5`, the first started with `GREENLIGHT_KILL_AT=sign:halt` (it kills itself
with SIGKILL just before it would sign a halt) and leading before the others start; 40
machines report on the current release, then on a planned rollout where every fourth rolls
back. Timed: from the first replica's exit to `rollouts/stable.json` saying halted. The bound
is the lease's TTL + RENEW (`release/fleet/_lease.py`). A report the leader stored but did not
answer before it died is sent on by nginx and answered 200 "duplicate": counted, not failed.
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

from bench import collector_load as cl
from bench.balancer import balancer
from bench.postgres import temporary_postgres
from bench.rollout_halt import _halted

BURST = 100_000 / 600  # 100,000 machines each reporting once within a 10-minute step
PARTS = ("replicas", "nginx", "postgres", "sender", "machine")


def _replica(db: str, tokens: Path, port: int, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.Popen:
    """A replica started as collector_load's `measure` starts its one."""
    return subprocess.Popen(
        [str(cl.BIN / "release"), "collector", "--db", db, "--port", str(port),
         "--fleet-token-file", str(tokens / "fleet"),
         "--admin-token-file", str(tokens / "admin"), "--enrolment", "preauthorized", *extra],
        stdout=subprocess.DEVNULL, env=None if env is None else {**os.environ, **env})


def _sql(db: str, statement: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(db, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(statement))
    engine.dispose()


def _migrate(db: str) -> None:
    subprocess.run([str(cl.BIN / "release"), "collector", "migrate", "--db", db], check=True,
                   capture_output=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=20)


def _cpu(pg_port: int, nginx: Path | None, replicas: list[int]) -> dict[str, float]:
    """CPU seconds so far of the replicas', nginx's and PostgreSQL's process trees (children
    already reaped count in their parent's cutime/cstime), of this process, of the machine."""
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

    def tree(todo: list[int]) -> float:
        total = 0.0
        while todo:
            pid = todo.pop()
            total += procs[pid][2] if pid in procs else 0.0
            todo += children.get(pid, [])
        return total

    def find(*words: str) -> list[int]:  # the topmost processes whose command has them all
        found = {pid for pid, (_, cmd, _) in procs.items() if all(w in cmd for w in words)}
        return [pid for pid in found if procs[pid][0] not in found]

    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return {"replicas": tree(list(replicas)),
            "nginx": tree(find("nginx", f"{nginx}/nginx.conf")) if nginx else 0.0,
            "postgres": tree(find("bin/postgres", f"-p {pg_port} ")),
            "sender": time.process_time(),
            "machine": (sum(cpu) - cpu[3] - cpu[4]) / tick}  # all but idle and iowait


def throughput(db: str, pg_port: int, machines: int, concurrency: int, work: Path
               ) -> dict[str, dict[str, float]]:
    warm = 2 * concurrency
    keys = cl._keys(3 * machines + warm)  # a fresh set per row: no report is a duplicate
    sets = [keys[i * machines:(i + 1) * machines] for i in range(3)]
    ports, bare_port, results = [cl._port(), cl._port()], cl._port(), {}
    direct = f"http://127.0.0.1:{ports[0]}/"
    replicas = [_replica(db, work, p) for p in ports]
    bare = subprocess.Popen([sys.executable, "-c", cl._BARE, str(bare_port)])
    try:
        for p in ports:
            cl._wait(f"http://127.0.0.1:{p}/v1/rollouts")
        cl._wait(f"http://127.0.0.1:{bare_port}/v1/reports")
        cl._load(direct, keys)  # the replicas share the database: loaded once for both
        with balancer(ports[:1], work / "nginx1") as one, balancer(ports, work / "nginx2") as two:
            asyncio.run(cl._send(two + "v1/reports", keys[-warm:], concurrency))  # both warm
            results["bare starlette"] = cl._figures(*asyncio.run(cl._send(
                f"http://127.0.0.1:{bare_port}/v1/reports", sets[0], concurrency)))
            for name, url, these, nginx, used in [
                    ("one replica, direct", direct, sets[0], None, replicas[:1]),
                    ("one replica, nginx", one, sets[1], work / "nginx1", replicas[:1]),
                    ("two replicas, nginx", two, sets[2], work / "nginx2", replicas)]:
                _sql(db, "VACUUM ANALYZE")  # no autovacuum of the fresh tables mid-row
                pids = [r.pid for r in used]
                before, began = _cpu(pg_port, nginx, pids), time.monotonic()
                seconds, latencies = asyncio.run(cl._send(url + "v1/reports", these, concurrency))
                wall, after = time.monotonic() - began, _cpu(pg_port, nginx, pids)
                results[name] = {**cl._figures(seconds, latencies), "wall": wall,
                                 **{k: (after[k] - before[k]) * 1000 / machines for k in PARTS}}
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
    return body, {"Authorization": f"Bearer {cl.FLEET}", "Content-Type": "application/json",
                  **sign_body(key, body)}


def failover(db: str, tokens: Path, work: Path, builds: Path) -> tuple[float, int]:
    """Seconds from the leader's SIGKILL (where it would sign a halt) to the signed halt, and
    how many reports were answered as duplicates (the killed leader stored them and died
    before it answered; nginx sent them on to a survivor)."""
    import httpx

    from greenlight.channels import HaltRule, RolloutPlan
    from greenlight.release import current_channel_file, init_repository, publish

    from examples.demo.build import build

    _migrate(db)
    work.mkdir(parents=True)
    repo = init_repository(work / "repo")
    publish(repo, "stable", "1.0", build("1.0", builds / "1.0", ()))
    prior = current_channel_file(repo, "stable").identity.key
    extra = ["--repo", str(repo.path), "--tick", "0.5"]
    ports = [cl._port(), cl._port(), cl._port()]
    url = f"http://127.0.0.1:{ports[0]}/"
    first = _replica(db, tokens, ports[0], *extra, env={"GREENLIGHT_KILL_AT": "sign:halt"})
    replicas, failed, again = [first], [], []
    try:
        cl._wait(url + "v1/rollouts")
        deadline, admin = time.monotonic() + 30, {"Authorization": f"Bearer {cl.ADMIN}"}
        while not httpx.get(url + "v1/rollouts", headers=admin).json()["leader"]["this"]:
            if time.monotonic() > deadline:
                raise SystemExit("the first replica did not lead within 30 s")
            time.sleep(0.05)
        replicas += [_replica(db, tokens, p, *extra) for p in ports[1:]]
        for p in ports[1:]:
            cl._wait(f"http://127.0.0.1:{p}/v1/rollouts")
        machines = cl._keys(40)
        cl._load(url, machines)
        with balancer(ports, work / "nginx") as front, httpx.Client(timeout=30) as client:
            def send(release_key: str, outcome: str, n: int) -> None:
                body, headers = _report(machines[n % 40], release_key, outcome, n)
                answer = client.post(front + "v1/reports", content=body, headers=headers)
                if answer.status_code == 200 and answer.json().get("duplicate"):
                    again.append(n)
                elif answer.status_code != 202:
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
    return halted, len(again)


def _print(machines: int, concurrency: int, r: dict[str, dict[str, float]],
           times: list[float], again: int) -> None:
    from greenlight.release.fleet._lease import RENEW, TTL

    print(f"{machines} signed reports per row, {concurrency} in flight, one PostgreSQL, "
          f"{os.cpu_count()} cores")
    print(f"  {'':<20} {'':>9} {'':>6} {'':>6} {'CPU s per 1,000 reports':<54}  cores busy")
    print(f"  {'':<20} {'reports/s':>9} {'p50 ms':>6} {'p99 ms':>6} "
          + "".join(f"{k:>9}" for k in (*PARTS, "others")) + "  replicas machine")
    disturbed = []
    for name, f in r.items():
        if "wall" in f:
            f["others"] = f["machine"] - sum(f[k] for k in PARTS[:4])
            disturbed += [name] if f["others"] > 0.1 else []
        cpu = "".join(f"{f[k]:9.2f}" for k in (*PARTS, "others")) + (
            f"{f['replicas'] * f['rate'] / 1000:10.2f}"
            f"{f['machine'] * machines / 1000 / f['wall']:9.2f}") if "wall" in f else ""
        print(f"  {name:<20} {f['rate']:9.0f} {f['p50']:6.1f} {f['p99']:6.1f} {cpu}")
    if disturbed:
        print(f"  DISTURBED: other processes took CPU during {', '.join(disturbed)}")
    b, d, one, two = r.values()
    print(f"  two replicas / one: {two['rate'] / one['rate']:.2f}x (both behind nginx), "
          f"{two['rate'] / d['rate']:.2f}x (one direct)")
    print(f"  one behind nginx / direct: {one['rate'] / d['rate']:.2f}x; each / bare: "
          f"{d['rate'] / b['rate']:.2f}x, {one['rate'] / b['rate']:.2f}x, "
          f"{two['rate'] / b['rate']:.2f}x")
    print(f"  100,000 machines within a 10-minute step ({BURST:.0f} reports/s) at these costs: "
          + ", ".join(f"{k} {two[k] * BURST / 1000:.2f}" for k in PARTS[:3]) + " cores")
    print(f"failover, the leader killed where it would sign a halt, to the halt signed by a "
          f"survivor: median {statistics.median(times):.2f} s, worst {max(times):.2f} s")
    print(f"  rounds ({len(times)}): {', '.join(f'{t:.2f}' for t in times)} s; bound TTL "
          f"{TTL:g} s + RENEW {RENEW:g} s = {TTL + RENEW:g} s: "
          f"{'met' if max(times) <= TTL + RENEW else 'EXCEEDED'}; {again} report(s) answered "
          "200 duplicate (the leader stored them and died before it answered)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-replicas-"))
    (work / "fleet").write_text(cl.FLEET)
    (work / "admin").write_text(cl.ADMIN)
    pg_port, times, again = cl._port(), [], 0
    try:
        with temporary_postgres(pg_port) as url:
            _migrate(url)
            r = throughput(url, pg_port, args.machines, args.concurrency, work)
            for n in range(args.rounds):  # a fresh database in the same PostgreSQL
                _sql(url, f"CREATE DATABASE round{n}")
                t, a = failover(url.rsplit("/", 1)[0] + f"/round{n}", work, work / f"round{n}",
                                work / "builds")
                times, again = [*times, t], again + a
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(args.machines, args.concurrency, r, times, again)


if __name__ == "__main__":
    main()
