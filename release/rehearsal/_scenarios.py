"""The machine layers a rehearsal runs each path with: a scenarios file (TOML).

```toml
ports = ["core_port", "dns_port"]   # values given a free port per path when paths share one
                                    # network (no namespaces); default: every *_port value

[machine]                           # what every machine has, under every scenario
files = { "data/ui-token" = "rehearsal-token" }   # written into the root before install

[[scenario]]                        # one machine layer, as machines write greenlight.toml
name = "alt-port"
values = { core_port = "18080" }
disabled_checks = ["core-version"]
stands_for = ["linux-6/x86_64/legacy"]   # the collector's cohorts this layer stands in for
files = { "data/legacy-hardware" = "" }

[[scenario.check]]                  # an extra check of this machine's own
name = "local-disk"
type = "command"
command = ["test", "-w", "{root}"]
```

Every path runs once with the release's defaults (layer `default`: `[machine]` alone) and
once for each scenario (`[machine]` under the scenario's own settings). A file path is
relative to the installation root and stays inside it.
"""

import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from greenlight.release._errors import NotFound, UsageError

__all__ = ["DEFAULT_LAYER", "Layer", "Scenarios", "load_scenarios"]

DEFAULT_LAYER = "default"
NAME = r"^[a-z0-9][a-z0-9._-]{0,39}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Machine(_Strict):
    values: dict[str, str] = Field(default_factory=dict)
    disabled_checks: list[str] = Field(default_factory=list)
    check: list[dict[str, Any]] = Field(default_factory=list)
    files: dict[str, str] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _inside(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            p = PurePosixPath(name)
            if not name or p.is_absolute() or ".." in p.parts or "\\" in name \
                    or name.startswith("."):
                raise ValueError(f"file {name!r} must be a path inside the root "
                                 "(relative, without '..')")
        return files


class Layer(_Machine):
    name: str = Field(pattern=NAME)
    stands_for: list[str] = Field(default_factory=list,
                                  description="the collector's cohorts this layer stands in for")

    def machine_parts(self) -> dict[str, Any]:
        """This layer's part of greenlight.toml: values, disabled checks, extra checks."""
        parts: dict[str, Any] = {}
        if self.values:
            parts["values"] = dict(self.values)
        if self.disabled_checks:
            parts["disabled_checks"] = list(self.disabled_checks)
        if self.check:
            parts["check"] = [dict(c) for c in self.check]
        return parts


class Scenarios(_Strict):
    ports: list[str] | None = None
    machine: _Machine = Field(default_factory=_Machine)
    scenario: list[Layer] = Field(default_factory=list)

    def layers(self) -> list[Layer]:
        """The default layer, then each scenario over `[machine]`."""
        base = self.machine
        default = Layer(name=DEFAULT_LAYER, values=base.values,
                        disabled_checks=base.disabled_checks, check=base.check,
                        files=base.files)
        out = [default]
        for s in self.scenario:
            names = {c.get("name") for c in s.check}
            out.append(s.model_copy(update={
                "values": {**base.values, **s.values},
                "disabled_checks": sorted({*base.disabled_checks, *s.disabled_checks}),
                "check": [*(c for c in base.check if c.get("name") not in names), *s.check],
                "files": {**base.files, **s.files}}))
        return out

    def port_values(self, declared: dict[str, str]) -> list[str]:
        """The values that get a free port per path when paths share one network."""
        if self.ports is not None:
            return list(self.ports)
        return sorted(name for name in declared if name.endswith("_port"))


def load_scenarios(path: Path | None) -> Scenarios:
    """The scenarios file at `path` (none: the release's defaults alone).

    Raises:
        NotFound: no such file. UsageError: it does not parse, one line naming the problem.
    """
    from greenlight.channels import describe_validation

    if path is None:
        return Scenarios()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"--scenarios {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--scenarios {path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--scenarios {path}: not TOML: {e}") from None
    try:
        scenarios = Scenarios.model_validate(data)
    except ValidationError as e:
        raise UsageError(f"--scenarios {path}: {describe_validation(e, data, limit=1)}"
                         ) from None
    from greenlight.channels import ConfigError, check_product

    for layer in scenarios.layers():  # each layer's checks as a machine's Config checks them
        try:
            check_product({"check": layer.check}, f"--scenarios {path}, layer {layer.name}")
        except ConfigError as e:
            raise UsageError(str(e)) from None
    names = [s.name for s in scenarios.scenario]
    twice = sorted({n for n in names if names.count(n) > 1} | ({DEFAULT_LAYER} & set(names)))
    if twice:
        raise UsageError(f"--scenarios {path}: scenario name {twice[0]!r} is used twice "
                         f"('{DEFAULT_LAYER}' is the release's defaults)")
    return scenarios
