"""Settings of each subcommand, one pydantic-settings model each: every field is a flag and a BRIDGE_* var.

Precedence: command-line flag > environment variable > default. The CLI builds its flags from these
models, so `--help`, the env var names and validation can't drift apart.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DevSettings", "MockGatewaySettings", "ServeSettings", "split_host_port"]


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
_ENV = SettingsConfigDict(env_prefix="BRIDGE_", extra="forbid", hide_input_in_errors=True)


class ServeSettings(BaseSettings):
    """Settings of `prisme-bridge serve`."""

    model_config = _ENV

    listen: ListenAddress = Field("127.0.0.1:50051", description="gRPC listen address HOST:PORT")
    upstream_url: UpstreamUrl = Field(
        description="OpenAI-style base URL; the bridge POSTs to BASE_URL/chat/completions, e.g. "
        "https://HOST/v2/workspaces/slug:llm-gateway/webhooks/v1"
    )
    api_key: SecretStr | None = Field(
        None, description="the bridge's own upstream key (session JWT or iak_ key); see --auth-mode"
    )
    auth_mode: Literal["passthrough", "fixed", "none"] = Field(
        "passthrough",
        description="passthrough: forward the caller's authorization, else use --api-key; "
        "fixed: always --api-key; none: send no credentials",
    )
    api_key_header: Literal["authorization", "x-prismeai-api-key"] = Field(
        "authorization",
        description="how --api-key is sent: 'Authorization: Bearer KEY' or 'x-prismeai-api-key: KEY'",
    )
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open an upstream connection")
    read_timeout: float = Field(
        300.0, gt=0, description="seconds to wait for the upstream's next bytes (LLM prefill can be slow)"
    )
    max_connections: int = Field(
        1024, ge=1, description="upstream connection pool size (= concurrent streams)"
    )
    upstream_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="HTTP transport under the httpx client (aiohttp is faster; docs/PERFORMANCE.md)",
    )
    max_event_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest upstream SSE event or JSON body accepted, bytes"
    )
    shutdown_grace: float = Field(15.0, ge=0, description="seconds in-flight calls get to finish on SIGTERM")
    log_level: LogLevel = Field("INFO", description="log level")


class MockGatewaySettings(BaseSettings):
    """Settings of `prisme-bridge mock-gateway`."""

    model_config = _ENV

    listen: ListenAddress = Field("127.0.0.1:8080", description="HTTP listen address HOST:PORT")
    require_api_key: SecretStr | None = Field(None, description="answer 401 unless requests carry this key")
    log_level: LogLevel = Field("INFO", description="log level")


class DevSettings(BaseSettings):
    """Settings of `prisme-bridge dev` (mock gateway + bridge in one process)."""

    model_config = _ENV

    listen: ListenAddress = Field("127.0.0.1:50051", description="gRPC listen address of the bridge")
    mock_listen: ListenAddress = Field(
        "127.0.0.1:8080", description="HTTP listen address of the mock gateway"
    )
    log_level: LogLevel = Field("INFO", description="log level")
