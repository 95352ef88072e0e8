"""Formats that grow without stranding anyone (docs/compatibility.md): a channel entry keeps
what its reader does not know, publish signs in the oldest Greenlight that can act on it,
and a machine older than that refuses it in one line and changes nothing."""

import json
import subprocess
import sys
from pathlib import Path

from greenlight.channels import VERSION, ChannelFile, known_fields, required_version
from greenlight.channels._requires import fields_of_model
from greenlight.release import current_channel_file, publish

from conftest import sign_entry

BIN = Path(sys.executable).parent


def test_the_fields_table_knows_this_versions_channel_entry():
    """Each version's fields are in channels/schema/channel-fields.json: a field added to the
    model without a new version's list (and a version bump) fails here."""
    assert VERSION in known_fields(), f"channel-fields.json has no list for {VERSION}"
    assert fields_of_model(ChannelFile.model_json_schema()) == known_fields()[VERSION]
    first = next(iter(known_fields().values()))
    assert all(first <= fields for fields in known_fields().values())  # fields never go


def test_the_fields_table_knows_this_versions_manifest():
    """The product manifest's keys per version are in the same table (`manifest`): a key
    added to the manifest without a new version's list fails here."""
    from greenlight.updater.product import manifest_schema

    assert VERSION in known_fields("manifest")
    assert fields_of_model(json.loads(manifest_schema()), maps=True) == \
        known_fields("manifest")[VERSION]
    first = next(iter(known_fields("manifest").values()))
    assert all(first <= keys for keys in known_fields("manifest").values())


def test_a_manifest_key_raises_the_entry_requirement(published, builds, tmp_path,
                                                      monkeypatch):
    """Machines read a manifest strictly: a key newer than the reader would stop it at the
    upgrade (exit 3). Publish raises the entry's `requires` to the oldest Greenlight that
    knows every key the manifest uses, so an older machine refuses the entry in one line
    (exit 17) before it fetches anything. Here `notify` is made 0.3.0's in the table."""
    from greenlight.channels import _requires

    from tally import build, manifest

    table = json.loads(json.dumps(_requires._table()))
    table["manifest"]["0.2.0"].remove("service[].notify")
    monkeypatch.setattr(_requires, "_table", lambda: table)
    _requires._maps.cache_clear()
    try:
        plain, notifying = tmp_path / "plain.toml", tmp_path / "notifying.toml"
        plain.write_text(manifest())
        notifying.write_text(manifest().replace('name = "core"\n',
                                                'name = "core"\nnotify = true\n', 1))
        assert "notify = true" in notifying.read_text()
        publish(published, "beta", "1.2", build("1.2", tmp_path / "a"), manifest=plain)
        assert current_channel_file(published, "beta").requires == "0.2.0"  # type: ignore[union-attr]
        publish(published, "beta", "1.3", build("1.3", tmp_path / "b"), manifest=notifying)
        assert current_channel_file(published, "beta").requires == "0.3.0"  # type: ignore[union-attr]
    finally:
        _requires._maps.cache_clear()


def test_a_field_this_version_does_not_know_is_kept(published):
    entry = json.loads(current_channel_file(published, "beta").to_json())  # type: ignore[union-attr]
    entry["later"] = {"said": "by a newer pipeline"}
    entry["components"]["core"]["later_too"] = 1
    kept = ChannelFile.from_json(json.dumps(entry).encode(), "beta.json")
    again = json.loads(kept.to_json())
    assert again["later"] == {"said": "by a newer pipeline"}
    assert again["components"]["core"]["later_too"] == 1


def test_publish_signs_in_the_oldest_greenlight_an_entry_needs(published, builds, tmp_path):
    """A plain release needs nothing newer than the first version, and says nothing (that
    version refuses the field itself); a release with a manifest needs 0.2.0."""
    beta = json.loads(current_channel_file(published, "beta").to_json())  # type: ignore[union-attr]
    assert "requires" not in beta and required_version(beta) is None
    from tally import build, manifest

    product = tmp_path / "product.toml"
    product.write_text(manifest())
    publish(published, "beta", "1.2", build("1.2", tmp_path / "tally"), manifest=product)
    entry = current_channel_file(published, "beta")
    assert entry is not None and entry.requires == "0.2.0"


def test_an_entry_for_a_newer_greenlight_is_refused_in_one_line(tmp_path, server, published):
    root = tmp_path / "root"

    def updater(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updater"), *args, "--root", str(root)],
                              capture_output=True, text=True, timeout=120)

    done = updater("init", "--repo", server.url, "--trust",
                   str(published.metadata_dir / "1.root.json"), "--channel", "stable")
    assert done.returncode == 0, done.stderr
    stable = current_channel_file(published, "stable")
    assert stable is not None
    sign_entry(published, stable.model_copy(update={"release": "1.1", "requires": "99.0.0",
                                               "decides": "something 99.0.0 knows"}))
    for command in ("check", "upgrade"):
        done = updater(command)
        assert done.returncode == 17, done.stdout + done.stderr
        said = done.stderr.strip()
        assert said == (f"updater: error: stable 1.1 needs Greenlight >= 99.0.0; this machine runs "
                        f"{VERSION}: update Greenlight first (docs/compatibility.md)"), said
    assert not (root / "current").exists()  # nothing was installed
    history = json.loads(updater("history", "--json").stdout)["entries"]
    assert not [e for e in history if e["event"] in ("upgraded", "rolled-back")]


def test_an_older_release_tool_never_re_signs_what_a_newer_one_wrote(published, builds):
    """A field this version does not know, in an entry a newer release tool signed: yanking
    or promoting it here would drop the field or sign it under too low a `requires`; each is
    refused in one line (exit 5) and nothing is signed."""
    publish(published, "beta", "1.2", builds("1.2"))
    beta = current_channel_file(published, "beta")
    assert beta is not None
    sign_entry(published, beta.model_copy(update={"decides": {"later": True}}))
    before = sorted(p.name for p in published.metadata_dir.iterdir())
    for args in (["yank", "--channel", "beta", "--version", "1.2", "--reason", "bad"],
                 ["promote", "--from", "beta", "--to", "stable"]):
        done = subprocess.run([str(BIN / "release"), args[0], str(published.path), *args[1:]],
                              capture_output=True, text=True)
        assert done.returncode == 5, done.stdout + done.stderr
        said = done.stderr.strip()
        assert len(said.splitlines()) == 1 and "Traceback" not in said, said
        assert f"has decides, a field Greenlight {VERSION} does not know" in said, said
    assert sorted(p.name for p in published.metadata_dir.iterdir()) == before
