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

The loop never takes a signal by a handler: it keeps SIGTERM and SIGINT blocked and waits for
them (sigtimedwait) where it waits anyway, in its sleep and while a cycle runs. A stop is
therefore never lost in a window between two statements, nor across `updater agent`'s exec
(which blocks them before it), and a cycle is never started unseen. Each cycle inherits the
blocked set and unblocks it once its own handlers are in place (`handle_interrupts`), so a
stop passed to it during its start-up waits for it instead of being lost.
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


STOPS = {signal.SIGTERM, signal.SIGINT}


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
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # already so after `updater agent`
    failures, wait = 0, 0.0
    entered = os.path.realpath(updater[0])
    while True:
        stop = _waited(wait)
        if stop is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(report)
            argv = [*updater, "agent", "--once", "--root", root, "--failures", str(failures),
                    "--report", report]
            stop, code = _cycle(argv, limits)
            if stop is None:
                _probation(root, code, report)
        if stop is not None:
            _log(f"stopped by {signal.Signals(stop).name}")
            return 0
        wait, failures = _next(report, failures)
        if _moved(root, updater[0], entered):  # Greenlight moved, and its probation passed
            _log(f"Greenlight moved: the agent re-executes into {os.path.realpath(updater[0])}")
            os.execv(updater[0], [updater[0], "agent", "--root", root])


def _waited(seconds: float) -> int | None:
    """Sleep up to `seconds` (0: only look); the stop signal that ended it, if one did."""
    deadline = time.monotonic() + seconds
    while True:
        got = signal.sigtimedwait(STOPS, min(max(0.0, deadline - time.monotonic()), 3600.0))
        if got is not None:
            return got.si_signo
        if time.monotonic() >= deadline:
            return None


def _updaters(root: str) -> dict[str, object]:
    """state/updater.json (Greenlight's versions side by side), or {}."""
    try:
        with open(os.path.join(root, "state", "updater.json")) as f:
            state = json.load(f)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _version(entry: object) -> str | None:
    version = entry.get("version") if isinstance(entry, dict) else None
    return version if isinstance(version, str) else None


def _probation(root: str, code: int | None, report: str) -> None:
    """A Greenlight version on probation whose cycle crashed, hung, ended in an internal error
    or in its last strike: the previous version puts it aside (`self-update --fall-back`,
    naming the version, so that one activated meanwhile is not blamed) and takes over."""
    state = _updaters(root)
    active, previous = _version(state.get("active")), _version(state.get("previous"))
    if not state.get("probation") or not active or not previous or state.get("pending"):
        return
    try:
        with open(report) as f:
            said = json.load(f)
        said = said if isinstance(said, dict) else {}
    except (OSError, ValueError):
        said = {}
    if said.get("greenlight") not in (None, active):
        return  # another version ran that cycle
    aside = said.get("put_aside")
    if code == 0 and not said.get("internal") and not aside:
        return
    why = (str(aside)[:200] if code == 0 and aside else
           "its agent cycle ended in an internal error" if code == 0 else
           "its agent cycle did not end in time" if code is None else
           f"its agent cycle died of signal {-code}" if code < 0 else
           "its agent cycle could not run" if code == 127 else
           f"its agent cycle exited {code}")
    fallback = os.path.join(root, "updater", previous, "updater")
    _log(f"Greenlight {active}: {why}; falling back to {previous}")
    try:
        child = subprocess.Popen([fallback, "self-update", "--root", root, "--fall-back", why,
                                  "--active", active], stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        try:
            child.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            _log(f"Greenlight {previous} did not fall back within 300s")
    except OSError as e:
        _log(f"cannot run Greenlight {previous}: {e.strerror or e}")


def _moved(root: str, entry: str, entered: str) -> bool:
    """bin/updater enters another version than the one this loop was started from, and the
    record says that version is active and has passed its probation: the loop itself moves
    to it."""
    if os.path.realpath(entry) == entered or os.path.basename(entry) != "updater":
        return False
    state = _updaters(root)
    active = _version(state.get("active"))
    return (active is not None and not state.get("probation") and not state.get("pending")
            and os.path.realpath(entry).endswith(os.path.join("", active, "updater")))


def _cycle(argv: list[str], limits: tuple[float, float]) -> tuple[int | None, int | None]:
    """Run one cycle to its end: within the cycle limit, or the stop limit once told to
    stop. Returns the stop signal that arrived meanwhile, if one did, and the cycle's exit
    status (negative: a signal; None: it was killed for running too long)."""
    cycle_limit, stop_limit = limits
    try:
        child = subprocess.Popen(argv)
    except OSError as e:
        _log(f"cannot run the updater: {e.strerror or e}")
        return None, 127  # a stop meanwhile is pending: the wait that follows takes it
    started, stop, stop_at = time.monotonic(), None, None
    while child.poll() is None:
        now = time.monotonic()
        if now - started > cycle_limit or (stop_at is not None and now > stop_at):
            _log("a cycle did not end in time and was killed")
            child.kill()
            child.wait()
            return stop, None
        got = signal.sigtimedwait(STOPS, 0.1 if stop_at is None else 0.05)
        if got is not None and stop is None:
            stop, stop_at = got.si_signo, now + stop_limit
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)  # it undoes or finishes, then exits
    return stop, child.returncode


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
