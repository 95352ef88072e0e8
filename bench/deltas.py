"""Deltas on two release pairs against bsdiff4 (tufup's choice), measured in one run.

Pairs, as uncompressed tars (the content deltas work on):
  - app: a 55 MB application (native-like random libraries and text), a few files changed
    between the two versions; generated deterministically;
  - cryptography 50.0.1 -> 50.0.2 wheels from the package registry (fetched once into
    .bench-cache/), unpacked into tars: rebuilt native code, where zstd is weak.
Each build runs in its own process so that its peak memory (max RSS) is its own.
"""

import io
import json
import random
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from bench._memory import peak_mib

CACHE = Path(".bench-cache")
WHEELS = ("cryptography==50.0.1", "cryptography==50.0.2")


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def app_pair() -> tuple[bytes, bytes]:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "core", "ui", "token", "channel"]
    files = {f"app/lib/mod{i}.so": rng.randbytes(1_000_000) for i in range(40)}
    files |= {f"app/share/doc{i}.txt": " ".join(rng.choice(words) for _ in range(8000)).encode()
              for i in range(300)}
    changed = dict(files)
    changed["app/lib/mod3.so"] = rng.randbytes(1_000_000)
    changed["app/share/doc7.txt"] = b"changed " * 1000
    changed["app/new.txt"] = b"new file " * 100
    return _tar(files), _tar(changed)


def crypto_pair() -> tuple[bytes, bytes]:
    CACHE.mkdir(exist_ok=True)
    wheels = []
    for spec in WHEELS:
        version = spec.split("==")[1]
        found = sorted(CACHE.glob(f"cryptography-{version}-*.whl"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--only-binary", ":all:", "-d", str(CACHE), spec], check=True)
            found = sorted(CACHE.glob(f"cryptography-{version}-*.whl"))
        wheels.append(found[0])
    pair = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            pair.append(_tar({n: z.read(n) for n in z.namelist()}))
    return pair[0], pair[1]


PAIRS = {"app": app_pair, "crypto": crypto_pair}


def pair_files(pair: str) -> tuple[Path, Path]:
    """The pair as two files in .bench-cache/ (made once), so a build's process holds just
    the two inputs and its own work."""
    CACHE.mkdir(exist_ok=True)
    old_path, new_path = CACHE / f"{pair}-old.tar", CACHE / f"{pair}-new.tar"
    if not (old_path.exists() and new_path.exists()):
        old, new = PAIRS[pair]()
        old_path.write_bytes(old)
        new_path.write_bytes(new)
    return old_path, new_path


def child(method: str, pair: str) -> None:
    """Build (and apply) one delta; print its figures as JSON."""
    old_path, new_path = pair_files(pair)
    old, new = old_path.read_bytes(), new_path.read_bytes()
    base_rss = peak_mib()
    if method == "bsdiff4":
        import bsdiff4

        started = time.perf_counter()
        patch = bsdiff4.diff(old, new)
        build = time.perf_counter() - started
        peak = peak_mib()
        started = time.perf_counter()
        assert bsdiff4.patch(old, patch) == new
        apply = time.perf_counter() - started
        size = len(patch)
    else:
        import hdiffpatch  # noqa: F401  (imported before the clock, as bsdiff4 is above)
        import pyzstd  # noqa: F401

        from greenlight.channels import apply_delta, build_delta

        started = time.perf_counter()
        built = build_delta(old, new)
        build = time.perf_counter() - started
        peak = peak_mib()
        assert built is not None
        started = time.perf_counter()
        assert apply_delta(old, built.data) == new
        apply = time.perf_counter() - started
        size, method = len(built.data), f"greenlight ({built.method})"
    print(json.dumps({"method": method, "pair": pair, "size": size, "build_s": build,
                      "apply_s": apply, "build_peak_mb": peak,
                      "inputs_mb": base_rss, "content": len(new)}))


def measure(pair: str, method: str) -> dict[str, object]:
    pair_files(pair)
    done = subprocess.run([sys.executable, "-m", "bench.deltas", method, pair],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
