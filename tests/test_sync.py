"""`release sync`: a repository published to S3-compatible object storage (moto's server mode,
a separate process on 127.0.0.1), in an order that keeps every client's view whole, with
cache headers, converging after an interrupted run; clients upgrade from the bucket."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from greenlight.release import init_repository, publish
from greenlight.release._errors import ReleaseError
from greenlight.release.distribution._sync import IMMUTABLE, plan_sync, sync
from greenlight.updater.operations import check, open_repository, upgrade
from greenlight.updater.product import init_root

from conftest import MARKER_PRODUCT, free_port, wait_http

BIN = Path(sys.executable).parent
pytest.importorskip("obstore")


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """moto's S3 server on 127.0.0.1 with a bucket, and credentials in the environment."""
    if not (BIN / "moto_server").exists():
        pytest.skip("moto[server] is not installed (make test installs it)")
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint, proc, "moto_server")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    assert httpx.put(f"{endpoint}/releases").status_code == 200  # the bucket
    # Public to read, as a repository is (docs/release.md: behind a CDN, the same policy or an
    # origin access control).
    import boto3

    boto3.client("s3", endpoint_url=endpoint).put_bucket_policy(Bucket="releases", Policy=(
        json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::releases/*"}]})))
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _objects(endpoint: str) -> dict[str, int]:
    import obstore
    from obstore.store import S3Store

    store = S3Store("releases", endpoint=endpoint, client_options={"allow_http": True})
    return {str(m["path"]): int(m["size"]) for batch in obstore.list(store) for m in batch}


def _phase_of(key: str) -> int:
    for i, phase in enumerate(_PHASES):
        if key in phase:
            return i
    raise AssertionError(key)


_PHASES: list[set[str]] = []


def test_sync_publishes_in_order_with_cache_headers_and_converges(tmp_path, s3, builds):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    publish(repo, "beta", "1.1", builds("1.1"), fallback="stable")
    _PHASES[:] = [{u.key for u in phase} for phase in plan_sync(repo.path)]
    order: list[str] = []
    done = sync(repo.path, "s3://releases/repo", endpoint=s3, jobs=1, uploaded=order.append)
    assert done.uploaded == order and done.skipped == 0
    phases = [_phase_of(k) for k in order]
    assert phases == sorted(phases)  # each phase whole before the next
    assert order[-1] == "metadata/timestamp.json"
    assert phases.index(1) < phases.index(4)  # root before snapshot
    local = {p.relative_to(repo.path).as_posix(): p.stat().st_size
             for folder in ("metadata", "targets") for p in (repo.path / folder).rglob("*")
             if p.is_file()}
    assert _objects(s3) == {f"repo/{k}": v for k, v in local.items()}
    assert not [k for k in _objects(s3) if "keys" in k or "staged" in k or "repository" in k]

    # What a CDN reads: versioned files are immutable, timestamp.json is short-lived.
    stamp = httpx.get(f"{s3}/releases/repo/metadata/timestamp.json")
    assert stamp.headers["cache-control"] == "public, max-age=60"
    snapshot = next(k for k in order if k.endswith(".snapshot.json"))
    assert httpx.get(f"{s3}/releases/{'repo/' + snapshot}").headers["cache-control"] == IMMUTABLE
    artifact = next(k for k in order if k.startswith("targets/artifacts/"))
    answer = httpx.get(f"{s3}/releases/repo/{artifact}")
    assert answer.headers["cache-control"] == IMMUTABLE
    assert answer.headers["content-type"] == "application/octet-stream"

    # Again, unchanged: nothing is uploaded.
    again = sync(repo.path, "s3://releases/repo", endpoint=s3)
    assert again.uploaded == [] and again.skipped == len(order)

    # A sync that dies part way (the network, after 5 uploads) is run again and converges.
    publish(repo, "stable", "1.2", builds("1.2"))
    calls: list[str] = []

    def dies(key: str) -> None:
        calls.append(key)
        if len(calls) == 5:
            raise ReleaseError("the network went away")

    with pytest.raises(ReleaseError, match="the network went away"):
        sync(repo.path, "s3://releases/repo", endpoint=s3, jobs=1, uploaded=dies)
    stamp_now = httpx.get(f"{s3}/releases/repo/metadata/timestamp.json").content
    assert stamp_now == stamp.content  # the old state stands: timestamp is last
    resumed = sync(repo.path, "s3://releases/repo", endpoint=s3)
    assert resumed.skipped >= 5 and resumed.uploaded[-1] == "metadata/timestamp.json"
    assert set(_objects(s3)) >= {f"repo/{k}" for k in local}


def test_a_client_reading_during_a_sync_never_fails_verification(tmp_path, s3, builds):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    sync(repo.path, "s3://releases/r", endpoint=s3)
    root = init_root(tmp_path / "root", f"{s3}/releases/r",
                              (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
    assert check(root, open_repository(root)).available == "1.0"

    # A new release and a key rotation of the channel's role: after every single upload the
    # client checks; it sees the old release or the new, never a failure.
    publish(repo, "stable", "1.1", builds("1.1"))
    from greenlight.release import rotate

    rotate(repo, "channel-stable")
    seen: list[str] = []

    def look(key: str) -> None:
        seen.append(check(root, open_repository(root)).available)

    result = sync(repo.path, "s3://releases/r", endpoint=s3, jobs=1, uploaded=look)
    assert len(seen) == len(result.uploaded) > 10
    assert set(seen) == {"1.0", "1.1"} and seen[-1] == "1.1"
    assert seen.index("1.1") == len(seen) - 1  # the new release appears with its timestamp


def test_a_client_upgrades_from_the_bucket(tmp_path, s3, builds):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    done = subprocess.run([str(BIN / "release"), "sync", str(repo.path), "--to",
                           "s3://releases/", "--endpoint-url", s3, "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["uploaded"][-1] == "metadata/timestamp.json"
    root = init_root(tmp_path / "root", f"{s3}/releases",
                              (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
    with (root.path / "greenlight.toml").open("a") as f:
        f.write(MARKER_PRODUCT)
    report = upgrade(root, open_repository(root))
    assert (report.outcome, report.installed) == ("upgraded", "1.0")


def test_sync_refuses_links_and_overwrites_and_names_bad_targets(tmp_path, s3, builds):
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    link = repo.path / "targets" / "leak"
    link.symlink_to(repo.keys.folder)
    done = subprocess.run([str(BIN / "release"), "sync", str(repo.path), "--to",
                           "s3://releases/x", "--endpoint-url", s3],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"release: error: {link} is a symbolic link; refusing to "
                                   "sync (only regular files are published)")
    assert _objects(s3) == {}  # nothing was uploaded
    link.unlink()
    # A linked top folder, with a key file planted in what it points at: nothing goes.
    real = tmp_path / "elsewhere"
    (repo.path / "targets").rename(real)
    (real / "leak.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (repo.path / "targets").symlink_to(real)
    done = subprocess.run([str(BIN / "release"), "sync", str(repo.path), "--to",
                           "s3://releases/x", "--endpoint-url", s3],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "targets is a symbolic link; refusing" in done.stderr
    assert _objects(s3) == {}
    (repo.path / "targets").unlink()
    (real / "leak.pem").unlink()
    real.rename(repo.path / "targets")
    sync(repo.path, "s3://releases/x", endpoint=s3)
    # Another repository's 1.root.json under the same prefix: never overwritten.
    other = init_repository(tmp_path / "other")
    with pytest.raises(ReleaseError,
                       match=r"holds other bytes than .* never overwritten \(is this another"):
        sync(other.path, "s3://releases/x", endpoint=s3)
    bad = subprocess.run([str(BIN / "release"), "sync", str(repo.path), "--to", "releases"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "expected s3://BUCKET" in bad.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    down = subprocess.run([str(BIN / "release"), "sync", str(repo.path), "--to",
                           "s3://releases/x", "--endpoint-url", nobody],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 8 and down.stderr.count("\n") == 1, down.stderr
    assert down.stderr.startswith("release: error: cannot list s3://releases/x: ")
