"""Channel settings the bridge accepts, bearer credentials and per-call metadata."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

__all__ = [
    "DEFAULT",
    "KEEPALIVE_TIMEOUT_S",
    "KEEPALIVE_TIME_S",
    "MAX_MESSAGE_BYTES",
    "SERVICE_CONFIG",
    "Bearer",
    "CallMetadata",
    "Default",
    "channel_options",
    "create_aio_channel",
    "create_channel",
]

# The bridge accepts client pings every 10 s, also between calls (bridge/server.py); 30 s keeps a margin
# and still notices a dead peer (or a silently dropped connection) within 40 s.
KEEPALIVE_TIME_S: Final = 30
KEEPALIVE_TIMEOUT_S: Final = 10
# Requests can carry images as data: URLs; the bridge accepts 64 MiB both ways.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
# A headless Kubernetes Service resolves (dns:///name.ns.svc:50051) to every pod: spread calls over all of
# them instead of pick_first's single connection.
SERVICE_CONFIG: Final[dict[str, Any]] = {"loadBalancingConfig": [{"round_robin": {}}]}

CallMetadata = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]


class Default(enum.Enum):
    """Marker for "use the client's default" where None already means something (no deadline)."""

    DEFAULT = enum.auto()


DEFAULT: Final = Default.DEFAULT


def channel_options() -> list[tuple[str, int | str]]:
    """gRPC channel options: keepalive within the bridge's policy, round_robin, 64 MiB messages."""
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_S * 1000),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_S * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging an idle connection
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


def _credentials(tls: bool | grpc.ChannelCredentials) -> grpc.ChannelCredentials | None:
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    return grpc.ssl_channel_credentials() if tls else None


def _options(extra: Iterable[tuple[str, int | str]]) -> list[tuple[str, int | str]]:
    # A later option with the same name wins in gRPC core; keep only the caller's.
    extra = list(extra)
    names = {name for name, _ in extra}
    return [option for option in channel_options() if option[0] not in names] + extra


def create_channel(
    target: str, *, tls: bool | grpc.ChannelCredentials, options: Iterable[tuple[str, int | str]] = ()
) -> grpc.Channel:
    """A sync channel with channel_options(). `tls`: True (system roots), False (plaintext: loopback, a
    sidecar, a mesh that encrypts) or your own grpc.ChannelCredentials. `options` add to or override
    channel_options()."""
    credentials = _credentials(tls)
    if credentials is None:
        return grpc.insecure_channel(target, options=_options(options))
    return grpc.secure_channel(target, credentials, options=_options(options))


def create_aio_channel(
    target: str, *, tls: bool | grpc.ChannelCredentials, options: Iterable[tuple[str, int | str]] = ()
) -> grpc.aio.Channel:
    """create_channel() for asyncio."""
    credentials = _credentials(tls)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=_options(options))
    return grpc.aio.secure_channel(target, credentials, options=_options(options))


@dataclass(frozen=True)
class Bearer:
    """A bearer token (session JWT or iak_ key), sent as `authorization: Bearer <token>` metadata.

    A token is a secret: it is never sent over a plaintext channel unless `allow_plaintext` says the
    network is trusted (loopback, a sidecar or a mesh that encrypts). It is left out of repr().
    """

    token: str = field(repr=False)
    allow_plaintext: bool = False

    def __post_init__(self) -> None:
        if not self.token or any(c in self.token for c in "\r\n"):
            raise ValueError("a bearer token must be non-empty and on one line")

    def header(self, *, secure: bool) -> tuple[str, str]:
        """The metadata entry; ValueError on a plaintext channel without allow_plaintext."""
        if not secure and not self.allow_plaintext:
            raise ValueError(
                "refusing to send a bearer token over a plaintext channel: use TLS, or "
                "Bearer(token, allow_plaintext=True) on a trusted network"
            )
        return ("authorization", f"Bearer {self.token}")


@dataclass(frozen=True)
class CallSettings:
    """A client's defaults for every call, and how a call's own arguments combine with them."""

    secure: bool
    credentials: Bearer | None = None
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    timeout: float | None = None

    def timeout_for(self, timeout: float | Default | None) -> float | None:
        return self.timeout if isinstance(timeout, Default) else timeout

    def for_call(
        self, timeout: float | Default | None, metadata: CallMetadata | None, credentials: Bearer | None
    ) -> dict[str, Any]:
        """The `timeout` and `metadata` keyword arguments of one stub call."""
        return {"timeout": self.timeout_for(timeout), "metadata": self.metadata_for(metadata, credentials)}

    def metadata_for(
        self, metadata: CallMetadata | None, credentials: Bearer | None
    ) -> tuple[tuple[str, str | bytes], ...]:
        """Client metadata, then the call's; the call's credentials (else the client's) replace any
        `authorization` entry."""
        entries = [*self.metadata, *normalize_metadata(metadata)]
        bearer = credentials or self.credentials
        if bearer is None:
            return tuple(entries)
        return (*(e for e in entries if e[0] != "authorization"), bearer.header(secure=self.secure))


def normalize_metadata(metadata: CallMetadata | None) -> tuple[tuple[str, str | bytes], ...]:
    """Metadata as gRPC wants it: a tuple of (lower-case key, value); a `-bin` key carries bytes."""
    if metadata is None:
        return ()
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    return tuple((key.lower(), value) for key, value in items)
