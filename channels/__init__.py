"""The shared domain of Greenlight: channel files, target paths, release ordering.

Both the client (`updater`) and the pipeline (`release`) speak this language; this package
imports neither of them.
"""

from channels._model import (
    SCHEMA_VERSION,
    ChannelFile,
    ChannelFileError,
    ComponentArtifact,
    Delta,
    RevokedRelease,
    Rollout,
)
from channels._paths import (
    artifact_target,
    channel_role,
    channel_target,
    check_channel_name,
    check_component_name,
)
from channels._rollout import admitted, rollout_bucket
from channels._versions import is_newer, parse_version, sort_versions

__all__ = [
    "SCHEMA_VERSION",
    "ChannelFile",
    "ChannelFileError",
    "ComponentArtifact",
    "Delta",
    "RevokedRelease",
    "Rollout",
    "admitted",
    "artifact_target",
    "channel_role",
    "channel_target",
    "check_channel_name",
    "check_component_name",
    "is_newer",
    "parse_version",
    "rollout_bucket",
    "sort_versions",
]
