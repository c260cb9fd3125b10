"""Settings of each subcommand, in groups (server, upstream, auth, logging, ...) with flat public names.

A group is a pydantic model; each of its fields has a flat name, its alias (`upstream_url`), which is both
the flag (`--upstream-url`) and the environment variable (`BRIDGE_UPSTREAM_URL`). A command's settings
model holds its groups and also accepts the flat names (`ServeSettings(listen=..., upstream_url=...)`).
`load` reads them: command-line flag > environment variable > default. The CLI builds its flags and the
README its table from `flat_fields`, so `--help`, the env var names and validation cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo

from bridge.http.client import DEFAULT_MAX_BYTES
from bridge.http.transport import TransportName

__all__ = [
    "ENV_PREFIX",
    "AuthSettings",
    "CommandSettings",
    "DevSettings",
    "FlatField",
    "LoggingSettings",
    "MockGatewaySettings",
    "MockSettings",
    "ServeSettings",
    "ServerSettings",
    "UpstreamSettings",
    "flat_fields",
    "group_title",
    "load",
    "split_host_port",
]

ENV_PREFIX = "BRIDGE_"


def split_host_port(value: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT" (IPv6 as "[::1]:50051"); ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:50051), got {value!r}")
    return host, int(port)


def _check_listen(value: str) -> str:
    split_host_port(value)
    return value


def _check_upstream_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) base URL like https://host/v1, got {_shown_url(value)!r}")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: use --api-key")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    return value.rstrip("/")


def _shown_url(value: str) -> str:
    """`value` fit for an error message: no userinfo, query or fragment (they may hold secrets)."""
    parts = urlsplit(value)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else host + parts.path


ListenAddress = Annotated[str, AfterValidator(_check_listen)]
UpstreamUrl = Annotated[str, AfterValidator(_check_upstream_url)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class _Group(BaseModel):
    """A settings group: fields validated by their flat name (the alias) or their own name."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True, hide_input_in_errors=True
    )
    title: ClassVar[str]


# ------------------------------------------------------------------------------------------------ groups


class ServerSettings(_Group):
    title = "gRPC server"

    listen: ListenAddress = Field(
        "127.0.0.1:50051", alias="listen", description="gRPC listen address HOST:PORT"
    )
    shutdown_grace: float = Field(
        15.0, ge=0, alias="shutdown_grace", description="seconds in-flight calls get to finish on SIGTERM"
    )


class UpstreamSettings(_Group):
    title = "upstream"

    url: UpstreamUrl = Field(
        alias="upstream_url",
        description="OpenAI-style base URL; the bridge calls BASE_URL/chat/completions, /models and "
        "/embeddings, e.g. https://HOST/v2/workspaces/slug:llm-gateway/webhooks/v1",
    )
    connect_timeout: float = Field(
        10.0, gt=0, alias="connect_timeout", description="seconds to open an upstream connection"
    )
    read_timeout: float = Field(
        300.0,
        gt=0,
        alias="read_timeout",
        description="seconds to wait for the upstream's next bytes (LLM prefill can be slow)",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        alias="max_connections",
        description="upstream connection pool size (= concurrent streams)",
    )
    transport: TransportName = Field(
        "aiohttp",
        alias="upstream_transport",
        description="HTTP transport under the httpx client (aiohttp is faster; docs/PERFORMANCE.md)",
    )
    max_event_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1024,
        alias="max_event_bytes",
        description="largest upstream SSE event or JSON body accepted, bytes",
    )


class AuthSettings(_Group):
    title = "upstream credentials"

    api_key: SecretStr | None = Field(
        None,
        alias="api_key",
        description="the bridge's own upstream key (session JWT or iak_ key); see --auth-mode",
    )
    mode: Literal["passthrough", "fixed", "none"] = Field(
        "passthrough",
        alias="auth_mode",
        description="passthrough: forward the caller's authorization, else use --api-key; "
        "fixed: always --api-key; none: send no credentials",
    )
    api_key_header: Literal["authorization", "x-prismeai-api-key"] = Field(
        "authorization",
        alias="api_key_header",
        description="how --api-key is sent: 'Authorization: Bearer KEY' or 'x-prismeai-api-key: KEY'",
    )


class LoggingSettings(_Group):
    title = "logging"

    level: LogLevel = Field("INFO", alias="log_level", description="log level")


class MockSettings(_Group):
    title = "mock gateway"

    listen: ListenAddress = Field(
        "127.0.0.1:8080", alias="listen", description="HTTP listen address HOST:PORT"
    )
    require_api_key: SecretStr | None = Field(
        None, alias="require_api_key", description="answer 401 unless requests carry this key"
    )


class DevServersSettings(_Group):
    title = "listen addresses"

    listen: ListenAddress = Field(
        "127.0.0.1:50051", alias="listen", description="gRPC listen address of the bridge"
    )
    mock_listen: ListenAddress = Field(
        "127.0.0.1:8080", alias="mock_listen", description="HTTP listen address of the mock gateway"
    )


# ---------------------------------------------------------------------------------------------- commands


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
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


class CommandSettings(BaseModel):
    """A subcommand's settings: its groups, also buildable from flat names."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    logging: LoggingSettings = LoggingSettings()  # every command's; listed after the command's own

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


class ServeSettings(CommandSettings):
    """Settings of `prisme-bridge serve`."""

    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings
    auth: AuthSettings = AuthSettings()


class MockGatewaySettings(CommandSettings):
    """Settings of `prisme-bridge mock-gateway`."""

    mock: MockSettings = MockSettings()


class DevSettings(CommandSettings):
    """Settings of `prisme-bridge dev` (mock gateway + bridge in one process)."""

    servers: DevServersSettings = DevServersSettings()


_Settings = TypeVar("_Settings", bound=CommandSettings)


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


def _group_model(model: type[CommandSettings], group: str) -> type[_Group]:
    group_model = model.model_fields[group].annotation
    if not (isinstance(group_model, type) and issubclass(group_model, _Group)):
        raise TypeError(f"{model.__name__}.{group} is not a settings group")
    return group_model


def load(
    model: type[_Settings], flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> _Settings:
    """`model` from command-line `flags` (by flat name; None = not given), else `BRIDGE_*` variables of
    `environ` (default: os.environ), else defaults. Raises pydantic's ValidationError."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in flat_fields(model):
        if flags.get(field.name) is not None:
            values[field.name] = flags[field.name]
        elif field.env in environ:
            values[field.name] = environ[field.env]
    return model.model_validate(values)
