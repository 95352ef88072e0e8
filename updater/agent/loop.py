"""The agent's long-running process; the standard library only, imports nothing of Greenlight.

    python -I -S loop.py --root ROOT -- UPDATER_ARGV...

`updater agent` becomes this loop (by exec), so what stays resident between cycles is a bare
interpreter: no HTTP client, TUF or pydantic in memory while it sleeps (bench/agent_idle.py
measures it). Each cycle is a child, `UPDATER_ARGV agent --once`, which does the work with the
whole updater, writes state/status.json, and reports how long to wait (the interval with its
jitter, or a back-off after an error) and the count of failures in a row to a small file this
loop reads. A child that crashes or hangs past CYCLE_LIMIT is retried with the same back-off.
A cycle killed in the middle of a transaction is recovered by the next one.
"""

import contextlib
import json
import os
import subprocess
import sys
import time

__all__ = ["CYCLE_LIMIT", "main"]

CYCLE_LIMIT = 2 * 3600.0  # every wait inside a cycle is bounded; this bounds the sum
USAGE = "usage: loop.py --root ROOT -- UPDATER_ARGV..."


def _log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {line}", flush=True)


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if len(args) < 4 or args[0] != "--root" or args[2] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    root, updater = args[1], args[3:]
    report = os.path.join(root, "state", "agent-cycle.json")
    failures = 0
    while True:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(report)
        argv = [*updater, "agent", "--once", "--root", root, "--failures", str(failures),
                "--report", report]
        try:
            subprocess.run(argv, timeout=CYCLE_LIMIT)
        except subprocess.TimeoutExpired:
            _log(f"a cycle ran past {CYCLE_LIMIT:.0f}s and was stopped")
        except OSError as e:
            _log(f"cannot run the updater: {e.strerror or e}")
        try:
            with open(report) as f:
                done = json.load(f)
            wait, failures = float(done["wait"]), int(done["failures"])
        except (OSError, ValueError, KeyError, TypeError):
            failures += 1
            wait = min(3600.0, 30.0 * 2 ** (failures - 1))
            _log(f"the cycle ended without a report; next in {wait:.0f}s")
        time.sleep(max(0.0, wait))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
