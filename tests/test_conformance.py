"""greenlight-conformance-client follows the tuf-conformance client protocol (CLIENT-CLI.md)."""

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

BIN = Path(sys.executable).parent / "greenlight-conformance-client"


def client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


def test_init_refresh_download_protocol(tmp_path, server, published):
    meta, targets = tmp_path / "meta", tmp_path / "targets"
    base = ["--metadata-dir", str(meta)]
    server.reset()
    assert client(*base, "init", str(published.metadata_dir / "1.root.json")).returncode == 0
    assert server.paths() == []  # init makes no request

    urls = ["--metadata-url", f"{server.url}/metadata"]
    done = client(*base, *urls, "refresh")
    assert done.returncode == 0, done.stderr
    names = {p.name for p in meta.iterdir() if p.is_file()}
    assert {"root.json", "timestamp.json", "snapshot.json", "targets.json"} <= names
    assert not [n for n in names if n[0].isdigit()]  # unversioned names only

    wanted = ["artifacts/core/1.0/core-1.0.tar.gz", "artifacts/ui/1.1/ui-1.1.tar.gz"]
    download = [*base, *urls, *(f"--target-name={w}" for w in wanted),
                "--target-base-url", f"{server.url}/targets", "--target-dir", str(targets),
                "download"]
    done = client(*download)
    assert done.returncode == 0, done.stderr
    for name in wanted:
        assert (targets / quote(name, safe="")).stat().st_size > 0

    server.reset()
    assert client(*download).returncode == 0
    assert not [p for p in server.paths() if p.startswith("/targets/")]  # cached, not fetched


def test_download_stops_at_first_failure(tmp_path, server, published):
    meta, targets = tmp_path / "meta", tmp_path / "targets"
    base = ["--metadata-dir", str(meta), "--metadata-url", f"{server.url}/metadata"]
    client("--metadata-dir", str(meta), "init", str(published.metadata_dir / "1.root.json"))
    done = client(*base, "--target-name", "no/such/target",
                  "--target-name", "artifacts/core/1.0/core-1.0.tar.gz",
                  "--target-base-url", f"{server.url}/targets", "--target-dir", str(targets),
                  "download")
    assert done.returncode == 1 and "not found in signed metadata" in done.stderr
    assert not list(targets.iterdir())


def test_tampered_target_fails_and_leaves_nothing(tmp_path, server, published):
    meta, targets = tmp_path / "meta", tmp_path / "targets"
    client("--metadata-dir", str(meta), "init", str(published.metadata_dir / "1.root.json"))
    stored = next(published.targets_dir.glob("artifacts/core/1.0/*"))
    data = stored.read_bytes()
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    done = client("--metadata-dir", str(meta), "--metadata-url", f"{server.url}/metadata",
                  "--target-name", "artifacts/core/1.0/core-1.0.tar.gz",
                  "--target-base-url", f"{server.url}/targets", "--target-dir", str(targets),
                  "download")
    assert done.returncode == 1 and "refused" in done.stderr
    assert not list(targets.iterdir())


def test_the_tuf_floor_is_the_first_release_that_passes_the_suite():
    """tuf-conformance's diamond-delegation case (a cached role verified against its current
    delegator) fails on python-tuf 7.0.0 and passes from 7.0.1: an install must never resolve
    an older one (`make conformance` runs the suite itself)."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    tuf = next(Requirement(d) for d in project["project"]["dependencies"]
               if d.startswith("tuf"))
    assert not tuf.specifier.contains("7.0.0") and tuf.specifier.contains("7.0.1")
    assert Version(version("tuf")) in tuf.specifier
