"""Settings of the upstream: where it is and how it is reached (transport, TLS, proxy), with what
credentials, which reply headers come back, and which failed requests are sent again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    FilePath,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.http.client import DEFAULT_MAX_BYTES
from bridge.http.retry import DEFAULT_BACKOFF_S, DEFAULT_MAX_BACKOFF_S, DEFAULT_RETRIES
from bridge.http.transports.base import DEFAULT_TRANSPORT, TransportName
from bridge.settings.base import CertificateAndKey, Group, UpstreamUrl
from bridge.upstream.headers import check_returned_header

__all__ = [
    "RENAMED_TRANSPORTS",
    "AuthSettings",
    "FailoverSettings",
    "HeadersSettings",
    "RetrySettings",
    "UpstreamSettings",
    "UpstreamTlsSettings",
]

# `--upstream-transport` values of the previous release, accepted with a warning for one release.
RENAMED_TRANSPORTS: Final = {"aiohttp-direct": "aiohttp"}


def _url_list(value: object) -> object:
    # One base URL, or several comma-separated (a flag, an environment variable); each checked alone.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(","))
    return value


def _distinct(urls: tuple[str, ...]) -> tuple[str, ...]:
    if not urls:
        raise ValueError("names no base URL")
    if len(set(urls)) != len(urls):
        raise ValueError("names the same base URL twice")
    return urls


UpstreamUrls = Annotated[tuple[UpstreamUrl, ...], BeforeValidator(_url_list), AfterValidator(_distinct)]


class UpstreamSettings(Group):
    title = "upstream"

    urls: UpstreamUrls = Field(
        alias="upstream_url",
        description="OpenAI-style base URL; the bridge calls BASE_URL/chat/completions, /models and "
        "/embeddings, e.g. https://HOST/v2/workspaces/slug:llm-gateway/webhooks/v1. Several, "
        "comma-separated: the first is preferred, the others are used in order when it fails "
        "(docs/reliability.md)",
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
        DEFAULT_TRANSPORT,
        alias="upstream_transport",
        description="upstream HTTP client: aiohttp (the fastest) or httpx; docs/PERFORMANCE.md",
    )
    max_event_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1024,
        alias="max_event_bytes",
        description="largest upstream SSE event or JSON body accepted, bytes",
    )

    @property
    def url(self) -> str:
        """The preferred base URL (the first)."""
        return self.urls[0]

    # Old spellings of a transport given instead of its name (a warning at start, not an error).
    _renamed_transport: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _old_transport_names(cls, data: Any, handler: ModelWrapValidatorHandler[UpstreamSettings]) -> Any:
        renamed = None
        if isinstance(data, Mapping) and "url" in data:  # the group's field was `url`, one base URL
            data = {**{k: v for k, v in data.items() if k != "url"}, "urls": data["url"]}
        if isinstance(data, Mapping):
            for key in ("upstream_transport", "transport"):
                if data.get(key) in RENAMED_TRANSPORTS:
                    renamed = data[key]
                    data = {**data, key: RENAMED_TRANSPORTS[renamed]}
        settings = handler(data)
        settings._renamed_transport = renamed
        return settings

    def renamed(self) -> list[str]:
        """Warnings for old names given instead of the current ones."""
        old = self._renamed_transport
        if old is None:
            return []
        return [
            f"--upstream-transport / BRIDGE_UPSTREAM_TRANSPORT {old} is now named "
            f"{RENAMED_TRANSPORTS[old]} (the same transport); the old name will be refused from the next "
            "release"
        ]


class AuthSettings(Group):
    title = "upstream credentials"

    api_key: SecretStr | None = Field(
        None,
        alias="api_key",
        description="the bridge's own upstream key (session JWT or iak_ key); see --auth-mode",
    )
    mode: Literal["passthrough", "fixed", "none"] = Field(
        "passthrough",
        alias="auth_mode",
        description="passthrough: forward the caller's authorization, else use --api-key (for whom: "
        "--api-key-for); fixed: always --api-key (for whom: --api-key-for); none: send no credentials",
    )
    api_key_header: Literal["authorization", "x-prismeai-api-key"] = Field(
        "authorization",
        alias="api_key_header",
        description="how --api-key is sent: 'Authorization: Bearer KEY' or 'x-prismeai-api-key: KEY'",
    )


def _header_names(value: object) -> object:
    # A comma-separated list, from a flag or an environment variable; each name checked as metadata.
    if isinstance(value, str):
        value = [name for name in value.split(",") if name.strip()]
    if isinstance(value, list | tuple):
        return tuple(check_returned_header(str(name)) for name in value)
    return value


HeaderNames = Annotated[tuple[str, ...], BeforeValidator(_header_names)]


class HeadersSettings(Group):
    title = "metadata"

    response_headers: HeaderNames = Field(
        (),
        alias="response_headers",
        description="more upstream reply headers to return as gRPC metadata, comma-separated (the ids, "
        "rate-limit and timing headers of the Prisme gateway, OpenAI, vLLM and LiteLLM always are)",
    )
    reply_metadata: bool = Field(
        True,
        alias="reply_metadata",
        description="return upstream reply headers as initial metadata; false returns none, which saves "
        "a gRPC batch per call (about 0.5 ms of a unary call at low load, docs/PERFORMANCE.md); errors keep "
        "their correlation id",
    )

    @field_validator("reply_metadata")
    @classmethod
    def _headers_returned_at_all(cls, value: bool, info: ValidationInfo) -> bool:
        if not value and info.data.get("response_headers"):
            raise ValueError("--response-headers names headers to return, but --reply-metadata is false")
        return value


class UpstreamTlsSettings(CertificateAndKey):
    title = "upstream TLS and proxies"

    ca_file: FilePath | None = Field(
        None,
        alias="upstream_ca_file",
        description="PEM CA bundle that signs the upstream's certificate (a private CA), instead of the "
        "public CAs (certifi)",
    )
    # For an upstream that wants mTLS:
    pair = ("client_cert", "client_key")
    client_cert: FilePath | None = Field(
        None, alias="upstream_client_cert", description="PEM client certificate chain for an mTLS upstream"
    )
    client_key: FilePath | None = Field(
        None, alias="upstream_client_key", description="PEM private key of --upstream-client-cert"
    )
    trust_env: bool = Field(
        False,
        alias="upstream_trust_env",
        description="honour HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY for the upstream (otherwise "
        "the environment is ignored)",
    )


class RetrySettings(Group):
    title = "retries"

    # Two, as the OpenAI SDKs do: a caller of the bridge gets what it would get calling the upstream with
    # them, and one failed call costs the upstream at most three requests (docs/reliability.md).
    retries: int = Field(
        DEFAULT_RETRIES,
        ge=0,
        le=10,
        alias="retries",
        description="times a unary upstream request the upstream cannot have answered is sent again "
        "(connection refused or dropped before the reply, 502, 503, 429 rate limited); 0: never",
    )
    backoff: float = Field(
        DEFAULT_BACKOFF_S,
        gt=0,
        alias="retry_backoff",
        description="seconds the first retry waits at most (a random part of it), each next one up to twice "
        "as long; never less than the upstream's Retry-After",
    )
    max_backoff: float = Field(
        DEFAULT_MAX_BACKOFF_S,
        gt=0,
        alias="retry_max_backoff",
        description="longest wait before a retry, seconds; an upstream asking for a longer wait "
        "(Retry-After) is not retried: the caller gets its RetryInfo",
    )
    streams: bool = Field(
        False,
        alias="retry_streams",
        description="also retry streaming calls that failed before their stream began (never once a chunk "
        "was sent)",
    )


class FailoverSettings(Group):
    title = "several upstreams"

    breaker_failures: int = Field(
        5,
        ge=1,
        alias="breaker_failures",
        description="with several --upstream-url: consecutive failures after which an upstream's circuit "
        "breaker opens (the upstream is skipped for --breaker-cooldown, then given one trial request)",
    )
    breaker_cooldown: float = Field(
        30.0,
        gt=0,
        alias="breaker_cooldown",
        description="seconds an upstream whose circuit breaker opened is skipped before one trial request",
    )
    hedge_after: int = Field(
        0,
        ge=0,
        alias="hedge_after",
        description="milliseconds without a reply (unary) or a first content chunk (stream) after which a "
        "second request goes to the next upstream (the same one if there is only one); the first to answer "
        "wins, the other is cancelled; never for a request with store: true; 0: never hedge "
        "(docs/reliability.md)",
    )
    hedge_max_ratio: float = Field(
        0.1,
        ge=0,
        le=1,
        alias="hedge_max_ratio",
        description="largest share of calls hedged, over the last 1000 calls: bounds the extra spend",
    )
