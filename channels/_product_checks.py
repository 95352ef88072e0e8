"""The product's health checks, as greenlight.toml and a release's manifest declare them
(`[[check]]`): one model per type, `CheckConfig` their union, told apart by `type`."""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from greenlight.channels._product_fields import Line, TokenFile
from greenlight.channels._records import Record

__all__ = ["CheckConfig", "CommandCheck", "DnsCheck", "HttpCheck", "ProcessCheck", "TcpCheck",
           "VersionCheck", "WebSocketCheck"]


class _CheckBase(Record):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # as greenlight.toml's tables

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    required: bool = True
    timeout: float = Field(default=3.0, gt=0)
    retries: int = Field(default=0, ge=0)
    interval: float = Field(default=0.5, ge=0)


class ProcessCheck(_CheckBase):
    type: Literal["process"]
    service: str


class TcpCheck(_CheckBase):
    type: Literal["tcp"]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] | Annotated[
        str, Field(pattern=r"^\{[a-z_][a-z0-9_]*\}$")] = Field(
        description="a port number, or a placeholder the machine fills ({api_port})")


class HttpCheck(_CheckBase):
    type: Literal["http"]
    url: Line
    status: int = 200
    headers: dict[str, Line] = Field(default_factory=dict)
    bearer_token_file: TokenFile = Field(
        default=None, description="file holding the UI's token: relative to the root, or "
                                  "under {root}, {data_dir} or {release_dir}; never outside")
    json_fields: dict[str, str | int | bool] = Field(
        default_factory=dict, description="dotted JSON paths and the values they must have"
    )
    body_contains: str | None = Field(
        default=None, description="text the body must contain (any content type)")


class WebSocketCheck(_CheckBase):
    type: Literal["websocket"]
    url: Line
    bearer_token_file: TokenFile = None
    send: list[str] = Field(default_factory=lambda: ["ping"])
    expect: list[str] = Field(
        default_factory=list, description="substrings each reply must contain, in order"
    )


class DnsCheck(_CheckBase):
    type: Literal["dns"]
    resolver: Line = Field(description="host:port of the product's resolver")
    query: Line
    rdtype: str = "A"
    expect: str | None = None


class VersionCheck(_CheckBase):
    type: Literal["version"]
    url: Line
    format: Literal["json", "text"] = Field(
        default="json", description="json: the body's `field` is the version; text: the "
                                    "version appears in the body as a word of its own")
    field: str = "version"


class CommandCheck(_CheckBase):
    type: Literal["command"]
    command: list[Line] = Field(min_length=1)


CheckConfig = Annotated[
    ProcessCheck | TcpCheck | HttpCheck | WebSocketCheck | DnsCheck | VersionCheck | CommandCheck,
    Field(discriminator="type"),
]
