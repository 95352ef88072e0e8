"""The agent between cycles: CPU and resident memory while it sleeps, against a bare
interpreter sleeping, measured in the same run.

    python -m bench.agent_idle [--seconds 5]

A repository with one release is served on 127.0.0.1; `updater agent` with a one-hour
interval takes the release, writes its next check into status.json, and sleeps. Then its
CPU time (utime + stime from /proc) over `--seconds` and its VmRSS are read. Targets: no CPU
while idle, at most 40 MB RSS.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from greenlight.release import init_repository, publish, serving

from bench.overhead import demo_archives

BIN = Path(sys.executable).parent
TICK = 100  # clock ticks per second (os.sysconf("SC_CLK_TCK") on Linux)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _idle(pid: int, seconds: float) -> tuple[float, float]:
    before = _cpu_seconds(pid)
    time.sleep(seconds)  # a benchmark measures over a span; this is the span
    return _cpu_seconds(pid) - before, _rss_mib(pid)


def measure(seconds: float = 5.0) -> dict[str, float]:
    import os

    global TICK
    TICK = os.sysconf("SC_CLK_TCK")
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-agent-"))
    repo = init_repository(work / "repo")
    publish(repo, "stable", "1.0", demo_archives(work / "builds", "1.0"))
    root = work / "root"
    with serving(repo.path) as server:
        subprocess.run([str(BIN / "updater"), "init", "--root", str(root), "--repo",
                        server.url, "--trust", str(repo.metadata_dir / "1.root.json")],
                       check=True, capture_output=True)
        with (root / "greenlight.toml").open("a") as f:
            f.write("\n[agent]\ninterval = 3600\njitter = 0\n")
        agent = subprocess.Popen([str(BIN / "updater"), "agent", "--root", str(root)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        try:
            status = root / "state" / "status.json"
            deadline = time.monotonic() + 60
            children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children")
            while True:  # asleep once the cycle wrote when it checks next and has exited
                try:
                    if (json.loads(status.read_text()).get("next_check")
                            and not children.read_text().strip()):
                        break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise SystemExit("the agent did not reach its first sleep")
                time.sleep(0.05)
            cpu, rss = _idle(agent.pid, seconds)
            bare_cpu, bare_rss = _idle(bare.pid, 0.1)
        finally:
            agent.terminate()
            bare.terminate()
            agent.wait(timeout=10)
            bare.wait(timeout=10)
    return {"cpu": cpu, "rss": rss, "bare_rss": bare_rss, "seconds": seconds,
            "bare_cpu": bare_cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    m = measure(parser.parse_args().seconds)
    print(f"agent idle {m['seconds']:.0f} s: CPU {m['cpu'] * 1000:.0f} ms, "
          f"RSS {m['rss']:.1f} MiB (bare python sleeping: {m['bare_rss']:.1f} MiB, "
          f"{m['rss'] / m['bare_rss']:.2f}x)")


if __name__ == "__main__":
    main()
