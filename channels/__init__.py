"""The shared layer of Greenlight: what the client and the pipeline both speak.

- the channel file and its parts (`ChannelFile`, `ComponentArtifact`, `Delta`, `Rollout`, ...);
- target paths and role names (`channel_target`, `artifact_target`, `channel_role`);
- versions (`parse_version`, `is_newer`, `sort_versions`) and rollout buckets;
- the delta codec (`build_delta`, `apply_delta`) and the offline bundle's format;
- the archive layout rule (`clean_member_name`, `top_folder_of`) and the fleet report's wire
  format (`FleetReport`);
- durable files (`atomic_write`, `atomic_symlink`, `fsync_dir`) and the clock (`now`);
- hashing on a helper thread (`ParallelDigest`);
- what both sides read the same way, so that the pipeline refuses at publish what a machine
  would refuse: an archive, unpacked and listed safely (`extract`, `top_folder`,
  `index_tar`, `Limits`, `Region`), and a product's manifest and configuration
  (`load_manifest`, `ProductManifest`, `split_product_config`, `Config`, `check_product`,
  `with_machine_parts`, the checks' models, placeholders and the strings' rules);
- their errors, the root of the client's error tree: `GreenlightError` and its
  `ConfigError`, `TrustError` and `ArchiveError`, each with the exit code `updater` returns.

The archive reader and the product's models load on first use (PEP 562), so that importing
this package loads neither tarfile nor the configuration's models.

This package imports nothing of `greenlight.updater` or `greenlight.release`.
"""

from typing import TYPE_CHECKING, Any

from greenlight.channels._bundle_format import (
    BUNDLE_BASE_URL,
    BUNDLE_FORMAT,
    BUNDLE_MANIFEST,
    BundleFormatError,
    BundleManifest,
)
from greenlight.channels._clock import now
from greenlight.channels._cohort import COHORT_PATTERN, LABEL_PATTERN, cohort_of
from greenlight.channels._delta import BuiltDelta, DeltaError, apply_delta, build_delta
from greenlight.channels._digest import ParallelDigest
from greenlight.channels._errors import ArchiveError, ConfigError, GreenlightError, TrustError
from greenlight.channels._feedback import (
    FEEDBACK_MAX_BYTES,
    FEEDBACK_SCHEMA,
    FEEDBACK_TEXT_MAX,
    LOG_TAIL_MAX,
    FeedbackCheck,
    FeedbackEvent,
    FeedbackIncident,
    FeedbackLog,
    FeedbackReport,
    FeedbackSource,
    lines_printable,
)
from greenlight.channels._file_list import (
    FILES_SCHEMA,
    Difference,
    FileEntry,
    FileList,
    compare,
    files_target,
    list_tree,
)
from greenlight.channels._files import atomic_symlink, atomic_write, fsync_dir, remove_path
from greenlight.channels._fleet_report import (
    FLEET_OUTCOMES,
    GREENLIGHT_PATTERN,
    FleetReport,
    GreenlightKind,
    Outcome,
    ReportedCheck,
)
from greenlight.channels._identity import ReleaseId, version_of
from greenlight.channels._invalid import InvalidValue, describe_validation
from greenlight.channels._layout import (
    LayoutError,
    clean_member_name,
    top_folder_of,
)
from greenlight.channels._lazy import lazy_export
from greenlight.channels._machine_key import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    MachineKeyError,
    key_id,
    machine_id,
    new_private_key,
    public_key_text,
    public_raw,
    sign_body,
    verified_sender,
)
from greenlight.channels._model import (
    SCHEMA_VERSION,
    ChannelFile,
    ChannelFileError,
    ComponentArtifact,
    Delta,
    FeedbackRule,
    HaltEvidence,
    HaltRule,
    ManifestRef,
    PreviousRelease,
    RevokedRelease,
    Rollout,
    RolloutPlan,
    RolloutState,
    SequentialRule,
    json_schema,
)
from greenlight.channels._paths import (
    UPDATER_PREFIX,
    artifact_target,
    channel_role,
    channel_target,
    check_channel_name,
    check_component_name,
    manifest_target,
    rollout_role,
    rollout_target,
    this_platform,
    updater_channel,
    updater_component,
)
from greenlight.channels._placeholders import BUILT_IN, expand
from greenlight.channels._process import lean_process
from greenlight.channels._product_fields import (
    AGENT_UNIT,
    CONTROL,
    GATE_UNIT,
    check_folder,
    check_program,
    is_unit_file_name,
    unit_of,
)
from greenlight.channels._records import Record
from greenlight.channels._requires import (
    FIRST_TOLERANT,
    known_fields,
    manifest_required_version,
    required_version,
    unknown_fields,
)
from greenlight.channels._rollout import (
    EffectiveRollout,
    admitted,
    effective_rollout,
    rollout_bucket,
)
from greenlight.channels._text import printable, terminal_lines
from greenlight.channels._version import VERSION
from greenlight.channels._versions import canonical_version, is_newer, parse_version, sort_versions

if TYPE_CHECKING:
    from greenlight.channels._archive import (
        Limits,
        Region,
        extract,
        index_tar,
        top_folder,
    )
    from greenlight.channels._manifest import (
        Layered,
        ProductManifest,
        check_value,
        instance_values,
        layered,
        load_manifest,
        manifest_schema,
        split_product_config,
    )
    from greenlight.channels._product_checks import (
        CheckConfig,
        CommandCheck,
        DnsCheck,
        HttpCheck,
        ProcessCheck,
        TcpCheck,
        VersionCheck,
        WebSocketCheck,
    )
    from greenlight.channels._product_config import (
        AgentConfig,
        Config,
        RepositoryConfig,
        ServiceConfig,
        SocketConfig,
        check_product,
        with_machine_parts,
    )

__all__ = [
    "FEEDBACK_MAX_BYTES",
    "FEEDBACK_SCHEMA",
    "FEEDBACK_TEXT_MAX",
    "LOG_TAIL_MAX",
    "FeedbackCheck",
    "FeedbackEvent",
    "FeedbackIncident",
    "FeedbackLog",
    "FeedbackReport",
    "FeedbackSource",
    "lines_printable",
    "FILES_SCHEMA",
    "Difference",
    "FileEntry",
    "FileList",
    "compare",
    "files_target",
    "list_tree",
    "COHORT_PATTERN",
    "LABEL_PATTERN",
    "cohort_of",
    "InvalidValue",
    "describe_validation",
    "FLEET_OUTCOMES",
    "GREENLIGHT_PATTERN",
    "FleetReport",
    "GreenlightKind",
    "KEY_HEADER",
    "MachineKeyError",
    "SIGNATURE_HEADER",
    "key_id",
    "machine_id",
    "new_private_key",
    "public_key_text",
    "public_raw",
    "sign_body",
    "verified_sender",
    "LayoutError",
    "Outcome",
    "ReportedCheck",
    "clean_member_name",
    "top_folder_of",
    "BUNDLE_BASE_URL",
    "BUNDLE_FORMAT",
    "BUNDLE_MANIFEST",
    "SCHEMA_VERSION",
    "FIRST_TOLERANT",
    "VERSION",
    "BuiltDelta",
    "BundleFormatError",
    "BundleManifest",
    "ChannelFile",
    "ChannelFileError",
    "ParallelDigest",
    "Record",
    "ReleaseId",
    "ComponentArtifact",
    "ManifestRef",
    "Delta",
    "DeltaError",
    "PreviousRelease",
    "RevokedRelease",
    "EffectiveRollout",
    "HaltEvidence",
    "FeedbackRule",
    "HaltRule",
    "SequentialRule",
    "Rollout",
    "RolloutPlan",
    "RolloutState",
    "admitted",
    "effective_rollout",
    "apply_delta",
    "artifact_target",
    "atomic_symlink",
    "atomic_write",
    "build_delta",
    "canonical_version",
    "channel_role",
    "channel_target",
    "check_channel_name",
    "check_component_name",
    "manifest_target",
    "fsync_dir",
    "is_newer",
    "json_schema",
    "now",
    "known_fields",
    "manifest_required_version",
    "parse_version",
    "required_version",
    "printable",
    "remove_path",
    "rollout_bucket",
    "rollout_role",
    "rollout_target",
    "this_platform",
    "updater_channel",
    "updater_component",
    "UPDATER_PREFIX",
    "sort_versions",
    "terminal_lines",
    "unknown_fields",
    "lean_process",
    "version_of",
    "ArchiveError",
    "ConfigError",
    "GreenlightError",
    "TrustError",
    "Limits",
    "Region",
    "extract",
    "index_tar",
    "top_folder",
    "AGENT_UNIT",
    "BUILT_IN",
    "CONTROL",
    "GATE_UNIT",
    "check_folder",
    "check_program",
    "expand",
    "is_unit_file_name",
    "unit_of",
    "AgentConfig",
    "CheckConfig",
    "CommandCheck",
    "Config",
    "DnsCheck",
    "HttpCheck",
    "ProcessCheck",
    "RepositoryConfig",
    "ServiceConfig",
    "SocketConfig",
    "TcpCheck",
    "VersionCheck",
    "WebSocketCheck",
    "check_product",
    "with_machine_parts",
    "Layered",
    "ProductManifest",
    "check_value",
    "instance_values",
    "layered",
    "load_manifest",
    "manifest_schema",
    "split_product_config",
]

_ARCHIVE = "greenlight.channels._archive"
_CHECKS = "greenlight.channels._product_checks"
_CONFIG = "greenlight.channels._product_config"
_MANIFEST = "greenlight.channels._manifest"
_HOME = {
    **dict.fromkeys(("Limits", "Region", "extract", "index_tar", "top_folder"), _ARCHIVE),
    **dict.fromkeys(("CheckConfig", "CommandCheck", "DnsCheck", "HttpCheck", "ProcessCheck",
                     "TcpCheck", "VersionCheck", "WebSocketCheck"), _CHECKS),
    **dict.fromkeys(("AgentConfig", "Config", "RepositoryConfig", "ServiceConfig",
                     "SocketConfig", "check_product", "with_machine_parts"), _CONFIG),
    **dict.fromkeys(("Layered", "ProductManifest", "check_value", "instance_values",
                     "layered", "load_manifest", "manifest_schema", "split_product_config"),
                    _MANIFEST),
}
"""The names loaded on first use, and the module each comes from."""


def __getattr__(name: str) -> Any:
    return lazy_export(__name__, _HOME, name)
