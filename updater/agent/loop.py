"""The agent's long-running process; the standard library only, imports nothing of Greenlight.

    python -I -S loop.py --root ROOT --cycle-limit S --stop-limit S -- UPDATER_ARGV...

`updater agent` becomes this loop (by exec), so what stays resident between cycles is a bare
interpreter: no HTTP client, TUF or pydantic in memory while it sleeps (bench/agent_idle.py
measures it). Each cycle is a child, `UPDATER_ARGV agent --once`, which does the work with the
whole updater, writes state/status.json, and reports how long to wait (the interval with its
jitter, or a back-off after an error) and the count of failures in a row to a small file this
loop reads. A child that crashes or hangs past the cycle limit is retried with the same back-off.
A cycle killed in the middle of a transaction is recovered by the next one.

Stopping: SIGTERM or SIGINT while a cycle runs is passed to it (it undoes or finishes its
transaction and releases the root's lock); the loop waits up to the stop limit for it and
then exits 0, so that a service manager's stop leaves nothing running that holds the root. While
it sleeps, the loop exits at once.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

__all__ = ["main"]

# Both limits are the agent policy's (greenlight.updater.policy: CYCLE_LIMIT, STOP_LIMIT),
# passed on the command line since this loop imports nothing of Greenlight.
USAGE = "usage: loop.py --root ROOT --cycle-limit S --stop-limit S -- UPDATER_ARGV..."


class _Stop(Exception):
    """A stop arrived while no cycle ran."""


def _log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {line}", flush=True)


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    try:
        if args[0::2][:3] != ["--root", "--cycle-limit", "--stop-limit"] or args[6] != "--":
            raise ValueError
        root, limits, updater = args[1], (float(args[3]), float(args[5])), args[7:]
        if not updater:
            raise ValueError
    except (IndexError, ValueError):
        print(USAGE, file=sys.stderr)
        return 2
    report = os.path.join(root, "state", "agent-cycle.json")
    failures = 0
    running: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)
        if running and running[0].poll() is None:
            with contextlib.suppress(ProcessLookupError):
                running[0].send_signal(signal.SIGTERM)  # it undoes or finishes, then exits
            return
        raise _Stop

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        while True:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(report)
            argv = [*updater, "agent", "--once", "--root", root, "--failures", str(failures),
                    "--report", report]
            _cycle(argv, running, stopping, limits)
            if stopping:
                break
            wait, failures = _next(report, failures)
            time.sleep(max(0.0, wait))
    except _Stop:
        pass
    _log(f"stopped by {signal.Signals(stopping[0]).name}")
    return 0


def _cycle(argv: list[str], running: "list[subprocess.Popen[bytes]]", stopping: list[int],
           limits: tuple[float, float]) -> None:
    """Run one cycle to its end: within the cycle limit, or the stop limit once told to
    stop."""
    cycle_limit, stop_limit = limits
    try:
        child = subprocess.Popen(argv)
    except OSError as e:
        _log(f"cannot run the updater: {e.strerror or e}")
        return
    running[:] = [child]
    started, stop_at = time.monotonic(), None
    try:
        while child.poll() is None:
            if stopping and stop_at is None:
                stop_at = time.monotonic() + stop_limit
            now = time.monotonic()
            if now - started > cycle_limit or (stop_at is not None and now > stop_at):
                _log("a cycle did not end in time and was killed")
                child.kill()
                child.wait()
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.5)
    finally:
        running.clear()


def _next(report: str, failures: int) -> tuple[float, int]:
    """The wait before the next cycle and the failures in a row, from the cycle's report."""
    try:
        with open(report) as f:
            done = json.load(f)
        return float(done["wait"]), int(done["failures"])
    except (OSError, ValueError, KeyError, TypeError):
        failures += 1
        wait = min(3600.0, 30.0 * 2 ** (failures - 1))
        _log(f"the cycle ended without a report; next in {wait:.0f}s")
        return wait, failures


if __name__ == "__main__":
    sys.exit(main())
