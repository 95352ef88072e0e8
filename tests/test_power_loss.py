"""Every crash state of a power cut recovers (tests/crashstates.py builds them).

A whole upgrade (1.0 -> 1.1) and a whole upgrade that fails its post-check and rolls back are
each recorded through the real CLI against a real repository on loopback. For every state a
power cut could leave (within crashstates' bound), the state is written out as an installation
root and the next command runs on it, as it would after the machine came back. Each must
recover to one whole release: `updater verify` passes (the tree is exactly the signed file
list's), no journal is left, the history and the active channel read, the installed version is
one the run could leave, and `updater health` passes on it.

`make test` checks a bounded sample of the upgrade's states, spread over the run; `make
test-exhaustive` checks every state of both. Each test reports how many states it explored
and checked (the terminal summary).
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import crashstates as cs
import pytest

from greenlight.release import init_repository, publish
from greenlight.updater.store import InstallRoot, active_channel, history

from conftest import MARKER_PRODUCT, builtin_server

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent
SAMPLE = 6  # states checked per workload in make test, spread over the run

# workload: (the faults baked into 1.1, the versions a crash may leave installed)
WORKLOADS = {"upgrade": ((), {"1.0", "1.1"}), "rollback": (("refuse-ui-token",), {"1.0"})}


def _updater(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "updater"), *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


def record(tmp: Path, builds, workload: str) -> tuple[cs.State, list[cs.Op]]:
    """Install 1.0, publish 1.1, and record the `updater upgrade` that follows."""
    faults, _ = WORKLOADS[workload]
    repo = init_repository(tmp / "repo")
    root = tmp / "root"
    with builtin_server(repo.path) as server:
        publish(repo, "stable", "1.0", builds("1.0"))
        done = _updater(root, "init", "--repo", server.url, "--trust",
                        str(repo.metadata_dir / "1.root.json"), "--channel", "stable")
        assert done.returncode == 0, done.stderr
        with (root / "greenlight.toml").open("a") as f:
            f.write(MARKER_PRODUCT)
        assert _updater(root, "upgrade").returncode == 0
        publish(repo, "stable", "1.1", builds("1.1", *faults))
        os.sync()
        base = cs.snapshot(root)
        log = tmp / "ops.pickle"
        done = subprocess.run(
            [sys.executable, str(HERE / "crashstates.py"), "record", str(log), str(root), "--",
             "upgrade", "--root", str(root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == (0 if workload == "upgrade" else 20), done.stderr
    return base, cs.load(log)


def check(state: cs.State, at: Path, versions: set[str]) -> str | None:
    """Recover the state as the next command would; None if one whole release is left, else
    what is wrong."""
    cs.materialize(state, at)
    try:
        said = f"crash after op {state.crash_after}, losing {state.lost}"
        verify = _updater(at, "verify", "--json")
        if verify.returncode != 0:
            return f"{said}: verify exit {verify.returncode}: {verify.stdout[-600:]} " \
                   f"{verify.stderr[-600:]}"
        root = InstallRoot(at)
        if (root.state / "journal.json").exists():
            return f"{said}: a journal is left after recovery"
        installed = root.installed_version()
        if installed not in versions:
            return f"{said}: {installed} installed, expected one of {sorted(versions)}"
        history(root)
        active_channel(root)
        health = _updater(at, "health", "--json")
        if health.returncode != 0:
            return f"{said}: health exit {health.returncode}: {health.stderr[-400:]}"
        return None
    finally:
        shutil.rmtree(at, ignore_errors=True)


def explore(workload: str, tmp: Path, builds, record_property, every: bool) -> None:
    base, ops = record(tmp, builds, workload)
    states = list(cs.crash_states(base, ops))
    chosen = states if every else states[::max(1, len(states) // SAMPLE)]
    _, versions = WORKLOADS[workload]
    with ThreadPoolExecutor(2 if every else 1) as pool:
        found = [f for f in pool.map(
            lambda n: check(chosen[n], tmp / f"state-{n}", versions), range(len(chosen))) if f]
    record_property("power_loss", f"{workload}: {len(ops)} operations recorded, "
                                  f"{len(states)} crash states, {len(chosen)} checked")
    assert not found, f"{len(found)} of {len(chosen)} states did not recover:\n" + \
        "\n".join(found[:5])


# The rollback's states are checked by `make test-exhaustive` alone (every one of them), to keep
# `make test` within its budget; the upgrade's sample stays in it.
@pytest.mark.parametrize("workload", ["upgrade"])
def test_a_sample_of_the_power_loss_states_recovers(workload, tmp_path, builds,
                                                    record_property):
    explore(workload, tmp_path, builds, record_property, every=False)


@pytest.mark.exhaustive
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_every_power_loss_state_recovers(workload, tmp_path, builds, record_property):
    explore(workload, tmp_path, builds, record_property, every=True)


def test_the_states_of_an_unsynced_write_include_its_loss():
    """The builder itself: a file renamed over another without an fsync may come back empty
    or torn; with its fsync, and the folder's, it comes back whole or not replaced at all."""
    base = cs.State({"d": cs.Node("dir"), "d/f": cs.Node("file", 1)}, {1: (b"old", 0o644)})
    new = b"new content"

    def outcomes(synced: bool) -> set[bytes]:
        ops = [cs.Op("create", "d/tmp"), cs.Op("write", "d/tmp", data=new)]
        ops += [cs.Op("fsync", "d/tmp")] if synced else []
        ops += [cs.Op("rename", "d/tmp", "d/f"), cs.Op("fsync_dir", "d")]
        seen = set()
        for state in cs.crash_states(base, ops):
            node = state.tree.get("d/f")
            seen.add(state.content[node.inode][0] if node else b"<none>")
        return seen

    assert outcomes(synced=True) == {b"old", new}
    unsynced = outcomes(synced=False)
    assert {b"old", new, b""} <= unsynced and new[:len(new) // 2] in unsynced


def test_the_states_of_an_unsynced_rename_include_the_old_name():
    base = cs.State({"d": cs.Node("dir"), "d/a": cs.Node("file", 1)}, {1: (b"x", 0o644)})
    rename = [cs.Op("rename", "d/a", "d/b")]

    def names(ops: list[cs.Op]) -> set[tuple[str, ...]]:
        return {tuple(sorted(p for p in s.tree if p != "d"))
                for s in cs.crash_states(base, ops, at=len(ops))}

    assert names(rename) == {("d/a",), ("d/b",)}
    assert names([*rename, cs.Op("fsync_dir", "d")]) == {("d/b",)}
