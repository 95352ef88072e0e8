"""The running Greenlight's side of a qualification: the new version runs `updater qualify`
against this root and `updater agent --help` (its agent's entry), each bounded in time in a
session of its own (killed whole on time-out), and must leave the root as it found it."""

import json
import os
import signal
import subprocess
from pathlib import Path

from greenlight.updater.store import InstallRoot, exe_path

__all__ = ["QUALIFY_LIMIT", "judge"]

QUALIFY_LIMIT = 120.0
"""Seconds a new version has to qualify (it reads the root; it fetches nothing)."""
OTHERS = ("logs", "state/run", "downloads")
"""What other processes (the product's launchers, a download) may write meanwhile."""


def _run(argv: list[str]) -> subprocess.CompletedProcess[bytes] | str:
    """`argv`'s result, or why it has none (one line)."""
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 env={k: v for k, v in os.environ.items()
                                      if not k.startswith("GREENLIGHT_")})
    except OSError as e:
        return f"it could not run: {e.strerror or e}"
    try:
        out, err = child.communicate(timeout=QUALIFY_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the one-file bootloader and its child
        child.communicate()
        return f"it did not finish within {QUALIFY_LIMIT:.0f}s"
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Each file and folder of the root, but what others write: (mode, size, mtime)."""
    seen: dict[str, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in OTHERS]
        for name in files + dirs:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            seen[os.path.normpath(os.path.join(rel, name))] = (st.st_mode, st.st_size,
                                                               st.st_mtime_ns)
    return seen


def _said(done: subprocess.CompletedProcess[bytes], version: str) -> str | None:
    try:
        said = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        why = f"died of signal {-done.returncode}" if done.returncode < 0 else \
            f"exited {done.returncode}"
        return f"it {why} without a qualification report" + (
            f": {tail[-1][:200]}" if tail else "")
    if not isinstance(said, dict) or said.get("schema") != "greenlight.qualify/1":
        return "it did not answer with greenlight.qualify/1"
    if said.get("version") != version:
        return f"it says it is Greenlight {str(said.get('version'))[:40]!r}, not {version}"
    failed = [c for c in said.get("checks", []) if isinstance(c, dict) and not c.get("ok")]
    if done.returncode != 0 or failed or not said.get("ok"):
        first = failed[0] if failed else {}
        return (f"{str(first.get('name', 'qualify'))[:60]}: "
                f"{' '.join(str(first.get('detail', 'refused')).split())[:300]}")
    return None


def judge(root: InstallRoot, version: str) -> str | None:
    """None when `version` (staged) qualified against `root`; else why not, in one line."""
    exe = str(exe_path(root, version))
    before = _tree(root.path)
    done = _run([exe, "qualify", "--root", str(root.path), "--json"])
    if isinstance(done, str):
        return done
    why = _said(done, version)
    if why is not None:
        return why
    after = _tree(root.path)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if changed:
        return f"it changed {changed[0]} (and {len(changed) - 1} more) in a read-only run"
    agent = _run([exe, "agent", "--help"])
    if isinstance(agent, str):
        return f"agent: {agent}"
    if agent.returncode != 0:
        return f"its agent's entry exited {agent.returncode}"
    return None
