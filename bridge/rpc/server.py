"""gRPC server composition: services, the interceptor chain, health, reflection, the listening port.

`build_server` knows no service in particular: each `Service` registers itself, and every one of them is
listed by reflection and reported by health. Health (grpc.health.v1): service "" is liveness (SERVING
while the process serves, drain included, until the graceful stop), each service's full name its
readiness (SERVING once started, NOT_SERVING from the start of a drain, so load balancers drain the pod
before it stops taking calls). The same health state can
also be served alone on a plaintext port (`health_listen`): Kubernetes' native gRPC probes speak only
plaintext, so they need it when the main port is TLS.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # grpc-stubs lacks it

from bridge.rpc.interceptors import ErrorMapping, Interceptor, InterceptorChain
from bridge.rpc.reflection import enable_reflection
from bridge.settings import ServerSettings, split_host_port

__all__ = ["GrpcServer", "Service", "build_server", "server_options"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024  # requests can carry images as data: URLs
HEALTH_SERVICE: Final = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Service(Protocol):
    """A gRPC service: its full proto name, and how it adds its handlers to a server."""

    @property
    def name(self) -> str: ...

    def add_to_server(self, server: grpc.aio.Server) -> None: ...


def server_options(*, reuse_port: bool = False) -> Sequence[tuple[str, Any]]:
    """Channel options of the server. `reuse_port`: share the port with the other worker processes."""
    return [
        # Fail on a port already in use instead of silently sharing it (grpc enables SO_REUSEPORT), unless
        # this is one of --workers N processes: they bind the same port and the kernel spreads connections.
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
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
class GrpcServer:
    """A built server: `start()` it, then `stop()` it; `on_stop` callbacks run after it stopped."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    services: tuple[str, ...]
    port: int
    shutdown_grace: float
    on_stop: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    health_server: grpc.aio.Server | None = None  # the plaintext health-only listener, if any
    health_port: int | None = None

    async def start(self) -> None:
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        for service in ("", *self.services):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def begin_drain(self) -> None:
        """Readiness (each service) NOT_SERVING, so probes and balancers take the pod out, while calls are
        still served; liveness ("") stays SERVING: the process is alive and must not be restarted."""
        for service in self.services:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: every service NOT_SERVING first, then in-flight calls get `grace` seconds. The
        health port closes last, so probes see NOT_SERVING rather than a refused connection until the end."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.shutdown_grace if grace is None else grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        for callback in self.on_stop:
            await callback()


def build_server(
    settings: ServerSettings,
    *,
    services: Sequence[Service],
    interceptors: Sequence[Interceptor] = (),
    grpc_interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
    health_listen: str | None = None,
    reuse_port: bool = False,
) -> GrpcServer:
    """A server for `services` on `settings.listen` (port 0 picks a free port), not yet started.

    `interceptors` run first-outermost around every RPC, and `ErrorMapping` innermost after them;
    `grpc_interceptors` (plain grpc.aio ones, e.g. OpenTelemetry's) run outside all of them. Without
    `credentials` the port is plaintext. `health_listen`: a second, plaintext server on that address with
    only grpc.health.v1, sharing the health state. `reuse_port`: bind with SO_REUSEPORT (worker
    processes). Raises OSError if an address cannot be bound.
    """
    options = server_options(reuse_port=reuse_port)
    chain = InterceptorChain([*interceptors, ErrorMapping()])
    server = grpc.aio.server(interceptors=[*grpc_interceptors, chain], options=options)
    for service in services:
        service.add_to_server(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = tuple(service.name for service in services)
    enable_reflection(server, (*names, HEALTH_SERVICE))
    port = _bind(server, settings.listen, credentials)
    built = GrpcServer(server, health, names, port, settings.shutdown_grace)
    if health_listen is not None:
        built.health_server = grpc.aio.server(options=options)
        health_pb2_grpc.add_HealthServicer_to_server(health, built.health_server)
        built.health_port = _bind(built.health_server, health_listen, None)
    return built


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    host, port = split_host_port(listen)
    address = f"{host}:{port}"
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc's "Failed to bind"
        raise OSError(f"cannot listen on {listen}: address in use or not available") from exc
