"""What an upgrade costs the UI: refused connections, failed requests and p99 latency while a
client calls the demo core's UI endpoint through a good upgrade, a bad upgrade and a rollback,
for today's stop-start order against held sockets with preflight, and with a handover too
(`handover = true`: the new core takes the sockets beside the old one), in the same run.

    python -m bench.hitless [--runs 1]

Each order gets its own machine (a root installed with `updater`, from a repository served on
127.0.0.1) of the demo product: its releases' manifests are the same but for `[[socket]]`
(`examples.demo.config.manifest_toml(held=...)`). Per order, with the client
(`examples.demo.hammer`: one request after another, each on a new connection, with the UI's
token) running throughout each step:

- good:     `updater upgrade` 1.0 -> 1.1
- bad:      `updater upgrade` on beta to 1.2, whose core refuses the UI's token (the incident)
- rollback: `updater rollback` 1.1 -> 1.0

Anchors measured in the same run: the p99 of the same client with nothing happening (the
baseline), and the demo core's start-up (launch to first answer, median of 5), which bounds
the added p99 of a switch ("max" is the longest single call: the one that waited through the
switch). Targets (held sockets with preflight, with or without handover): no refused
connection and no failed request through the good and the bad upgrade; the added p99 no more
than the core's start-up.
"""

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from greenlight.release import init_repository, publish, serving

from bench.overhead import wait_for_port
from examples.demo.build import build
from examples.demo.config import configure_machine, manifest_toml
from examples.demo.hammer import Hammer, Tally

BIN = Path(sys.executable).parent
STEPS = ("good", "bad", "rollback")
ORDERS = (("stop-start (today)", "today"), ("held sockets + preflight", "held"),
          ("+ handover", "handover"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _updater(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "updater"), *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=300)


def core_startup(work: Path, runs: int = 5) -> float:
    """The demo core's start-up: launched to its first answer on a port of its own."""
    archives = build("0.1", work / "startup-build")
    folder = work / "startup"
    shutil.unpack_archive(archives["core"], folder)
    (work / "token").write_text("t" * 32 + "\n")
    times = []
    for _ in range(runs):
        port = _free_port()
        started = time.perf_counter()
        core = subprocess.Popen([sys.executable, str(folder / "core.py"), "--port", str(port),
                                 "--token-file", str(work / "token")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, timeout=30)
            times.append(time.perf_counter() - started)
        finally:
            core.terminate()
            core.wait()
    return statistics.median(times)


def _machine(work: Path, held: bool, handover: bool = False) -> dict[str, float | Tally]:
    """One order's three steps on a machine of its own; each step's tally, and a baseline."""
    repo = init_repository(work / "repo")
    builds = work / "builds"
    product = work / "product.toml"
    product.write_text(manifest_toml(soak=1.0, grace=6.0, held=held, handover=handover))

    def release(version: str, channel: str = "stable", *faults: str) -> None:
        publish(repo, channel, version, build(version, builds / version, faults),
                manifest=product, fallback="stable" if channel != "stable" else None)

    results: dict[str, float | Tally] = {}
    with serving(repo.path) as server:
        root = work / "root"
        release("1.0")
        done = _updater(root, "init", "--repo", server.url, "--trust",
                        str(repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        port = _free_port()
        configure_machine(root, port, _free_port())
        token = (root / "data" / "ui-token").read_text().strip()
        try:
            assert _updater(root, "upgrade").returncode == 0
            with Hammer(port, token, limit=20_000, seconds=3.0) as idle:
                idle._thread.join()
            results["baseline"] = idle.tally
            release("1.1")
            release("1.2", "beta", "refuse-ui-token")
            for step, args, expect in (("good", ("upgrade",), 0), ("bad", ("upgrade",), 20),
                                       ("rollback", ("rollback",), 0)):
                if step == "bad":  # beta's 1.2 falls back to stable, 1.1 again
                    assert _updater(root, "channel", "beta").returncode == 0
                with Hammer(port, token, limit=50_000, seconds=240) as h:
                    started = time.monotonic()
                    done = _updater(root, *args)
                    results[f"{step}_seconds"] = time.monotonic() - started
                assert done.returncode == expect, f"{step}: {done.stdout}{done.stderr}"
                results[step] = h.tally
        finally:
            _updater(root, "stop")
    return results


def _row(name: str, step: str, r: dict[str, float | Tally], base: float) -> str:
    t = r[step]
    assert isinstance(t, Tally)
    p99 = t.percentile(99)
    return (f"{name:<24} {step:<9} {t.requests:>8} {t.count('refused'):>8} "
            f"{t.count('failed'):>7} {p99 * 1000:>9.1f} {(p99 - base) * 1000:>10.1f} "
            f"{t.percentile(100) * 1000:>8.1f} {r[f'{step}_seconds']:>7.1f}")


def measure(work: Path) -> dict[str, object]:
    startup = core_startup(work / "anchor")
    today = _machine(work / "today", held=False)
    held = _machine(work / "held", held=True)
    handover = _machine(work / "handover", held=True, handover=True)
    return {"startup": startup, "today": today, "held": held, "handover": handover}


def report(m: dict[str, object]) -> tuple[list[str], bool]:
    """The table's lines, and whether the targets are met."""
    startup = m["startup"]
    assert isinstance(startup, float)
    lines = [f"{'order':<24} {'step':<9} {'requests':>8} {'refused':>8} {'failed':>7} "
             f"{'p99 ms':>9} {'added ms':>10} {'max ms':>8} {'secs':>7}"]
    met = True
    for name, key in ORDERS:
        r = m[key]
        assert isinstance(r, dict)
        base = r["baseline"].percentile(99)
        for step in STEPS:
            lines.append(_row(name, step, r, base))
        if key != "today":
            for step in STEPS:
                t = r[step]
                if step != "rollback" and (t.count("refused") or t.count("failed")):
                    met = False
                if t.percentile(99) - base > startup:
                    met = False
        lines.append(f"{'':<24} baseline p99 {base * 1000:.1f} ms, "
                     f"{r['baseline'].requests} requests in 3 s")
    lines.append(f"anchor: the demo core's start-up (launch to first answer) "
                 f"{startup * 1000:.0f} ms")
    lines.append("targets (held sockets + preflight, with or without handover): 0 refused "
                 "and 0 failed through the good and the bad upgrade; added p99 <= the core's "
                 "start-up: " + ("met" if met else "MISSED"))
    return lines, met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="also print the raw counts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    try:
        m = measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines, _ = report(m)
    print("\n".join(lines))
    if args.json:
        print(json.dumps({k: {s: {"refused": v[s].count("refused"),
                                  "failed": v[s].count("failed"),
                                  "errors": v[s].errors[:5]}
                              for s in ("baseline", *STEPS)}
                          for k, v in m.items() if isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
