"""Package the demo product as release archives: one .tar.gz per component.

    python -m examples.demo.build --version 1.6.11 --out DIR [--fault refuse-ui-token]

Each archive holds the component's script and its build.json (version and baked faults).
"""

import argparse
import io
import json
import tarfile
from pathlib import Path

HERE = Path(__file__).parent
FAULTS = ("refuse-ui-token", "refuse-ui-token-on-legacy", "crash-on-stop-in-flight",
          "crash-on-first-stop", "notify-errors-fatal",
          "crash-after-serving", "state-v2", "migration-assumes-state-v2",
          "ui-default-core-port")
COMPONENTS = {"core": "core.py", "ui": "ui.py"}


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def build(version: str, out: Path, faults: tuple[str, ...] = ()) -> dict[str, Path]:
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for component, script in COMPONENTS.items():
        path = out / f"{component}-{version}.tar.gz"
        build_json = {"component": component, "version": version, "faults": sorted(faults)}
        with tarfile.open(path, "w:gz", compresslevel=6) as tar:
            _add(tar, script, (HERE / script).read_bytes(), 0o755)
            _add(tar, "build.json", json.dumps(build_json, indent=2).encode())
        built[component] = path
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fault", action="append", default=[], choices=FAULTS)
    args = parser.parse_args()
    for component, path in build(args.version, args.out, tuple(args.fault)).items():
        print(f"{component}: {path}")


if __name__ == "__main__":
    main()
