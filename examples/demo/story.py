"""`make demo`: the whole story on 127.0.0.1, with the real `release` and `updater` commands.

A fresh repository is created and served; the demo product's stable 1.6.10 is installed and its
core and UI run as real processes. Beta 1.6.11 is published with the incident's fault baked in
(the core refuses the UI's token while its ping still answers): the machine joins beta, the
upgrade's post-check catches it, and Greenlight rolls back to 1.6.10 on stable by itself,
printing the evidence. A fixed beta 1.6.12 is then taken and committed. Every command is
printed before it runs. Work happens in ./demo-work (replaced on each run).
"""

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from examples.demo.build import build
from examples.demo.config import configure

BIN = Path(sys.executable).parent
WORK = Path("demo-work")


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"$ {shown}", flush=True)
    tool = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    done = subprocess.run([tool, *args[1:]], text=True, capture_output=True)
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        print(f"  {line}")
    if done.returncode not in ok:
        raise SystemExit(f"demo: '{shown}' exited {done.returncode}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"demo: nothing listens on 127.0.0.1:{port}")


def ui_view(root: Path) -> None:
    """A UI's few lines from status.json: what it tells its user instead of "not running"."""
    import json

    status = json.loads((root / "state" / "status.json").read_text())
    incident = status.get("last_incident")
    print(f"  [UI] running {status['installed']} on {status['channel']}")
    if status["update"] == "available":
        print(f"  [UI] update available: {status['available']}")
    if incident and status["installed"] == incident["now_on"]:
        checks = incident["failed_checks"]
        why = checks[0]["summary"] if checks else incident["summary"]
        print(f"  [UI] rolled back from {incident['failed_release']} because: {why}")
    if status["hold"]:
        print(f"  [UI] updates held until {status['hold']['until'] or 'released'}")


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    repo, root, builds = WORK / "repo", WORK / "root", WORK / "builds"
    say("The release team builds the demo product and creates a signed repository")
    def components(version, *faults):
        return [
            f"--component={c}={p}" for c, p in build(version, builds / version, faults).items()]
    run("release", "init", str(repo))
    run("release", "publish", str(repo), "--channel", "stable", "--version", "1.6.10",
        *components("1.6.10"))

    port = free_port()
    say(f"The repository is served as static files on 127.0.0.1:{port}")
    server = subprocess.Popen([str(BIN / "release"), "serve", str(repo), "--port", str(port)],
                              stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        say("A machine installs stable, trusting the repository's first root")
        run("updater", "init", "--root", str(root), "--repo", url,
            "--trust", str(repo / "metadata" / "1.root.json"), "--channel", "stable")
        configure(root, free_port(), free_port())
        print(f"  (the demo product's services and health checks added to {root}/greenlight.toml)")
        run("updater", "check", "--root", str(root), ok=(10,))
        run("updater", "upgrade", "--root", str(root))
        run("updater", "health", "--root", str(root))

        say("Beta 1.6.11 ships with a core that refuses the UI's token (ping still answers)")
        run("release", "publish", str(repo), "--channel", "beta", "--version", "1.6.11",
            "--fallback", "stable", *components("1.6.11", "refuse-ui-token"))
        run("updater", "channel", "--root", str(root), "beta")
        run("updater", "upgrade", "--root", str(root), ok=(20,))
        run("updater", "status", "--root", str(root))
        run("updater", "history", "--root", str(root))
        say("What the product's UI reads from state/status.json, running nothing")
        ui_view(root)

        say("The fixed beta 1.6.12 is published; the agent takes it with nobody typing upgrade")
        run("release", "publish", str(repo), "--channel", "beta", "--version", "1.6.12",
            *components("1.6.12"))
        run("updater", "channel", "--root", str(root), "beta")
        run("updater", "agent", "--once", "--root", str(root))
        run("updater", "health", "--root", str(root))
        ui_view(root)
        run("updater", "stop", "--root", str(root))
    finally:
        server.terminate()
        server.wait(timeout=10)
    say(f"Done. Everything is under {WORK}/")


if __name__ == "__main__":
    main()
