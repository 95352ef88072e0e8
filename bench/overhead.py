"""What Greenlight adds per managed service: the launcher process that runs it and records its
exit status, against a bare interpreter measured in the same run.

    python -m bench.overhead

Each service of the demo product runs under the launcher (process backend); the launcher's
resident memory (VmRSS, and VmHWM, its peak) is read from /proc. Anchors: `python -I -S` and
plain `python` idling. Target: at most 15 MB in total per service.
"""

import io
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from greenlight.updater.product import ProcessBackend, ServiceConfig
from greenlight.updater.store import InstallRoot

IDLE = "import time; time.sleep(600)"


def demo_archives(folder: Path, version: str) -> dict[str, Path]:
    """Two small component archives (enough for a channel file with real targets)."""
    folder.mkdir(parents=True, exist_ok=True)
    archives = {}
    for name in ("core", "ui"):
        path = folder / f"{name}-{version}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            data = f"# {name} {version}\n".encode()
            info = tarfile.TarInfo(f"{name}.py")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        archives[name] = path
    return archives


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def _idle(argv: list[str]) -> float:
    proc = subprocess.Popen([*argv, "-c", "import sys; print(flush=True); " + IDLE],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # it has started and imported what it will
        return _status_mib(proc.pid, "VmRSS")
    finally:
        proc.kill()
        proc.wait()


def measure() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="greenlight-bench-overhead-") as tmp:
        backend = ProcessBackend(InstallRoot(Path(tmp)))
        services = [ServiceConfig(name=f"s{i}", command=[sys.executable, "-c", IDLE])
                    for i in range(3)]
        for s in services:
            backend.start(s, {"root": tmp})
        try:
            pids = [backend.pid(s.name) for s in services]
            rss = [_status_mib(pid, "VmRSS") for pid in pids if pid is not None]
            hwm = [_status_mib(pid, "VmHWM") for pid in pids if pid is not None]
        finally:
            for s in services:
                backend.stop(s, timeout=5)
    return {"launcher_rss": max(rss), "launcher_hwm": max(hwm),
            "bare_isolated": _idle([sys.executable, "-I", "-S"]),
            "bare": _idle([sys.executable])}


def main() -> None:
    m = measure()
    print(f"launcher per service (VmRSS)   {m['launcher_rss']:6.1f} MiB  "
          f"peak {m['launcher_hwm']:.1f} MiB (target <= 15 MB)")
    print(f"python -I -S idle              {m['bare_isolated']:6.1f} MiB")
    print(f"python idle                    {m['bare']:6.1f} MiB")


if __name__ == "__main__":
    main()
