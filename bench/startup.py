"""A warm `updater check` as a whole process, against a bare python-tuf script doing the same
work, timed side by side in one run; and `updater --help` against `python -c pass`.

    python -m bench.startup [--runs 15] [--production]

Both run in two environments: this one (the test tools installed: moto brings boto3, which
securesystemslib reaches for), and a production-like one, `.bench-cache/prod-venv` (the
package, not editable, with its installer extra only, as a machine has it).

The "same work" is what a check does on the wire and on disk with nothing new: a new
`Updater` over the cached metadata, `refresh()` (the next root, absent, and the timestamp),
then the channel file as a delegated target, found in the cache. Both run as fresh processes
of the same interpreter, alternating, against one `release serve` process; the medians are
reported. Target: Greenlight at most 1.3x the bare script.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from greenlight.release import init_repository, publish
from greenlight.updater.operations import check, open_repository
from greenlight.updater.product import init_root

from bench.overhead import demo_archives, wait_for_port

BIN = Path(sys.executable).parent
CACHE = Path(".bench-cache")


def production_bin() -> Path:
    """The bin folder of a virtual environment with the client as a machine has it: this
    checkout installed as a package (not editable: no import hook of an editable install)
    with its installer extra, no test tools (so no moto, no boto3). Its dependencies are
    installed once; the package itself again on every call, so it is this checkout."""
    venv = (CACHE / "prod-venv").absolute()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    quiet = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if not (venv / "bin" / "updater").exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, ".[installer]"], check=True, env=quiet)
    else:
        subprocess.run([*pip, "--no-deps", "--force-reinstall", "."], check=True, env=quiet)
    return venv / "bin"


BARE = """
import sys
from tuf.ngclient import Updater

meta, url, targets = sys.argv[1:4]
updater = Updater(meta, url + "/metadata/", targets, url + "/targets/", bootstrap=None)
updater.refresh()
info = updater.get_targetinfo("channels/stable.json")
if info is None or updater.find_cached_target(info) is None:
    updater.download_target(info)
"""


def _time(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(work: Path, runs: int = 15, env_bin: Path = BIN) -> dict[str, float]:
    """Medians of the four, their processes run from `env_bin`'s interpreter and scripts."""
    repo = init_repository(work / "repo")
    publish(repo, "stable", "1.0", demo_archives(work / "builds", "1.0"))
    port_file = work / "port"
    server = subprocess.Popen([str(BIN / "release"), "serve", str(repo.path), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "serving REPO at http://127.0.0.1:PORT/ ..."
        url = line.split(" at ", 1)[1].split("/ ", 1)[0]
        wait_for_port(int(url.rsplit(":", 1)[1]))
        root = init_root(work / "root", url + "/",
                                  (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
        check(root, open_repository(root))
        bare_meta, bare_targets = work / "bare-meta", work / "bare-targets"
        bare_meta.mkdir()
        bare_targets.mkdir()
        shutil.copy(repo.metadata_dir / "1.root.json", bare_meta / "root.json")
        script = work / "bare_check.py"
        script.write_text(BARE)
        ours_argv = [str(env_bin / "updater"), "check", "--root", str(root.path)]
        python = str(env_bin / "python")
        bare_argv = [python, str(script), str(bare_meta), url, str(bare_targets)]
        for argv in (ours_argv, bare_argv):  # warm the caches, the page cache included
            done = subprocess.run(argv, capture_output=True, text=True)
            assert done.returncode in (0, 10), f"{argv}: {done.stderr[-500:]}"
        ours, bare, helps, nothing = [], [], [], []
        for _ in range(runs):
            ours.append(_time(ours_argv))
            bare.append(_time(bare_argv))
            helps.append(_time([str(env_bin / "updater"), "--help"]))
            nothing.append(_time([python, "-c", "pass"]))
    finally:
        server.terminate()
        server.wait()
        port_file.unlink(missing_ok=True)
    return {"check": statistics.median(ours), "bare": statistics.median(bare),
            "help": statistics.median(helps), "python": statistics.median(nothing)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for label, env_bin in (("this environment", BIN), ("production-like", production_bin())):
        work = Path(tempfile.mkdtemp(prefix="greenlight-bench-startup-"))
        try:
            m = measure(work, args.runs, env_bin)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"{label}:")
        print(f"  warm `updater check` process   {m['check'] * 1000:7.1f} ms")
        print(f"  bare python-tuf script         {m['bare'] * 1000:7.1f} ms   "
              f"ratio {m['check'] / m['bare']:.2f}x (target <= 1.3x)")
        print(f"  `updater --help`               {m['help'] * 1000:7.1f} ms")
        print(f"  `python -c pass`               {m['python'] * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
