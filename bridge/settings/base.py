"""What a setting is: a group of fields with flat public names, and the settings of a command made of groups.

A group is a pydantic model; each of its fields has a flat name, its alias (`upstream_url`), which is both
the flag (`--upstream-url`) and the environment variable (`BRIDGE_UPSTREAM_URL`). A command's settings
model holds its groups and also accepts the flat names (`ServeSettings(listen=..., upstream_url=...)`).
`flat_fields` lists them, so the loader, `--help`, the README's table and validation cannot drift apart
(bridge.settings.flags).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from bridge.address import check_listen, check_upstream_url

__all__ = [
    "ENV_PREFIX",
    "MIB",
    "CertificateAndKey",
    "CommandSettings",
    "FlatField",
    "Group",
    "ListenAddress",
    "LogFormat",
    "LogLevel",
    "LoggingSettings",
    "UpstreamUrl",
    "flat_fields",
    "group_title",
]

ENV_PREFIX: Final = "BRIDGE_"
MIB: Final = 1024 * 1024

ListenAddress = Annotated[str, AfterValidator(check_listen)]
UpstreamUrl = Annotated[str, AfterValidator(check_upstream_url)]


def _level_name(value: object) -> object:
    # "debug", "Info", "warn": what operators type (Python's logging and most tools accept any case).
    if isinstance(value, str):
        name = value.strip().upper()
        return "WARNING" if name == "WARN" else name
    return value


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_level_name)]

LogFormat = Literal["json", "text"]


class Group(BaseModel):
    """A settings group: fields validated by their flat name (the alias) or their own name."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True, hide_input_in_errors=True
    )
    title: ClassVar[str]


class CertificateAndKey(Group):
    """A group with a certificate file and its key file: both set, or neither."""

    pair: ClassVar[tuple[str, str]]  # the attributes of the certificate and of its key

    @model_validator(mode="before")
    @classmethod
    def _key_always_checked(cls, data: Any) -> Any:
        # An absent key is given as None, so the validator below runs and reports it under its flat name
        # (a default checked with validate_default would be reported by attribute name).
        key = cls.pair[1]
        alias = cls.model_fields[key].alias
        if isinstance(data, Mapping) and key not in data and alias not in data:
            return {**data, alias: None}
        return data

    @field_validator("*")
    @classmethod
    def _key_with_its_certificate(cls, value: Any, info: ValidationInfo) -> Any:
        cert, key = cls.pair
        # a certificate that is itself invalid is missing from info.data: that error is the one reported
        if info.field_name == key and cert in info.data and (value is None) != (info.data[cert] is None):
            flags = [f"--{cls.model_fields[name].alias}".replace("_", "-") for name in cls.pair]
            raise ValueError(f"{flags[0]} and {flags[1]} go together")
        return value


class LoggingSettings(Group):
    title = "logging"

    level: LogLevel = Field(
        "INFO", alias="log_level", description="log level: DEBUG, INFO, WARNING or ERROR (any case)"
    )
    format: LogFormat = Field(
        "text", alias="log_format", description="text (for people) or json (one object per line)"
    )


@dataclass(frozen=True, slots=True)
class FlatField:
    """One setting as users see it: its flat name, flag and env var, and where it lives."""

    group: str
    attribute: str
    info: FieldInfo

    @property
    def name(self) -> str:
        assert self.info.alias is not None  # every group field has one (a test checks)
        return self.info.alias

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flag_aliases(self) -> list[str]:
        """Other spellings of the flag kept for compatibility (no env var of their own)."""
        extra = self.info.json_schema_extra
        aliases = extra.get("flag_aliases", []) if isinstance(extra, dict) else []
        return [str(alias) for alias in aliases] if isinstance(aliases, list) else []

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


class CommandSettings(BaseModel):
    """A subcommand's settings: its groups, also buildable from flat names."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    logging: LoggingSettings = LoggingSettings()  # every command's; listed after the command's own

    def warnings(self) -> list[str]:
        """Settings that work, but not as their author probably meant (logged at start)."""
        return []

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        # Every group present, so a missing setting is reported by its own name, not as a missing group.
        nested: dict[str, Any] = {group: {} for group in cls.model_fields}
        flat = {field.name: field for field in flat_fields(cls)}
        for key, value in data.items():
            field = flat.get(key)
            if field is None:
                nested[key] = value  # a group given whole, or an unknown name for pydantic to refuse
            else:
                nested[field.group][key] = value
        return nested


def flat_fields(model: type[CommandSettings]) -> Iterator[FlatField]:
    """Every setting of a command, group by group: the command's own groups, then the common ones."""
    common = CommandSettings.model_fields.keys()
    own = [name for name in model.model_fields if name not in common]
    for group_name in [*own, *common]:
        for attribute, info in _group_model(model, group_name).model_fields.items():
            yield FlatField(group_name, attribute, info)


def group_title(model: type[CommandSettings], group: str) -> str:
    """The heading of a group in --help ("upstream")."""
    return _group_model(model, group).title


def _group_model(model: type[CommandSettings], group: str) -> type[Group]:
    group_model = model.model_fields[group].annotation
    if not (isinstance(group_model, type) and issubclass(group_model, Group)):
        raise TypeError(f"{model.__name__}.{group} is not a settings group")
    return group_model
