"""greenlight.toml: where the repository is, which channel, how many releases to keep.

Read with tomllib, validated by pydantic; an invalid file gives one line naming the file and
the field.
"""

import tomllib
from pathlib import Path
from typing import Annotated

import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from channels import check_channel_name
from updater._errors import ConfigError


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/") + "/"


class RepositoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, AfterValidator(_url)] = Field(
        description="base URL; metadata/ and targets/ are below it"
    )
    metadata_url: Annotated[str, AfterValidator(_url)] | None = None
    targets_url: Annotated[str, AfterValidator(_url)] | None = None
    timeout: float = Field(default=30.0, gt=0)

    @property
    def metadata(self) -> str:
        return self.metadata_url or self.url + "metadata/"

    @property
    def targets(self) -> str:
        return self.targets_url or self.url + "targets/"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repository: RepositoryConfig
    channel: Annotated[str, AfterValidator(check_channel_name)] = "stable"
    keep_releases: int = Field(default=3, ge=1)

    @classmethod
    def load(cls, path: Path) -> "Config":
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no configuration (create the root with 'updater init')"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: field {where}: {first['msg']}") from None

    def dump(self) -> str:
        return tomli_w.dumps(self.model_dump(exclude_none=True))
