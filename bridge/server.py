"""Server composition: the grpc.aio server with the chat service, health, reflection; start and stop.

Health (grpc.health.v1): service "" is liveness (SERVING while the process serves), the chat service's
full name is readiness (SERVING once the upstream client exists, NOT_SERVING from the start of a graceful
shutdown so load balancers drain the pod first).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # grpc-stubs lacks it

from bridge.config import ServeSettings, split_host_port
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.metadata import AuthPolicy
from bridge.reflection import enable_reflection
from bridge.service import SERVICE_NAME, ChatCompletionService
from bridge.upstream import UpstreamClient, UpstreamSettings

__all__ = ["BridgeServer", "serve", "server_options", "start_server"]

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024  # requests can carry images as data: URLs


def server_options() -> Sequence[tuple[str, Any]]:
    """Channel options of the server."""
    return [
        # Fail on a port already in use instead of silently sharing it (grpc enables SO_REUSEPORT).
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        # Go/Java clients commonly ping every 10-30 s; the default policy (5 min, 2 strikes) answers them
        # with GOAWAY too_many_pings. Accept pings every 10 s, also between calls.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0),
        # Ping idle clients ourselves so dead peers (and their streams) are noticed.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


@dataclass
class BridgeServer:
    """A started bridge: the gRPC server, its health servicer and the upstream client."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    upstream: UpstreamClient
    port: int
    shutdown_grace: float

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING first, then in-flight calls get `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.shutdown_grace if grace is None else grace)
        await self.upstream.aclose()


async def start_server(settings: ServeSettings) -> BridgeServer:
    """Builds and starts the bridge on `settings.listen` (port 0 picks a free port)."""
    upstream = UpstreamClient(
        UpstreamSettings(
            base_url=settings.upstream_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=settings.max_connections,
            transport=settings.upstream_transport,
            max_event_bytes=settings.max_event_bytes,
        )
    )
    auth = AuthPolicy(
        mode=settings.auth_mode,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        api_key_header=settings.api_key_header,
    )
    server = grpc.aio.server(options=server_options())
    pb_grpc.add_ChatCompletionServiceServicer_to_server(ChatCompletionService(upstream, auth), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
    host, port = split_host_port(settings.listen)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc's "Failed to bind"
        await upstream.aclose()
        raise OSError(f"cannot listen on {settings.listen}: address in use or not available") from exc
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    return BridgeServer(server, health, upstream, bound, settings.shutdown_grace)


async def serve(settings: ServeSettings) -> None:
    """Runs the bridge until SIGTERM or SIGINT, then shuts down gracefully."""
    bridge = await start_server(settings)
    host, _ = split_host_port(settings.listen)
    log.info(
        "bridge listening on %s:%d, upstream %s/chat/completions", host, bridge.port, settings.upstream_url
    )
    await wait_for_signal()
    log.info("shutting down (grace %.0f s)", settings.shutdown_grace)
    await bridge.stop()


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
