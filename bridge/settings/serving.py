"""Settings of the gRPC server: where it listens and with what TLS, its limits, its metrics endpoint, its
load reports (ORCA), its processes, health and drain, and how it logs. Defaults are the RPC layer's own
(bridge.rpc.server, bridge.rpc.load)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath, ValidationInfo, field_validator

from bridge.eventloop import DEFAULT_EVENT_LOOP, EventLoopName
from bridge.rpc.load import DEFAULT_LOAD_OPTIONS
from bridge.rpc.server import DEFAULT_CONFIG
from bridge.settings.base import CertificateAndKey, Group, ListenAddress, LogFormat, LoggingSettings

__all__ = [
    "LifecycleSettings",
    "LimitsSettings",
    "MetricsSettings",
    "OrcaSettings",
    "ServeLoggingSettings",
    "ServerSettings",
    "TlsSettings",
]


class ServerSettings(Group):
    title = "gRPC server"

    listen: ListenAddress = Field(
        DEFAULT_CONFIG.listen,
        alias="listen",
        description="gRPC listen address HOST:PORT; :PORT listens on all interfaces (0.0.0.0)",
    )
    shutdown_grace: float = Field(
        DEFAULT_CONFIG.shutdown_grace,
        ge=0,
        alias="shutdown_grace",
        description="seconds in-flight calls get to finish on SIGTERM",
    )


class LimitsSettings(Group):
    title = "limits and load shedding"

    max_concurrent_rpcs: int | None = Field(
        None,
        ge=1,
        alias="max_concurrent_rpcs",
        description="calls served at once (a stream counts until it ends); one more fails at once with "
        "RESOURCE_EXHAUSTED, never queued; health and reflection are exempt; unset: no limit",
    )
    max_receive_message_bytes: int = Field(
        DEFAULT_CONFIG.max_receive_message_bytes,
        ge=1024,
        alias="max_receive_message_bytes",
        description="largest request message accepted, bytes (images travel as data: URLs)",
    )
    max_send_message_bytes: int = Field(
        DEFAULT_CONFIG.max_send_message_bytes,
        ge=1024,
        alias="max_send_message_bytes",
        description="largest response message sent, bytes",
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


class MetricsSettings(Group):
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


class OrcaSettings(Group):
    title = "load reports (ORCA)"

    enabled: bool = Field(
        True,
        alias="orca",
        description="report the pod's load to callers' weighted_round_robin balancers (ORCA, gRFC A51): the "
        "endpoint-load-metrics-bin trailer on every call and the xds.service.orca.v3.OpenRcaService stream; "
        "false: neither (docs/operations.md)",
    )
    window: float = Field(
        DEFAULT_LOAD_OPTIONS.window,
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


class TlsSettings(CertificateAndKey):
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


class LifecycleSettings(Group):
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


class ServeLoggingSettings(LoggingSettings):
    """`serve` logs JSON by default: it runs under a log collector."""

    format: LogFormat = Field(
        "json", alias="log_format", description="json (one object per line) or text (for people)"
    )
