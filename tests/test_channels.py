"""Channel files: the model, its exported JSON Schema, and release ordering."""

import json
from pathlib import Path

import jsonschema
import pytest

from greenlight.channels import (
    ChannelFile,
    ChannelFileError,
    channel_target,
    is_newer,
    json_schema,
    sort_versions,
)
from greenlight.release import FileRepository, current_channel_file, publish

SCHEMA = Path(__file__).parents[1] / "channels" / "schema" / "channel-file.v1.schema.json"


def test_exported_schema_is_current():
    assert SCHEMA.read_text() == json_schema(), (
        "channels/schema is stale: regenerate it with python -c "
        "'from greenlight.channels._model import json_schema; print(json_schema(), end=\"\")'"
    )


def test_exported_rollout_state_schema_is_current():
    from greenlight.channels import RolloutState

    path = SCHEMA.with_name("rollout-state.v1.schema.json")
    assert path.read_text() == json_schema(RolloutState)


@pytest.mark.parametrize(("patch", "where"), [
    ({"components": {}}, "components"),
    ({"schema_version": 2}, "schema_version"),
    ({"components": {"core": {"sha256": "ab"}}}, "components.core"),
    ({"release": 5}, "release"),
    ({"published_at": None}, "published_at"),
])
def test_the_schema_a_consumer_reads_refuses_what_the_model_refuses(published, patch, where):
    """The committed schema is for readers that are not Greenlight (another language, a CI
    check). What the published files hold validates against it, and a document the model
    refuses for its shape is refused by the schema too, so the schema is no looser than it
    says."""
    schema = json.loads(SCHEMA.read_text())
    for channel in ("stable", "beta"):
        info = published.targets(f"channel-{channel}").targets[channel_target(channel)]
        jsonschema.validate(json.loads(published.read_target(info)), schema)
    bad = json.loads(current_channel_file(published, "beta").to_json())  # type: ignore[union-attr]
    bad.update(patch)
    with pytest.raises(ChannelFileError, match=where):
        ChannelFile.from_json(json.dumps(bad).encode(), "beta.json")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_channel_file_fields(published: FileRepository):
    beta = current_channel_file(published, "beta")
    assert beta is not None
    assert (beta.channel, beta.release, beta.fallback) == ("beta", "1.1", "stable")
    core = beta.components["core"]
    assert core.target == "artifacts/core/1.1/core-1.1.tar.gz"
    assert len(core.sha256) == 64 and core.length > 0
    stable = current_channel_file(published, "stable")
    assert stable is not None and stable.fallback is None


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"release": "one"}, "field release: .*invalid version 'one'"),
        ({"channel": "Beta!"}, "field channel: .*invalid channel name"),
        ({"fallback": "beta"}, "cannot fall back to itself"),
        ({"components": {}}, "field components"),
        ({"schema_version": 2}, "field schema_version"),
    ],
)
def test_invalid_channel_files_name_the_field(published, patch, message):
    good = json.loads(current_channel_file(published, "beta").to_json())  # type: ignore[union-attr]
    good.update(patch)
    with pytest.raises(ChannelFileError, match=message):
        ChannelFile.from_json(json.dumps(good).encode(), "beta.json")


def test_sha256_must_be_hex(published):
    data = json.loads(current_channel_file(published, "beta").to_json())  # type: ignore[union-attr]
    data["components"]["core"]["sha256"] = "zz"
    with pytest.raises(ChannelFileError, match="components.core.sha256"):
        ChannelFile.from_json(json.dumps(data).encode())


def test_release_ordering_follows_pep440():
    assert is_newer("1.6.11", "1.6.10")
    assert not is_newer("1.6.9", "1.6.10")
    assert is_newer("1.0", None)
    assert is_newer("2.0", "2.0rc1")
    assert sort_versions(["1.10", "1.9", "1.6.11", "1.6.10"]) == ["1.6.10", "1.6.11", "1.9", "1.10"]


def test_publish_refuses_a_version_not_newer(published, builds):
    from greenlight.release import ReleaseError

    with pytest.raises(ReleaseError, match="carries 1.0; 1.0 is not newer"):
        publish(published, "stable", "1.0", builds("1.0"))
    publish(published, "stable", "0.9", builds("0.9"), allow_older=True)
    assert current_channel_file(published, "stable").release == "0.9"  # type: ignore[union-attr]
