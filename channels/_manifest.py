"""A release's product manifest, and the machine's layer over it.

The manifest (`product.toml`, published with `release publish --manifest`) says how one release
runs and is checked: the `[values]` it leaves to the machine (each with its default), its
`[[service]]`s, `[[check]]`s, `[health]` and `[stop]`. It is a signed target that the channel
file names with its hash, kept beside the release as `releases/<key>/product.toml`, and
loaded by `load_manifest`, the same code at publish and on the machine.

The machine's layer is `greenlight.toml`. `layered` merges the two, purely:

- the release's services, `[health]` and `[stop]` are used as they are; greenlight.toml's
  `[[service]]`, `[health]` and `[stop]` are what a release without a manifest runs with;
- checks: the release's, less those named in `disabled_checks`, plus greenlight.toml's
  `[[check]]`s whose names the release does not declare (the machine's extra checks); a
  machine check with a name the release declares is superseded by the release's;
- values: the release's `[values]`, each overridden by greenlight.toml's `[values]`;
- a machine value the release does not declare, or a disabled check it does not have, is a
  warning (said by `updater status` and `health`), never an error.
"""

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from greenlight.channels._errors import ConfigError
from greenlight.channels._invalid import describe_validation
from greenlight.channels._placeholders import BUILT_IN, expand, placeholders
from greenlight.channels._product_checks import CheckConfig
from greenlight.channels._product_config import (
    INSTALLER_MACHINE_PARTS,
    Config,
    HealthConfig,
    ServiceConfig,
    SocketConfig,
    StopConfig,
    check_product,
)
from greenlight.channels._product_fields import (
    CONTROL,
    Line,
    check_folder,
    check_inside,
    check_program,
    check_relative_file,
)
from greenlight.channels._records import Record

__all__ = ["PRODUCT_PARTS", "Layered", "ProductManifest", "check_value", "instance_values",
           "layered", "load_manifest", "manifest_schema", "split_product_config"]


_VALUE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
Source = Literal["release", "machine"]


class ProductManifest(Record):
    """How a release runs and is checked (the JSON Schema of `product.toml`)."""

    schema_version: Literal[1] = 1
    values: dict[str, Line] = Field(
        default_factory=dict, description="placeholders the machine may set ({name} in any "
                                          "field), with their defaults")
    service: list[ServiceConfig] = Field(default_factory=list)
    socket: list[SocketConfig] = Field(
        default_factory=list, description="listening sockets Greenlight holds for the services")
    side_by_side: bool = Field(
        default=True, description="the release can run beside the running one for preflight")
    per_instance: list[str] = Field(
        default_factory=list, description="[values] naming folders of per-instance state")
    handover: bool = Field(
        default=False, description="the services take over their sockets from their "
                                   "predecessors (docs/manifest.md, Handover)")
    check: list[CheckConfig] = Field(default_factory=list)
    health: HealthConfig = Field(default_factory=HealthConfig)
    stop: StopConfig = Field(default_factory=StopConfig)


def manifest_schema() -> str:
    import json

    schema = ProductManifest.model_json_schema()
    schema["$id"] = "greenlight.product-manifest/1"
    return json.dumps(schema, indent=2) + "\n"


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []




def _where(value: object, path: str = "") -> list[tuple[str, str]]:
    """Every string of `value` (keys too) with where it is (`service[0].env.PATH`)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        found = []
        for k, v in value.items():
            at = f"{path}.{k}" if path else str(k)
            found += [(at, str(k)), *_where(v, at)]
        return found
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in _where(v, f"{path}[{i}]")]
    return []


_FILLED_SERVICE = {"command": check_program, "workdir": check_folder}
_FILLED_CHECK = {"bearer_token_file": check_relative_file}


def _refuse_reaching_out(data: dict[str, Any], source: str) -> None:
    """No string of a manifest holds a control character, and every path it builds from
    {release_dir} or {root} (its own [values] filled with their defaults) stays inside.

    Raises:
        ConfigError: one line naming the first string that does not, and where it is.
    """
    values = data.get("values")
    defaults = {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}
    for at, text in _where(data):
        control = CONTROL.search(text)
        if control:
            raise ConfigError(
                f"{source}: {at}: holds the control character "
                f"{control.group(0).encode('unicode_escape').decode('ascii')}; no string of a "
                "manifest may (a newline would write a directive of its own into a unit "
                "file)")
        if at.startswith("values"):
            continue
        try:
            check_inside(expand(text, defaults))
        except ValueError as e:
            raise ConfigError(f"{source}: {at}: {e}") from None
    # what the machine will run, its values at their defaults: the same rules once filled
    for part, rules in (("service", _FILLED_SERVICE), ("check", _FILLED_CHECK)):
        items = data.get(part)
        for i, item in enumerate(items if isinstance(items, list) else []):
            for key, rule in rules.items():
                value = item.get(key) if isinstance(item, dict) else None
                if isinstance(value, list):
                    value = value[0] if value else None
                if not isinstance(value, str):
                    continue
                try:
                    rule(expand(value, defaults))
                except ValueError as e:
                    raise ConfigError(f"{source}: {part}[{i}].{key}: {e}") from None


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None


def load_manifest(text: str, source: str) -> ProductManifest:
    """A release's manifest, checked as the machine will use it: TOML, only a manifest's
    keys, every field valid, services' and checks' references whole, and every placeholder
    either built in or declared under [values].

    Raises:
        ConfigError: one line naming the first problem.
    """
    data = _toml(text, source)
    foreign = [k for k in data if k not in ProductManifest.model_fields]
    if foreign:
        raise ConfigError(
            f"{source}: {foreign[0]!r} does not belong in a release's manifest; it may hold "
            "only [values], [[service]], [[socket]], [[check]], [health], [stop], "
            "side_by_side, per_instance and handover (the repository, channel and backend "
            "are the machine's)")
    _refuse_reaching_out(data, source)
    check_product({k: v for k, v in data.items() if k in PRODUCT_PARTS}, source)
    try:
        manifest = ProductManifest.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {describe_validation(e, data, limit=1)}") from None
    for name in manifest.values:
        if not _value_name(name):
            raise ConfigError(f"{source}: [values] {name!r}: {_NAME_RULE}")
    for text_ in _strings({k: v for k, v in data.items() if k != "values"}):
        for name in placeholders(text_):
            if name not in BUILT_IN and name not in manifest.values:
                raise ConfigError(
                    f"{source}: {{{name}}} is not a placeholder the machine fills: declare it "
                    f"under [values] (with its default), or use one of "
                    f"{', '.join('{' + b + '}' for b in BUILT_IN)}")
    _check_side_by_side(manifest, source)
    return manifest


_NAME_RULE = ("a value's name is lower case letters, digits and _, and not one of "
              + ", ".join(BUILT_IN))


def _value_name(name: str) -> bool:
    return _VALUE_NAME.fullmatch(name) is not None and name not in BUILT_IN


def check_value(name: str, value: str, source: str) -> None:
    """A value this machine sets (greenlight.toml's [values], an installer's `--value`): its
    name as a manifest declares one, its value as greenlight.toml's [values] holds one.

    Raises:
        ConfigError: one line naming the problem (never the value itself).
    """
    if not _value_name(name):
        raise ConfigError(f"{source}: {name!r}: {_NAME_RULE}")
    data = {"values": {name: value}}
    try:
        Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {describe_validation(e, data, limit=1)}") from None


PRODUCT_PARTS = ("service", "socket", "side_by_side", "per_instance", "handover", "check",
                 "health", "stop")
"""The keys of a manifest that say how the product runs (the rest is [values])."""


def instance_values(socket: SocketConfig) -> list[str]:
    """The placeholders of a socket's address: what preflight points elsewhere."""
    return placeholders(socket.listen)


def _check_side_by_side(manifest: ProductManifest, source: str) -> None:
    """What preflight and handover need of a manifest beyond what Config checks: the values
    they point elsewhere are declared.

    Raises:
        ConfigError: one line naming the first value that is not.
    """
    for name in manifest.per_instance:
        if name not in manifest.values:
            raise ConfigError(f"{source}: per_instance names {name!r}, which is not declared "
                              "under [values]")


def split_product_config(text: str, source: str) -> tuple[str, dict[str, object]]:
    """An installer's product configuration (`release installer --product-config`) as the
    release's manifest (its text, checked by `load_manifest`) and the machine's part of it
    (`backend`, `systemd_scope`, checked as greenlight.toml checks them). A file without
    machine parts is the manifest as it is, comments kept.

    Raises:
        ConfigError: one line naming the first problem.
    """
    import tomli_w

    data = _toml(text, source)
    machine = {k: v for k, v in data.items() if k in INSTALLER_MACHINE_PARTS}
    foreign = [k for k in data if k not in machine and k not in ProductManifest.model_fields]
    if foreign:
        raise ConfigError(
            f"{source}: {foreign[0]!r} is not part of a product's configuration; it may hold "
            "[values], [[service]], [[check]], [health], [stop] (the release's manifest) and "
            "backend, systemd_scope (the machine's); the repository and channel come from "
            "the installer")
    check_product(machine, source)
    manifest = text if not machine else tomli_w.dumps(
        {k: v for k, v in data.items() if k not in machine})
    load_manifest(manifest, source)
    return manifest, machine


@dataclass
class Layered:
    """One release's configuration as the machine runs it, and where each part came from."""

    config: Config
    values: dict[str, str]
    sources: dict[str, Source] = field(default_factory=dict)
    """check and service names -> "release" (its manifest) or "machine" (greenlight.toml)"""
    disabled: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    from_release: bool = False
    overridden: list[str] = field(default_factory=list)
    """the release's values this machine sets otherwise than the release's default"""

    def machine_values_in(self, check: object) -> list[str]:
        """The values `check` uses that this machine set otherwise than the release did."""
        if not isinstance(check, Record):
            return []
        used = {n for text in _strings(check.model_dump()) for n in placeholders(text)}
        return [name for name in self.overridden if name in used]


def layered(machine: Config, manifest: ProductManifest | None, version: str = "") -> Layered:
    """The configuration a release runs with: greenlight.toml alone for a release without a
    manifest, else the release's manifest under the machine's layer (see the module's rules).

    Raises:
        ConfigError: the two do not fit together (a reference the merge broke).
    """
    if manifest is None:
        sources: dict[str, Source] = {s.name: "machine" for s in machine.service}
        sources.update({c.name: "machine" for c in machine.check})
        return Layered(machine, dict(machine.values), sources)
    release = f"release {version}" if version else "the release"
    declared = {c.name for c in manifest.check}
    warnings = [f"greenlight.toml sets value {name!r}, which {release} does not declare; "
                "ignored" for name in machine.values if name not in manifest.values]
    warnings += [f"disabled_checks names {name!r}, which {release} does not declare"
                 for name in machine.disabled_checks if name not in declared]
    ready = {s.ready for s in manifest.service if s.ready}
    disabled = [c.name for c in manifest.check
                if c.name in machine.disabled_checks and c.name not in ready]
    warnings += [f"disabled_checks names {name!r}, the ready check of a service of {release}; "
                 "it stays on" for name in machine.disabled_checks if name in ready]
    if machine.service:
        warnings.append(
            f"greenlight.toml's [[service]] entries ({', '.join(s.name for s in machine.service)})"
            f" no longer apply: {release} brings its own manifest; remove them, and the checks "
            "it declares (docs/manifest.md)")
    extra = [c for c in machine.check if c.name not in declared]
    checks = [c for c in manifest.check if c.name not in disabled] + extra
    sources = {s.name: "release" for s in manifest.service}
    sources.update({c.name: "release" for c in manifest.check if c.name not in disabled})
    sources.update({c.name: "machine" for c in extra})
    update: dict[str, Any] = {"service": manifest.service, "socket": manifest.socket,
                              "side_by_side": manifest.side_by_side,
                              "per_instance": manifest.per_instance,
                              "handover": manifest.handover, "check": checks,
                              "health": manifest.health, "stop": manifest.stop}
    try:
        config = Config.model_validate({**machine.model_dump(), **{
            k: [x if isinstance(x, str) else x.model_dump() for x in v]
            if isinstance(v, list) else v if isinstance(v, bool) else v.model_dump()
            for k, v in update.items()}})
    except ValidationError as e:
        first = e.errors()[0].get("msg", "invalid")
        raise ConfigError(f"greenlight.toml over {release}'s manifest: {first}") from None
    values = {k: machine.values.get(k, v) for k, v in manifest.values.items()}
    overridden = [k for k, v in manifest.values.items() if values[k] != v]
    return Layered(config, values, sources, disabled, warnings, from_release=True,
                   overridden=overridden)
