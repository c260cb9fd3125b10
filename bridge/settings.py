"""Settings of each subcommand, in groups (server, upstream, auth, logging, ...) with flat public names.

A group is a pydantic model; each of its fields has a flat name, its alias (`upstream_url`), which is both
the flag (`--upstream-url`) and the environment variable (`BRIDGE_UPSTREAM_URL`). A command's settings
model holds its groups and also accepts the flat names (`ServeSettings(listen=..., upstream_url=...)`).
`load` reads them: command-line flag > environment variable > default. The CLI builds its flags and the
README its table from `flat_fields`, so `--help`, the env var names and validation cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from bridge.auth.callers import KeyFor, check_allow_list
from bridge.eventloop import DEFAULT_EVENT_LOOP, EventLoopName
from bridge.http.client import DEFAULT_MAX_BYTES
from bridge.http.retry import DEFAULT_BACKOFF_S, DEFAULT_MAX_BACKOFF_S, DEFAULT_RETRIES
from bridge.http.transport import DEFAULT_TRANSPORT, TransportName
from bridge.upstream.headers import check_identity_header, check_returned_header

__all__ = [
    "ENDPOINT_PATHS",
    "ENV_PREFIX",
    "AuthSettings",
    "CallersSettings",
    "CommandSettings",
    "DevSettings",
    "FlatField",
    "HeadersSettings",
    "LifecycleSettings",
    "LimitsSettings",
    "LoggingSettings",
    "MetricsSettings",
    "MockGatewaySettings",
    "MockSettings",
    "OrcaSettings",
    "RetrySettings",
    "ServeLoggingSettings",
    "ServeSettings",
    "ServerSettings",
    "TlsSettings",
    "UpstreamSettings",
    "UpstreamTlsSettings",
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


_ALL_INTERFACES: Final = "0.0.0.0"


def _check_listen(value: str) -> str:
    # ":PORT" is all interfaces, as in Go and grpc-go listen addresses.
    if value.startswith(":"):
        value = _ALL_INTERFACES + value
    try:
        split_host_port(value)
    except ValueError:
        raise ValueError(
            f"expected HOST:PORT or :PORT for all interfaces (e.g. 127.0.0.1:50051, :50051), got {value!r}"
        ) from None
    return value


# The paths the bridge appends to the base URL (its services' upstream endpoints).
ENDPOINT_PATHS: Final = ("/chat/completions", "/embeddings", "/models")
# A DNS name (labels of letters, digits, "-", "_"), or an IPv4 address; IPv6 comes in brackets.
_LABEL: Final = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _check_upstream_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) base URL like https://host/v1, got {_shown_url(value)!r}")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: use --api-key")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    if any(char.isspace() for char in value):
        raise ValueError(f"must not contain white space, got {_shown_url(value)!r}")
    if not _valid_host(parts.hostname, bracketed=parts.netloc.rpartition("@")[2].startswith("[")):
        raise ValueError(f"{parts.hostname!r} is not a host name or IP address")
    try:
        parts.port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        raise ValueError(f"has an invalid port, got {_shown_url(value)!r}") from None
    base = value.rstrip("/")
    for endpoint in ENDPOINT_PATHS:
        if base.endswith(endpoint):
            # The whole endpoint pasted from the gateway's docs: every call would go to .../chat/completions/
            # chat/completions and fail NOT_FOUND with no hint. Refused, naming the URL meant.
            raise ValueError(
                f"ends in {endpoint}, which the bridge adds itself: use the base URL "
                f"{_shown_url(base.removesuffix(endpoint))}"
            )
    return base


def _valid_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:
        try:
            return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
        except ValueError:
            return False
    return _HOSTNAME.fullmatch(host) is not None


def _same_address(listen: str, url: str) -> bool:
    host, port = split_host_port(listen)
    parts = urlsplit(url)
    url_port = parts.port or (443 if parts.scheme == "https" else 80)
    same_host = host.strip("[]") == parts.hostname or (
        host in ("0.0.0.0", "[::]") and _loopback(parts.hostname)
    )
    return port != 0 and port == url_port and same_host


def _loopback(host: str | None) -> bool:
    return host in ("localhost", "127.0.0.1", "::1")


def _shown_url(value: str) -> str:
    """`value` fit for an error message: no userinfo, query or fragment (they may hold secrets)."""
    parts = urlsplit(value)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else host + parts.path


ListenAddress = Annotated[str, AfterValidator(_check_listen)]
UpstreamUrl = Annotated[str, AfterValidator(_check_upstream_url)]


def _level_name(value: object) -> object:
    # "debug", "Info", "warn": what operators type (Python's logging and most tools accept any case).
    if isinstance(value, str):
        name = value.strip().upper()
        return "WARNING" if name == "WARN" else name
    return value


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_level_name)]
LogFormat = Literal["json", "text"]
_MiB = 1024 * 1024


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
        "127.0.0.1:50051",
        alias="listen",
        description="gRPC listen address HOST:PORT; :PORT listens on all interfaces (0.0.0.0)",
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
        DEFAULT_TRANSPORT,
        alias="upstream_transport",
        description="upstream HTTP client: aiohttp-direct (aiohttp's own API, the fastest), aiohttp (the "
        "httpx API over aiohttp) or httpx (the httpx API over httpcore); docs/PERFORMANCE.md",
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
        description="passthrough: forward the caller's authorization, else use --api-key (for whom: "
        "--api-key-for); fixed: always --api-key (for whom: --api-key-for); none: send no credentials",
    )
    api_key_header: Literal["authorization", "x-prismeai-api-key"] = Field(
        "authorization",
        alias="api_key_header",
        description="how --api-key is sent: 'Authorization: Bearer KEY' or 'x-prismeai-api-key: KEY'",
    )


# -------------------------------------------------------------------------------- who may call (issue 26)


def _identities(value: object) -> object:
    # A comma-separated list (flag or environment variable) of allow-list entries, each checked.
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple):
        return check_allow_list(str(entry) for entry in value)
    return value


def _identity_header(value: object) -> object:
    return check_identity_header(value) if isinstance(value, str) else value


class CallersSettings(_Group):
    title = "who may call"

    api_key_for: KeyFor = Field(
        "authenticated",
        alias="api_key_for",
        description="for whom the bridge calls the upstream with --api-key: authenticated (callers whose "
        "client certificate passed mTLS and --tls-client-allow) or anyone who reaches the port; a call "
        "that would use it for another caller is refused UNAUTHENTICATED (docs/operations.md, Who may call)",
    )
    client_allow: Annotated[tuple[str, ...], BeforeValidator(_identities)] = Field(
        (),
        alias="tls_client_allow",
        description="client certificate identities that may call (mTLS), comma-separated: URI SANs such as "
        "spiffe://cluster.local/ns/NS/sa/SA and DNS SANs, a trailing * matching any ending; others are "
        "refused PERMISSION_DENIED; unset: every certificate --tls-client-ca signed",
    )
    identity_header: Annotated[str | None, BeforeValidator(_identity_header)] = Field(
        None,
        alias="caller_identity_header",
        description="send the caller's identity (its allowed certificate SAN, or anonymous) upstream in "
        "this header, replacing any metadata of that name a caller sends; unset: not sent",
    )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _callers_cannot_work(settings: ServeSettings) -> str | None:
    """Why the caller settings of `settings` cannot work together, or None."""
    mtls = settings.tls.client_ca is not None
    callers = settings.callers
    if callers.client_allow and not mtls:
        return "--tls-client-allow / BRIDGE_TLS_CLIENT_ALLOW names client certificates: set --tls-client-ca"
    if settings.auth.mode == "fixed" and callers.api_key_for == "authenticated" and not mtls:
        return (
            "--auth-mode fixed sends only the bridge's key, which --api-key-for authenticated keeps for "
            "callers with a client certificate, and without --tls-client-ca no caller has one: every call "
            "would be refused; set up mTLS, or --api-key-for anyone (BRIDGE_API_KEY_FOR)"
        )
    return None


def _caller_warnings(settings: ServeSettings) -> list[str]:
    """Caller settings that work, but probably not as meant: who may use the key, in one line each."""
    callers, auth = settings.callers, settings.auth
    if auth.api_key is None or auth.mode == "none":
        return []
    mtls = settings.tls.client_ca is not None
    host, _ = split_host_port(settings.server.listen)
    if callers.api_key_for == "anyone" and not mtls and not _is_loopback(host):
        return [
            f"--api-key-for anyone: every caller that reaches {settings.server.listen} without credentials "
            "of its own gets the bridge's key; limit who can connect (a NetworkPolicy, a firewall) or use "
            "mTLS with --tls-client-allow (docs/operations.md, Who may call)"
        ]
    if callers.api_key_for == "authenticated" and not mtls:
        return [
            "--api-key / BRIDGE_API_KEY is for callers authenticated by a client certificate "
            "(--api-key-for authenticated), and without --tls-client-ca there are none: callers must send "
            "credentials of their own; set --api-key-for anyone to let others use the key"
        ]
    if mtls and not callers.client_allow:
        return [
            "mTLS without --tls-client-allow: every certificate --tls-client-ca signed may call and use the "
            "bridge's key; name the callers allowed with --tls-client-allow"
        ]
    return []


# ---------------------------------------------------------------------------------------------- metadata


def _header_names(value: object) -> object:
    # A comma-separated list, from a flag or an environment variable; each name checked as metadata.
    if isinstance(value, str):
        value = [name for name in value.split(",") if name.strip()]
    if isinstance(value, list | tuple):
        return tuple(check_returned_header(str(name)) for name in value)
    return value


HeaderNames = Annotated[tuple[str, ...], BeforeValidator(_header_names)]


class HeadersSettings(_Group):
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


class LimitsSettings(_Group):
    title = "limits and load shedding"

    max_concurrent_rpcs: int | None = Field(
        None,
        ge=1,
        alias="max_concurrent_rpcs",
        description="calls served at once (a stream counts until it ends); one more fails at once with "
        "RESOURCE_EXHAUSTED, never queued; health and reflection are exempt; unset: no limit",
    )
    max_receive_message_bytes: int = Field(
        64 * _MiB,
        ge=1024,
        alias="max_receive_message_bytes",
        description="largest request message accepted, bytes (images travel as data: URLs)",
    )
    max_send_message_bytes: int = Field(
        64 * _MiB, ge=1024, alias="max_send_message_bytes", description="largest response message sent, bytes"
    )
    max_connection_age: float | None = Field(
        None,
        gt=0,
        alias="max_connection_age",
        description="seconds after which a client connection is asked to go away (GOAWAY, with up to "
        "10 percent jitter), so clients reconnect and rebalance behind L4 load balancers; unset: never",
    )
    max_connection_age_grace: float | None = Field(
        None,
        ge=0,
        alias="max_connection_age_grace",
        description="seconds calls in flight on such a connection still get before it is closed; "
        "unset: as long as they take",
    )


class MetricsSettings(_Group):
    title = "metrics"

    listen: ListenAddress | None = Field(
        default=None,  # no endpoint, and no metrics recorded
        alias="metrics_listen",
        description="serve Prometheus metrics at http://HOST:PORT/metrics; unset: no metrics endpoint",
    )
    max_models: int = Field(
        default=100,
        ge=0,  # 0: every model is "other"
        alias="metrics_max_models",
        description="model label values kept (models the upstream answered with a 2xx, first come); "
        'later models are counted as model="other"',
    )


class OrcaSettings(_Group):
    title = "load reports (ORCA)"

    enabled: bool = Field(
        True,
        alias="orca",
        description="report the pod's load to callers' weighted_round_robin balancers (ORCA, gRFC A51): the "
        "endpoint-load-metrics-bin trailer on every call and the xds.service.orca.v3.OpenRcaService stream; "
        "false: neither (docs/operations.md)",
    )
    window: float = Field(
        10.0,
        ge=0.1,
        le=600,
        alias="orca_window",
        description="seconds over which the reported call and error rates and CPU utilization are averaged",
    )
    min_interval: float = Field(
        1.0,
        gt=0,
        alias="orca_min_interval",
        description="shortest interval between two out-of-band reports on one stream, seconds; a caller "
        "asking for less gets this",
    )


class _CertificateAndKey(_Group):
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


class TlsSettings(_CertificateAndKey):
    title = "TLS on the gRPC listener"
    pair = ("cert", "key")

    cert: FilePath | None = Field(
        None,
        alias="tls_cert",
        description="PEM certificate chain of the gRPC listener (with --tls-key: TLS instead of plaintext); "
        "re-read when the file changes",
    )
    key: FilePath | None = Field(None, alias="tls_key", description="PEM private key of --tls-cert")
    client_ca: FilePath | None = Field(
        None,
        alias="tls_client_ca",
        description="PEM CA bundle: when set, every client must present a certificate it signed (mTLS)",
    )

    @field_validator("client_ca")
    @classmethod
    def _client_ca_with_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("cert", "invalid") is None:
            raise ValueError("mTLS needs TLS: set --tls-cert and --tls-key too")
        return value


class UpstreamTlsSettings(_CertificateAndKey):
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


class LifecycleSettings(_Group):
    title = "processes, health and drain"

    workers: int = Field(
        1, ge=1, le=64, alias="workers", description="processes sharing the port (SO_REUSEPORT), one per core"
    )
    event_loop: EventLoopName = Field(
        DEFAULT_EVENT_LOOP,
        alias="event_loop",
        description="asyncio event loop implementation: uvloop (libuv, faster) or asyncio (the standard "
        "library's)",
    )
    drain_delay: float = Field(
        0.0,
        ge=0,
        alias="drain_delay",
        description="seconds between SIGTERM and the stop during which readiness reports NOT_SERVING "
        "while calls are still accepted (then --shutdown-grace applies)",
    )
    health_listen: ListenAddress | None = Field(
        None,
        alias="health_listen",
        description="extra plaintext HOST:PORT serving only grpc.health.v1 (Kubernetes gRPC probes "
        "when the listener is TLS)",
    )


class RetrySettings(_Group):
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


class LoggingSettings(_Group):
    title = "logging"

    level: LogLevel = Field(
        "INFO", alias="log_level", description="log level: DEBUG, INFO, WARNING or ERROR (any case)"
    )
    format: LogFormat = Field(
        "text", alias="log_format", description="text (for people) or json (one object per line)"
    )


class ServeLoggingSettings(LoggingSettings):
    """`serve` logs JSON by default: it runs under a log collector."""

    format: LogFormat = Field(
        "json", alias="log_format", description="json (one object per line) or text (for people)"
    )


class MockSettings(_Group):
    title = "mock gateway"

    # Its own name, not BRIDGE_LISTEN: a shell that configures `serve` must not move the mock as well.
    listen: ListenAddress = Field(
        "127.0.0.1:8080",
        alias="mock_listen",
        description="HTTP listen address HOST:PORT of the mock gateway",
        json_schema_extra={"flag_aliases": ["--listen"]},
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


class ServeSettings(CommandSettings):
    """Settings of `prisme-bridge serve`."""

    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings
    auth: AuthSettings = AuthSettings()
    headers: HeadersSettings = HeadersSettings()
    limits: LimitsSettings = LimitsSettings()
    metrics: MetricsSettings = MetricsSettings()
    orca: OrcaSettings = OrcaSettings()
    tls: TlsSettings = TlsSettings()
    callers: CallersSettings = CallersSettings()
    upstream_tls: UpstreamTlsSettings = UpstreamTlsSettings()
    retry: RetrySettings = RetrySettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    logging: ServeLoggingSettings = ServeLoggingSettings()

    @model_validator(mode="after")
    def _settings_that_cannot_work(self) -> ServeSettings:
        if self.auth.mode == "fixed" and self.auth.api_key is None:
            raise ValueError(
                "--api-key / BRIDGE_API_KEY is required with --auth-mode fixed (BRIDGE_AUTH_MODE): "
                "every upstream request would go without credentials"
            )
        problem = _callers_cannot_work(self)
        if problem is not None:
            raise ValueError(problem)
        if _same_address(self.server.listen, self.upstream.url):
            raise ValueError(
                "--upstream-url / BRIDGE_UPSTREAM_URL points at the bridge's own --listen address: "
                "it would call itself"
            )
        return self

    def warnings(self) -> list[str]:
        """Settings that work, but not as their author probably meant."""
        found = []
        if self.auth.mode == "none" and self.auth.api_key is not None:
            found.append(
                "--api-key / BRIDGE_API_KEY is ignored with --auth-mode none: no credentials are sent"
            )
        if self.auth.api_key is None and self.auth.api_key_header != "authorization":
            found.append("--api-key-header / BRIDGE_API_KEY_HEADER has no effect without --api-key")
        return found + _caller_warnings(self)


class MockGatewaySettings(CommandSettings):
    """Settings of `prisme-bridge mock-gateway`."""

    mock: MockSettings = MockSettings()


class DevSettings(CommandSettings):
    """Settings of `prisme-bridge dev` (mock gateway + bridge in one process)."""

    servers: DevServersSettings = DevServersSettings()

    @model_validator(mode="after")
    def _distinct_addresses(self) -> DevSettings:
        listen, mock = (split_host_port(a) for a in (self.servers.listen, self.servers.mock_listen))
        if listen == mock and listen[1] != 0:
            raise ValueError("--listen / BRIDGE_LISTEN and --mock-listen / BRIDGE_MOCK_LISTEN must differ")
        return self


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
