"""The bridge as a process: its default parts built from `ServeSettings`, started, run until a signal.

`build_bridge` is where the defaults live: the upstream client, the services, the interceptors. Each can be
injected instead (tests, embedding the bridge in another program); what is not given is built from the
settings. The server owns the upstream client it is given: stopping it closes the client.

`serve` runs one server until a signal, then drains: readiness NOT_SERVING for `--drain-delay` seconds
while calls are still accepted (a second signal cuts the delay short), then a graceful stop within
`--shutdown-grace`. With `--workers N` the CLI runs N of them under `bridge.workers`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from types import TracebackType

import grpc

from bridge.chat.service import ChatCompletionService
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.transport import TransportSettings, proxy_for
from bridge.rpc.interceptors import AccessLog, Interceptor
from bridge.rpc.server import GrpcServer, Service, build_server
from bridge.rpc.tls import CertificateFiles, server_credentials
from bridge.settings import (
    AuthSettings,
    ServeSettings,
    TlsSettings,
    UpstreamSettings,
    UpstreamTlsSettings,
    split_host_port,
)
from bridge.upstream.errors import OPENAI_COMPATIBLE
from bridge.upstream.headers import AuthPolicy

__all__ = [
    "StopSignals",
    "auth_policy",
    "build_bridge",
    "default_interceptors",
    "default_services",
    "drain",
    "listener_credentials",
    "serve",
    "upstream_client",
    "wait_for_signal",
]

log = logging.getLogger(__name__)


def upstream_client(settings: UpstreamSettings, tls: UpstreamTlsSettings | None = None) -> HttpClient:
    """The upstream client `settings` describe, with the OpenAI-compatible error policy."""
    tls = tls or UpstreamTlsSettings()
    transport = TransportSettings(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_connections=settings.max_connections,
        name=settings.transport,
        ca_file=tls.ca_file,
        client_cert=(tls.client_cert, tls.client_key) if tls.client_cert and tls.client_key else None,
        proxy=proxy_for(settings.url) if tls.trust_env else None,
    )
    http = HttpSettings(
        base_url=settings.url,
        transport=transport,
        max_body_bytes=settings.max_event_bytes,
        max_event_bytes=settings.max_event_bytes,
    )
    return HttpClient(http, errors=OPENAI_COMPATIBLE)


def auth_policy(settings: AuthSettings) -> AuthPolicy:
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return AuthPolicy(mode=settings.mode, api_key=api_key, api_key_header=settings.api_key_header)


def listener_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """TLS (mTLS with a client CA) credentials that follow the certificate files; None for plaintext.
    Raises OSError if the files cannot be used."""
    if settings.cert is None or settings.key is None:
        return None
    return server_credentials(CertificateFiles(settings.cert, settings.key, settings.client_ca))


def default_services(settings: ServeSettings, upstream: HttpClient) -> list[Service]:
    return [ChatCompletionService(upstream, auth_policy(settings.auth))]


def default_interceptors(settings: ServeSettings) -> list[Interceptor]:
    return [AccessLog()]


async def build_bridge(
    settings: ServeSettings,
    *,
    upstream: HttpClient | None = None,
    services: Sequence[Service] | None = None,
    interceptors: Sequence[Interceptor] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    reuse_port: bool = False,
) -> GrpcServer:
    """The bridge, built but not started (`await server.start()`); None means the default part for
    `settings` (credentials: from the --tls-* files, if any). `reuse_port`: one of several worker
    processes on the same port. Raises OSError if an address cannot be bound or a TLS file used."""
    credentials = credentials or listener_credentials(settings.tls)
    client = upstream or upstream_client(settings.upstream, settings.upstream_tls)
    try:
        server = build_server(
            settings.server,
            services=default_services(settings, client) if services is None else services,
            interceptors=default_interceptors(settings) if interceptors is None else interceptors,
            credentials=credentials,
            health_listen=settings.lifecycle.health_listen,
            reuse_port=reuse_port,
        )
    except BaseException:
        if upstream is None:
            await client.aclose()
        raise
    server.on_stop.append(client.aclose)
    return server


async def serve(
    settings: ServeSettings, *, reuse_port: bool = False, on_ready: Callable[[], object] | None = None
) -> None:
    """Runs the bridge until SIGTERM or SIGINT, then drains and shuts down gracefully. `on_ready` is
    called once it serves (a worker tells its supervisor)."""
    server = await build_bridge(settings, reuse_port=reuse_port)
    async with StopSignals() as signals:
        await server.start()
        _log_listening(settings, server)
        if on_ready is not None:
            on_ready()
        await signals.wait()
        await drain(server, settings.lifecycle.drain_delay, signals)
    log.info("shutting down (grace %.0f s)", settings.server.shutdown_grace)
    await server.stop()


async def drain(server: GrpcServer, delay: float, signals: StopSignals) -> None:
    """Readiness NOT_SERVING, calls still accepted, for `delay` seconds or until the next signal."""
    await server.begin_drain()
    if delay > 0:
        log.info("draining: readiness NOT_SERVING, calls still accepted for %.1f s", delay)
        if await signals.wait(within=delay):
            log.info("drain delay cut short by a second signal")


def _log_listening(settings: ServeSettings, server: GrpcServer) -> None:
    host, _ = split_host_port(settings.server.listen)
    tls = settings.tls
    security = "plaintext" if tls.cert is None else "mTLS" if tls.client_ca is not None else "TLS"
    health = "" if server.health_port is None else f", health (plaintext) on port {server.health_port}"
    log.info(
        "bridge listening on %s:%d (%s%s), upstream %s/chat/completions",
        host,
        server.port,
        security,
        health,
        settings.upstream.url,
    )


class StopSignals:
    """SIGTERM and SIGINT as awaitable events while the context is open; outside it, their default
    behaviour is back (a signal after the drain stops the process at once)."""

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._received = asyncio.Event()

    async def wait(self, within: float | None = None) -> bool:
        """True on the next signal, False if `within` seconds pass first."""
        try:
            await asyncio.wait_for(self._received.wait(), within)
        except TimeoutError:
            return False
        self._received.clear()
        return True

    async def __aenter__(self) -> StopSignals:
        loop = asyncio.get_running_loop()
        for sig in self._SIGNALS:
            loop.add_signal_handler(sig, self._received.set)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._SIGNALS:
            loop.remove_signal_handler(sig)


async def wait_for_signal() -> None:
    """Returns on the first SIGTERM or SIGINT."""
    async with StopSignals() as signals:
        await signals.wait()
