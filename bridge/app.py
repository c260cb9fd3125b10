"""The bridge as a process: its default parts built from `ServeSettings`, started, run until a signal.

`build_bridge` is where the defaults live: the upstream client, the services, the interceptors. Each can be
injected instead (tests, embedding the bridge in another program); what is not given is built from the
settings. The server owns the upstream client it is given: stopping it closes the client.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import grpc

from bridge.chat.service import ChatCompletionService
from bridge.embeddings.service import EmbeddingService
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.transport import TransportSettings
from bridge.models.service import ModelService
from bridge.rpc.interceptors import AccessLog, Interceptor
from bridge.rpc.server import GrpcServer, Service, build_server
from bridge.settings import AuthSettings, ServeSettings, UpstreamSettings, split_host_port
from bridge.upstream.errors import OPENAI_COMPATIBLE
from bridge.upstream.headers import AuthPolicy

__all__ = [
    "auth_policy",
    "build_bridge",
    "default_interceptors",
    "default_services",
    "serve",
    "upstream_client",
    "wait_for_signal",
]

log = logging.getLogger(__name__)


def upstream_client(settings: UpstreamSettings) -> HttpClient:
    """The upstream client `settings` describe, with the OpenAI-compatible error policy."""
    transport = TransportSettings(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_connections=settings.max_connections,
        name=settings.transport,
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


def default_services(settings: ServeSettings, upstream: HttpClient) -> list[Service]:
    auth = auth_policy(settings.auth)
    return [
        ChatCompletionService(upstream, auth),
        ModelService(upstream, auth),
        EmbeddingService(upstream, auth),
    ]


def default_interceptors(settings: ServeSettings) -> list[Interceptor]:
    return [AccessLog()]


async def build_bridge(
    settings: ServeSettings,
    *,
    upstream: HttpClient | None = None,
    services: Sequence[Service] | None = None,
    interceptors: Sequence[Interceptor] | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> GrpcServer:
    """The bridge, built but not started (`await server.start()`); None means the default part for
    `settings`. Raises OSError if the listen address cannot be bound."""
    client = upstream or upstream_client(settings.upstream)
    try:
        server = build_server(
            settings.server,
            services=default_services(settings, client) if services is None else services,
            interceptors=default_interceptors(settings) if interceptors is None else interceptors,
            credentials=credentials,
        )
    except BaseException:
        if upstream is None:
            await client.aclose()
        raise
    server.on_stop.append(client.aclose)
    return server


async def serve(settings: ServeSettings) -> None:
    """Runs the bridge until SIGTERM or SIGINT, then shuts down gracefully."""
    server = await build_bridge(settings)
    await server.start()
    host, _ = split_host_port(settings.server.listen)
    log.info(
        "bridge listening on %s:%d, upstream %s (/chat/completions, /models, /embeddings)",
        host,
        server.port,
        settings.upstream.url,
    )
    await wait_for_signal()
    log.info("shutting down (grace %.0f s)", settings.server.shutdown_grace)
    await server.stop()


async def wait_for_signal() -> None:
    """Returns on the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
