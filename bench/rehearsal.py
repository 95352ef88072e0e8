"""A rehearsal's paths side by side against the same paths one after another, in one run.

    python -m bench.rehearsal [--jobs N]

The demo product's repository: stable 1.6.10, beta 1.6.11 and 1.6.13, each with its signed
manifest (sockets held, the new release proven in preflight beside the old). The candidate
1.6.14 is rehearsed from the three and from an empty root (4 paths, each installing,
upgrading, rolling back and checking for real): once with `--jobs N` (each path in a network
namespace of its own where the machine allows it), once with `--jobs 1`, the N sequential
installs a vendor would otherwise run. Target: parallel at least 1.6x faster on 2 cores.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from greenlight.release import init_repository, publish

from examples.demo.build import build
from examples.demo.config import manifest_toml

BIN = Path(sys.executable).parent


def measure(jobs: int = 4) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    try:
        repo = init_repository(work / "repo")
        manifest = work / "product.toml"
        manifest.write_text(manifest_toml(held=True, handover=True))
        for channel, version, faults in (("stable", "1.6.10", ()), ("beta", "1.6.11", ()),
                                         ("beta", "1.6.13", ("state-v2",))):
            publish(repo, channel, version, build(version, work / version, faults),
                    manifest=manifest)
        candidate = build("1.6.14", work / "1.6.14", ("state-v2",))
        args = [str(BIN / "release"), "rehearse", str(repo.path), "--channel", "beta",
                "--version", "1.6.14", f"--manifest={manifest}",
                *(f"--component={n}={p}" for n, p in candidate.items())]
        times = {}
        for label, n in (("parallel", jobs), ("sequential", 1)):
            began = time.monotonic()
            done = subprocess.run([*args, "--jobs", str(n)], capture_output=True, text=True,
                                  env={**os.environ, "TMPDIR": str(work)})
            if done.returncode != 0:
                raise SystemExit(f"bench: rehearsal failed: {done.stderr.strip()}")
            times[label] = time.monotonic() - began
        times["paths"] = 4
        times["jobs"] = jobs
        return times
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4)
    m = measure(parser.parse_args().jobs)
    ratio = m["sequential"] / m["parallel"]
    print(f"rehearsal of {m['paths']:.0f} paths: --jobs {m['jobs']:.0f} {m['parallel']:.1f} s, "
          f"one at a time {m['sequential']:.1f} s: {ratio:.2f}x "
          f"(target >= 1.6x: {'met' if ratio >= 1.6 else 'MISSED'})")


if __name__ == "__main__":
    main()
