"""What a client's check costs as the repository grows: 100 against 100,000 artifacts.

    python -m bench.scale [--small 100] [--large 100000]

For each size a repository is made by `release`, with that many artifacts in its hashed bins
(the entries are real signed targets metadata; their files are not needed for a check), and
a channel whose release is one of them. A fresh installation root then runs `updater check`
(cold: root, timestamp, snapshot, targets, the channel's role and file) and looks up the
release's artifact (the `artifacts` role and one bin). Printed: requests, bytes and seconds,
with the size of one flat targets.json holding the same entries as the anchor.
"""

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.api.serialization.json import JSONSerializer

from greenlight.release import init_repository, publish, serving
from greenlight.updater.operations import check, open_repository
from greenlight.updater.product import init_root


def make(work: Path, count: int) -> tuple[Path, int]:
    repo = init_repository(work / f"repo-{count}")
    real = work / "core.tar"
    real.write_bytes(b"x" * 4096)
    publish(repo, "stable", "1.0", {"core": real})
    by_bin: dict[str, list[TargetFile]] = {}
    for i in range(count - 1):
        path = f"artifacts/filler/{i}/filler-{i}.tar.gz"
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        info = TargetFile(length=1000 + i, hashes={"sha256": digest}, path=path)
        by_bin.setdefault(repo.bin_for(path), []).append(info)
    for name, infos in by_bin.items():
        with repo.edit_targets(name) as b:
            for info in infos:
                b.targets[info.path] = info
    repo.commit()
    flat = Targets()
    for name in repo.targets_roles():
        if name.startswith("bin-"):
            flat.targets.update(repo.targets(name).targets)
    flat_bytes = len(Metadata(flat).to_bytes(JSONSerializer(compact=False)))
    return repo.path, flat_bytes


def measure(repo: Path, work: Path) -> dict[str, float]:
    with serving(repo) as server:
        root = init_root(work / f"root-{repo.name}", server.url,
                                  (repo / "metadata" / "1.root.json").read_bytes(), "stable")
        server.reset_counts()
        started = time.perf_counter()
        trusted = open_repository(root)
        report = check(root, trusted)
        check_s = time.perf_counter() - started
        check_paths = list(server.paths)
        server.reset_counts()
        started = time.perf_counter()
        info = trusted.artifact_info("core", report.components["core"])  # type: ignore[arg-type]
        lookup_s = time.perf_counter() - started
        lookup_paths = list(server.paths)
    def size(paths):
        return sum((repo / p.lstrip("/")).stat().st_size
                                 for p in paths if (repo / p.lstrip("/")).is_file())
    assert info.path == report.components["core"].target
    return {"check_requests": len(check_paths), "check_bytes": size(check_paths),
            "check_s": check_s, "lookup_requests": len(lookup_paths),
            "lookup_bytes": size(lookup_paths), "lookup_s": lookup_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    try:
        rows = {}
        for count in (args.small, args.large):
            repo, flat = make(work, count)
            rows[count] = measure(repo, work) | {"flat": flat}
        small, large = rows[args.small], rows[args.large]
        print(f"cold `updater check` and one artifact lookup, {args.small} vs {args.large} "
              "artifacts in 256 hashed bins")
        print(f"{'':34}{args.small:>16}{args.large:>16}{'ratio':>9}")
        for key, label in (("check_requests", "check: requests"),
                           ("check_bytes", "check: bytes"), ("check_s", "check: seconds"),
                           ("lookup_requests", "artifact lookup: requests"),
                           ("lookup_bytes", "artifact lookup: bytes"),
                           ("lookup_s", "artifact lookup: seconds"),
                           ("flat", "anchor: one flat targets.json")):
            a, b = small[key], large[key]
            fmt = (lambda v: f"{v:.3f}") if key.endswith("_s") else (lambda v: f"{v:,.0f}")
            print(f"{label:34}{fmt(a):>16}{fmt(b):>16}{b / a if a else 0:>8.2f}x")
        print(json.dumps({"small": small, "large": large}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
