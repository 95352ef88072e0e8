"""What Greenlight relies on inside its libraries where they offer no public seam, pinned so
that the library's next release fails here, loudly, not on a machine (docs/architecture.md,
"Inside the libraries"):

- python-tuf's ngclient writes its metadata cache through `Updater._persist_file(filename,
  data)` and links `root.json` in `Updater._update_root_symlink()` under `Updater._dir`: the
  client overrides both so that every file is synced before its rename and its folder after
  (a power cut never leaves a torn trusted root);
- httpcore reads a socket `HTTP11Connection.READ_NUM_BYTES` at a time: the fetcher raises it
  to 1 MiB (the per-read Python work bounds a download on a fast link)."""

import inspect
import stat

from httpcore._sync.http11 import HTTP11Connection
from tuf.ngclient import Updater

from greenlight.updater.operations import check, open_repository
from greenlight.updater.product import init_root


def test_ngclient_still_persists_through_the_methods_the_client_overrides(tmp_path, server,
                                                                           published):
    assert list(inspect.signature(Updater._persist_file).parameters) == [
        "self", "filename", "data"]
    assert list(inspect.signature(Updater._update_root_symlink).parameters) == ["self"]
    assert "self._persist_file(" in inspect.getsource(Updater)
    assert "self._update_root_symlink()" in inspect.getsource(Updater)
    root = init_root(tmp_path / "root", server.url,
                     (published.metadata_dir / "1.root.json").read_bytes(), "stable")
    repo = open_repository(root)
    check(root, repo)
    # every file ngclient stored came through the override (atomic_write's 0600), none
    # through ngclient's own write
    stored = [p for p in root.metadata_dir.iterdir() if p.is_file() and not p.is_symlink()]
    assert {p.name for p in stored} >= {"timestamp.json", "snapshot.json", "targets.json"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in stored} == {
        p.name: 0o600 for p in stored}
    assert (root.metadata_dir / "root.json").exists()


def test_httpcore_still_reads_read_num_bytes_at_a_time():
    assert isinstance(HTTP11Connection.READ_NUM_BYTES, int)
    assert "self.READ_NUM_BYTES" in inspect.getsource(HTTP11Connection._receive_event)
    from greenlight.updater.trust import HttpxFetcher

    HttpxFetcher(5.0)
    assert HTTP11Connection.READ_NUM_BYTES >= 1024 * 1024
