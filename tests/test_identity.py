"""A release is its version plus its components' sha256s, not its version string alone."""

import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from greenlight.channels import ChannelFile, ComponentArtifact, ReleaseId, canonical_version
from greenlight.channels._paths import check_channel_name
from greenlight.release import ReleaseError, publish
from greenlight.updater.operations import check, open_repository, status, upgrade
from greenlight.updater.policy import decide
from greenlight.updater.product import init_root
from greenlight.updater.store import (
    InstallRoot,
    QuarantineEntry,
    add_to_quarantine,
    extract,
    set_active_channel,
)

from conftest import Served


def _channel(release: str, digest: str, channel: str = "stable") -> ChannelFile:
    return ChannelFile(channel=channel, release=release, published_at=datetime.now(UTC),
                       components={"core": ComponentArtifact(
                           version=release, target=f"artifacts/core/{release}/c.tar",
                           sha256=digest * 64, length=1)})


def test_the_same_version_with_other_bytes_is_another_release():
    stable, relabelled = _channel("1.2", "a"), _channel("1.2", "b")
    assert stable.identity != relabelled.identity
    assert stable.identity.version == relabelled.identity.version == "1.2"
    # Installed: the relabelled bits. The channel's real 1.2 is not "up to date".
    assert decide(stable, relabelled.identity, {}, "id").action == "install"
    assert decide(stable, stable.identity, {}, "id").action == "up-to-date"


def test_a_quarantined_relabel_does_not_hold_the_real_release():
    stable, relabelled = _channel("1.2", "a"), _channel("1.2", "b")
    held = {relabelled.identity: "failed core-version"}
    assert decide(stable, None, held, "id").action == "install"
    assert decide(relabelled, None, held, "id").action == "held"


@pytest.mark.parametrize("text", [" 1.2\n", "1.2\n", "v1.2", "1.02", "1.2.0-rc1", "1.2 "])
def test_versions_must_be_canonical(text):
    with pytest.raises(ValueError, match="canonical|invalid version"):
        canonical_version(text)
    with pytest.raises(ValueError, match="not canonical|invalid version"):
        _channel(text, "a")


@pytest.mark.parametrize("name", ["beta\n", "beta\n\n", "Beta", "../x", ""])
def test_names_are_anchored_at_the_very_end(name):
    with pytest.raises(ValueError, match="invalid channel name"):
        check_channel_name(name)


def test_publish_refuses_a_version_not_written_canonically(repo, builds):
    with pytest.raises(ValueError, match="write it as '1.2'"):
        publish(repo, "stable", "v1.2", builds("1.2"))


def _root(tmp: Path, server: Served, repo, channel: str) -> InstallRoot:
    return init_root(tmp / "root", server.url,
                              (repo.metadata_dir / "1.root.json").read_bytes(), channel)


def test_a_relabelled_release_is_not_up_to_date_after_a_switch(tmp_path, server, published,
                                                               builds):
    """beta carries beta's bits labelled "1.0"; after a switch to stable the machine is not
    'up to date at 1.0': it installs stable's 1.0 beside the other, and status shows which."""
    relabelled = {}
    for name, archive in builds("1.1", "refuse-ui-token").items():
        relabelled[name] = tmp_path / f"{name}-beta-bits.tar.gz"
        relabelled[name].write_bytes(archive.read_bytes())
    publish(published, "beta", "1.0", relabelled, allow_older=True)
    root = _root(tmp_path, server, published, "beta")
    assert upgrade(root, open_repository(root)).outcome == "upgraded"
    beta_key = root.installed_release()

    set_active_channel(root, "stable", "test")
    report = check(root, open_repository(root))
    assert report.installed == report.available == "1.0"
    assert report.update_available and report.installed_release != report.available_release
    assert upgrade(root, open_repository(root)).outcome == "upgraded"
    assert root.installed_release() == report.available_release != beta_key
    assert (root.releases / beta_key / "release.json").is_file()  # kept, not overwritten
    shown = status(root)
    assert shown.identity is not None and shown.identity.key == report.available_release
    assert shown.identity.components["core"] == report.components["core"].sha256
    assert check(root, open_repository(root)).update_available is False


def test_quarantine_names_an_identity(tmp_path, server, published, builds):
    """A relabelled "1.1" quarantined here does not hold back beta's real 1.1."""
    root = _root(tmp_path, server, published, "beta")
    add_to_quarantine(root, QuarantineEntry.of(ReleaseId("1.1", "c" * 64), "beta",
                                               "failed core-version", datetime.now(UTC)))
    report = check(root, open_repository(root))
    assert report.quarantined is None and report.update_available
    real = ReleaseId.of("1.1", {n: c for n, c in report.components.items()})
    add_to_quarantine(root, QuarantineEntry.of(real, "beta", "failed ui-session",
                                               datetime.now(UTC)))
    report = check(root, open_repository(root))
    assert report.quarantined == "failed ui-session" and not report.update_available


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_top_folder_is_recorded_at_publish_and_left_out_on_the_machine(tmp_path, server,
                                                                          repo):
    core = _tar(tmp_path / "core-2.0.tar.gz", {"core-2.0/core.py": b"print()\n",
                                                "core-2.0/lib/util.py": b""})
    ui = _tar(tmp_path / "ui.tar.gz", {"ui.py": b"", "static/app.js": b""})
    flat = _tar(tmp_path / "tools.tar.gz", {"tools/run.sh": b"", "README": b""})
    cf = publish(repo, "stable", "2.0", {"core": core, "ui": ui, "tools": flat})
    assert cf.components["core"].strip_prefix == "core-2.0"
    assert cf.components["ui"].strip_prefix is None
    assert cf.components["tools"].strip_prefix is None
    root = _root(tmp_path, server, repo, "stable")
    assert upgrade(root, open_repository(root)).outcome == "upgraded"
    assert (root.current / "core" / "core.py").is_file()
    assert (root.current / "core" / "lib" / "util.py").is_file()
    assert not (root.current / "core" / "core-2.0").exists()
    assert (root.current / "ui" / "static" / "app.js").is_file()
    assert (root.current / "tools" / "tools" / "run.sh").is_file()


def test_a_signed_target_path_never_changes_bytes(tmp_path, repo, builds):
    publish(repo, "stable", "1.0", builds("1.0"))
    with pytest.raises(ReleaseError, match="already holds other bytes"):
        publish(repo, "beta", "1.0", builds("1.0", "refuse-ui-token"))


def test_publish_can_keep_the_top_folder(tmp_path, server, repo):
    core = _tar(tmp_path / "core.tar.gz", {"core/core.py": b""})
    cf = publish(repo, "stable", "2.0", {"core": core}, keep_top_folder=True)
    assert cf.components["core"].strip_prefix is None
    root = _root(tmp_path, server, repo, "stable")
    assert upgrade(root, open_repository(root)).outcome == "upgraded"
    assert (root.current / "core" / "core" / "core.py").is_file()  # kept, as published


def test_a_member_outside_the_recorded_top_folder_is_refused(tmp_path):
    from greenlight.updater import ArchiveError

    archive = _tar(tmp_path / "a.tar.gz", {"core/a.py": b"", "other/b.py": b""})
    with pytest.raises(ArchiveError, match="outside the top folder 'core'"):
        extract(archive, tmp_path / "out", strip="core")
