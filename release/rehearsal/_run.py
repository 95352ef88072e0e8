"""Running a rehearsal's paths: each a process of its own (`_path`), in a network namespace of
its own when the machine allows it, a few at a time, each bounded in time, and everything a
path started stopped when it ends, times out, or the rehearsal is interrupted.

What a path started is found without its help: in a namespace, every process whose network
namespace is the path's; without one (paths on their own ports), every process whose command
line or working folder is inside the path's folder. Both are killed, then the folder goes.
"""

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenlight.release.rehearsal._plan import PathSpec, Release
from greenlight.release.rehearsal._record import FailedCheck, PathResult

__all__ = ["Isolation", "netns_available", "run_paths"]

Isolation = str  # "netns" | "ports"


def netns_available() -> bool:
    """Whether this machine lets a process enter a network namespace of its own."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "from greenlight.release.rehearsal._path import "
             "enter_namespace as e; e()"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _release(r: Release | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"version": r.version,
            "components": {n: str(p.absolute()) for n, p in r.components.items()},
            "manifest": str(r.manifest.absolute()) if r.manifest else None,
            "keep_top_folder": r.keep_top_folder}


@dataclass
class _Running:
    index: int
    spec: PathSpec
    folder: Path
    process: subprocess.Popen[bytes]
    began: float
    netns: str | None = None
    netns_fd: int | None = None  # held open: the namespace (and its id) lives until closed
    buffer: bytes = b""
    reading: bool = True
    result: PathResult | None = field(default=None)


def _naming(folder: Path, netns: str | None = None) -> list[int]:
    """The processes (not this one) in the network namespace `netns`, or, without one,
    whose command line or working folder is inside `folder`."""
    found = []
    inside = str(folder) + os.sep
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if netns is not None:
                if os.readlink(entry / "ns" / "net") == netns:
                    found.append(int(entry.name))
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            if inside in cmdline or os.readlink(entry / "cwd").startswith(inside):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _isolated(run: _Running) -> None:
    """The path's first line names its namespace: hold it open (so its id is not given to
    another while this path is being stopped), and check that the path's process is in it."""
    try:
        said = json.loads(run.buffer.split(b"\n", 1)[0])
        netns = said.get("netns") if isinstance(said, dict) else None
    except ValueError:
        return
    if not isinstance(netns, str):
        return
    try:
        fd = os.open(f"/proc/{run.process.pid}/ns/net", os.O_RDONLY)
    except OSError:  # it is gone already: found by its folder then
        return
    if os.readlink(f"/proc/self/fd/{fd}") != netns:
        os.close(fd)
        return
    run.netns, run.netns_fd = netns, fd


def _stop(run: _Running) -> None:
    """Kill the path's process group, then every process it left, until none is left."""
    with contextlib.suppress(OSError):
        os.killpg(run.process.pid, signal.SIGKILL)
    for _ in range(50):
        left = _naming(run.folder, run.netns)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    with contextlib.suppress(subprocess.TimeoutExpired):
        run.process.wait(timeout=10)
    if run.netns_fd is not None:
        os.close(run.netns_fd)
        run.netns_fd = None


def _result(run: _Running, candidate: Release, outcome: str | None, detail: str,
            isolation: Isolation) -> PathResult:
    data: dict[str, Any] = {}
    try:
        data = json.loads((run.folder / "result.json").read_text())
        data = data if isinstance(data, dict) and "outcome" in data else {}
    except (OSError, ValueError):
        pass
    if not data and outcome is None:
        outcome = "error"
        try:
            lines = (run.folder / "stderr").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        detail = next((x for x in reversed(lines) if x.strip()),
                      f"the path's process exited {run.process.returncode}")
    if outcome is not None:
        data.update(outcome=outcome, detail=detail)
    from greenlight.channels import terminal_lines

    return PathResult(
        kind=run.spec.kind, from_version=run.spec.from_release.version
        if run.spec.from_release else None, to_version=candidate.version,
        layer=run.spec.layer.name, outcome=data["outcome"],
        rollback=data.get("rollback", "n/a"),
        failed_checks=[FailedCheck(**c) for c in data.get("failed_checks", [])],
        detail=terminal_lines(" ".join(str(data.get("detail", "")).split()),
                              one_line=True)[:400],
        seconds=round(data.get("seconds") or time.monotonic() - run.began, 2),
        steps={str(k): float(v) for k, v in (data.get("steps") or {}).items()},
        bytes_fetched=int(data.get("bytes_fetched") or 0), delta=bool(data.get("delta")),
        isolation="netns" if isolation == "netns" else "ports")


def _life(pid: int) -> str:
    """A process as `pid start-time`: the same pid later is another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return ""


def _reap_stale(folder: Path) -> None:
    """What a rehearsal killed outright (SIGKILL, a power cut) left: its paths' processes
    (their command lines name its folder) and its folder, once its owner is gone."""
    for work in folder.glob("greenlight-rehearsal-*"):
        try:
            owner = (work / "owner").read_text().strip()
        except OSError:
            continue
        pid = owner.split()[0] if owner else ""
        if not pid.isdigit() or _life(int(pid)) == owner:
            continue  # still running, or not one of ours
        for left in _naming(work):
            with contextlib.suppress(OSError):
                os.kill(left, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


def _snapshot(repo: Path, into: Path) -> Path:
    """The repository as it is now, under its lock (the collector's changes take it too):
    metadata copied, archives linked. Every path starts from this one state."""
    from greenlight.release.rehearsal._path import copy_repository
    from greenlight.release.repository import FileRepository
    from greenlight.release.repository._rollouts import locked

    with locked(FileRepository(repo)):
        copy_repository(repo, into)
    return into


def run_paths(repo: Path, keys: Path, channel: str, candidate: Release,
              specs: list[PathSpec], *, isolation: Isolation, jobs: int, timeout: float,
              ports: list[str], bundle: Path | None, installer: Path | None,
              keep: Path | None,
              said: Callable[[int, PathResult], None]) -> list[PathResult]:
    """Run every path, `jobs` at a time; each result in `specs`' order. `said` is told of
    each path as it ends. On KeyboardInterrupt (or SIGTERM, turned into one), everything the
    running paths started is stopped and their folders removed before it goes on up.

    Raises:
        KeyboardInterrupt: interrupted (SIGINT, SIGTERM or SIGHUP); every running path's
            processes and folders are gone.
        Conflict: another command held the repository's lock past its timeout.
    """
    _reap_stale(keep or Path(tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix="greenlight-rehearsal-", dir=keep))
    (work / "owner").write_text(_life(os.getpid()))
    try:
        repo = _snapshot(repo, work / "repository")
    except BaseException:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
        raise
    results: dict[int, PathResult] = {}
    running: dict[int, _Running] = {}
    waiting = list(enumerate(specs))
    selector = selectors.DefaultSelector()

    def start(index: int, spec: PathSpec) -> None:
        folder = work / f"p{index:03d}"
        folder.mkdir()
        (folder / "spec.json").write_text(json.dumps({
            "repo": str(repo.absolute()), "keys": str(keys.absolute()), "channel": channel,
            "kind": spec.kind, "from": _release(spec.from_release),
            "candidate": _release(candidate), "delta": spec.delta,
            "layer": spec.layer.model_dump(), "isolation": isolation,
            "ports": ports if isolation == "ports" else [],
            "bundle": str(bundle.absolute()) if bundle else None,
            "installer": str(installer.absolute()) if installer else None}))
        with (folder / "stderr").open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "greenlight.release.rehearsal._path",
                 str(folder / "spec.json")], stdout=subprocess.PIPE, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=folder)
        run = _Running(index, spec, folder, process, time.monotonic())
        running[index] = run
        assert process.stdout is not None
        selector.register(process.stdout, selectors.EVENT_READ, run)

    def read(run: _Running) -> None:
        assert run.process.stdout is not None
        try:
            chunk = os.read(run.process.stdout.fileno(), 4096)
        except BlockingIOError:
            return
        run.buffer += chunk
        if b"\n" in run.buffer and run.netns is None and run.netns_fd is None:
            _isolated(run)
        if not chunk:
            selector.unregister(run.process.stdout)
            run.reading = False

    def finish(run: _Running, outcome: str | None = None, detail: str = "") -> None:
        assert run.process.stdout is not None
        os.set_blocking(run.process.stdout.fileno(), False)
        while run.reading and run.netns is None:  # its first line, if not read yet
            before = len(run.buffer)
            read(run)
            if len(run.buffer) == before:
                break
        if run.reading:
            selector.unregister(run.process.stdout)
        _stop(run)
        run.process.stdout.close()
        result = _result(run, candidate, outcome, detail, isolation)
        if keep is None:
            shutil.rmtree(run.folder, ignore_errors=True)
        del running[run.index]
        results[run.index] = result
        said(run.index, result)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_term) for s in stops if s != signal.SIGINT}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                start(*waiting.pop(0))
            for key, _ in selector.select(timeout=0.2):
                read(key.data)
            for run in list(running.values()):
                if run.process.poll() is not None:
                    finish(run)
                elif time.monotonic() - run.began > timeout:
                    finish(run, "timed-out", f"stopped after {timeout:g} s (--timeout)")
    except BaseException:
        for s in stops:  # a second Ctrl-C does not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        for run in list(running.values()):
            try:
                _stop(run)
            finally:
                if keep is None:
                    shutil.rmtree(run.folder, ignore_errors=True)
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        selector.close()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return [results[i] for i in range(len(specs))]
