"""The JSON output of `updater` commands: stable, versioned shapes (`schema` names each).

A consumer checks `schema` and may rely on every field listed here; fields are only ever
added within a schema version.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ComponentInfo(BaseModel):
    version: str
    target: str
    sha256: str
    length: int


class CheckReport(BaseModel):
    schema_: Literal["greenlight.check/1"] = Field("greenlight.check/1", alias="schema")
    root: str
    channel: str
    channel_reason: str
    installed: str | None
    available: str
    update_available: bool
    fallback: str | None
    published_at: datetime
    components: dict[str, ComponentInfo]


class StepTiming(BaseModel):
    step: str
    seconds: float


class UpgradeReport(BaseModel):
    schema_: Literal["greenlight.upgrade/1"] = Field("greenlight.upgrade/1", alias="schema")
    root: str
    channel: str
    outcome: Literal["upgraded", "up-to-date"]
    from_version: str | None
    to_version: str
    bytes_fetched: int
    bytes_total: int
    pruned: list[str]
    steps: list[StepTiming]


class StatusReport(BaseModel):
    schema_: Literal["greenlight.status/1"] = Field("greenlight.status/1", alias="schema")
    root: str
    repository: str
    channel: str
    channel_since: datetime
    channel_reason: str
    installed: str | None
    releases: list[str]


class ErrorReport(BaseModel):
    schema_: Literal["greenlight.error/1"] = Field("greenlight.error/1", alias="schema")
    error: str
    kind: str
    exit_code: int


def dump(report: BaseModel) -> str:
    return report.model_dump_json(by_alias=True, indent=2)
