"""A slow or lying mirror: every request has an overall deadline, redirects stay within the
repository's origins, and a poisoned partial download does not fail the next honest one."""

import hashlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from greenlight.release import FileRepository, init_repository, publish, serving
from greenlight.updater import NetworkError
from greenlight.updater.operations import check, open_repository, upgrade
from greenlight.updater.product import config_of, init_root
from greenlight.updater.store import InstallRoot, locked

BIN = Path(sys.executable).parent


def make_root(tmp: Path, url: str, repo: FileRepository, timeout: float = 2.0) -> InstallRoot:
    root = init_root(tmp / "root", url, (repo.metadata_dir / "1.root.json").read_bytes(),
                              "stable")
    # The template lists them commented out, under [repository]: set them for real.
    text = re.sub(r"(?m)^# timeout = 30\.0 .*$", f"timeout = {timeout}",
                  root.config_path.read_text())
    root.config_path.write_text(re.sub(r"(?m)^# min_rate = 65536 .*$", "min_rate = 1000000", text))
    fresh = InstallRoot(root.path)
    loaded = config_of(fresh).repository
    assert (loaded.timeout, loaded.min_rate) == (timeout, 1000000), "the template changed"
    return fresh


@pytest.fixture
def stable(tmp_path: Path, builds) -> FileRepository:
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.0", builds("1.0"))
    return repo


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_trickling_metadata_ends_in_exit_5_and_frees_the_root(tmp_path, stable):
    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100000):
                    self.wfile.write(b"{")
                    self.wfile.flush()
                    stop.wait(0.5)
                    if stop.is_set():
                        return
            except OSError:
                return

    stop = threading.Event()
    with http_server(Trickle) as url:
        root = make_root(tmp_path, url + "/", stable)
        try:
            done = subprocess.run([str(BIN / "updater"), "check", "--root", str(root.path)],
                                  capture_output=True, text=True, timeout=120)
        finally:
            stop.set()
    assert done.returncode == 5, done.stderr
    assert "too slow" in done.stderr and "Traceback" not in done.stderr
    with locked(root):  # nobody holds it any more
        pass


def test_trickling_artifact_ends_in_exit_5_with_nothing_changed(tmp_path, stable):
    with serving(stable.path) as server:
        root = make_root(tmp_path, server.url, stable)
        server.trickle = ("/targets/artifacts/", 0.2)
        done = subprocess.run([str(BIN / "updater"), "upgrade", "--root", str(root.path)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "too slow" in done.stderr
    assert root.installed_version() is None and not (root.state / "journal.json").exists()
    assert not list(root.downloads.glob("*[0-9a-f]"))


def _redirecting(target: str) -> type[BaseHTTPRequestHandler]:
    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Redirect


def test_redirects_to_another_origin_are_refused(tmp_path, stable):
    with serving(stable.path) as real, http_server(_redirecting(real.url)) as url:
        root = make_root(tmp_path, url + "/", stable)
        with pytest.raises(NetworkError, match="redirect to another origin refused"):
            check(root, open_repository(root))


def test_same_origin_redirects_are_followed(tmp_path, stable):
    class SameOrigin(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/moved/"):
                path = stable.path / self.path.removeprefix("/moved/")
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(301)
            self.send_header("Location", "/moved" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with http_server(SameOrigin) as url:
        root = make_root(tmp_path, url + "/", stable)
        assert check(root, open_repository(root)).available == "1.0"


def test_a_poisoned_partial_download_restarts_once_from_zero(tmp_path, stable):
    with serving(stable.path) as server:
        root = make_root(tmp_path, server.url, stable, timeout=30)
        channel = check(root, open_repository(root))
        for artifact in channel.components.values():
            partial = root.downloads / ".partial" / artifact.sha256
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(b"\0" * (artifact.length // 2))
        server.reset_counts()
        report = upgrade(root, open_repository(root))
        paths, ranges = list(server.paths), list(server.ranges)
    assert report.outcome == "upgraded" and report.installed == "1.0"
    for artifact in channel.components.values():
        # Once: the kept half is resumed with a Range request, found poisoned when the whole
        # is hashed, and fetched again from zero (no Range), exactly once; never a third time.
        asked = [p for p in paths if p.endswith(artifact.target.rsplit("/", 1)[-1])]
        assert len(asked) == 2, paths
        resumed = [r for r in ranges if r.split(" ", 1)[0] in asked]
        assert resumed == [f"{asked[0]} bytes={artifact.length // 2}-"], ranges
        kept = root.downloads / artifact.sha256
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == artifact.sha256
        assert not (root.downloads / ".partial" / artifact.sha256).exists()


def test_a_planted_symlink_at_a_partial_is_not_written_through(tmp_path, stable):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    with serving(stable.path) as server:
        root = make_root(tmp_path, server.url, stable, timeout=30)
        channel = check(root, open_repository(root))
        partial_dir = root.downloads / ".partial"
        partial_dir.mkdir(parents=True, exist_ok=True)
        for artifact in channel.components.values():
            (partial_dir / artifact.sha256).symlink_to(victim)
        report = upgrade(root, open_repository(root))
    assert report.outcome == "upgraded"
    assert victim.read_text() == "precious"
