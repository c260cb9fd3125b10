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

import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # grpc-stubs lacks it

from bridge.address import split_host_port
from bridge.rpc.call import HEALTH_SERVICE
from bridge.rpc.chain import InterceptorChain
from bridge.rpc.interceptors import ErrorMapping, Interceptor
from bridge.rpc.reflection import enable_reflection
from bridge.rpc.wellformed import install_log_filter

__all__ = [
    "DEFAULT_CONFIG",
    "GrpcServer",
    "ServerConfig",
    "Service",
    "build_server",
    "server_options",
    "unbindable",
]

log = logging.getLogger(__name__)

_MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the server listens and what it accepts: plain values the RPC layer owns (bridge.app fills them
    from the settings, whose defaults are these)."""

    listen: str = "127.0.0.1:50051"  # HOST:PORT; port 0 picks a free port
    shutdown_grace: float = 15.0  # seconds calls in flight get on a graceful stop
    max_receive_message_bytes: int = 64 * _MIB
    max_send_message_bytes: int = 64 * _MIB
    max_connection_age: float | None = None  # seconds until a connection is asked to go away; None: never
    max_connection_age_grace: float | None = None  # seconds its calls then get; None: as long as they take
    health_listen: str | None = None  # HOST:PORT of a plaintext health-only listener, if any


DEFAULT_CONFIG: Final = ServerConfig()


class Service(Protocol):
    """A gRPC service: its full proto name, and how it adds its handlers to a server."""

    @property
    def name(self) -> str: ...

    def add_to_server(self, server: grpc.aio.Server) -> None: ...


def server_options(
    limits: ServerConfig = DEFAULT_CONFIG, *, reuse_port: bool = False
) -> Sequence[tuple[str, Any]]:
    """Channel options of the server: message sizes and connection age from `limits`, keepalive policy.
    `reuse_port`: share the port with the other worker processes."""
    options: list[tuple[str, Any]] = [
        # Fail on a port already in use instead of silently sharing it (grpc enables SO_REUSEPORT), unless
        # this is one of --workers N processes: they bind the same port and the kernel spreads connections.
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_receive_message_length", limits.max_receive_message_bytes),
        ("grpc.max_send_message_length", limits.max_send_message_bytes),
        # Go/Java clients commonly ping every 10-30 s; the default policy (5 min, 2 strikes) answers them
        # with GOAWAY too_many_pings. Accept pings every 10 s, also between calls.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0),
        # Ping idle clients ourselves so dead peers (and their streams) are noticed.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    # GOAWAY after the age (grpc adds +-10 % jitter): new calls go to a new connection, so clients behind an
    # L4 balancer spread again; calls in flight get the grace (none set: as long as they take).
    if limits.max_connection_age is not None:
        options.append(("grpc.max_connection_age_ms", _ms(limits.max_connection_age)))
    if limits.max_connection_age_grace is not None:
        options.append(("grpc.max_connection_age_grace_ms", _ms(limits.max_connection_age_grace)))
    return options


def _ms(seconds: float) -> int:
    return min(round(seconds * 1000), 2**31 - 1)  # a C int in grpc core


@dataclass
class GrpcServer:
    """A built server: `start()` it, then `stop()` it; `on_stopping` callbacks run as the stop begins (end
    streams that would otherwise hold it for the whole grace), `on_stop` callbacks after it stopped."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    services: tuple[str, ...]
    port: int
    shutdown_grace: float
    on_stop: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    on_stopping: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
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
        for callback in self.on_stopping:
            await callback()
        await self.server.stop(self.shutdown_grace if grace is None else grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        for callback in self.on_stop:
            await callback()


def build_server(
    config: ServerConfig,
    *,
    services: Sequence[Service],
    interceptors: Sequence[Interceptor] = (),
    callers: Interceptor | None = None,
    grpc_interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
    reuse_port: bool = False,
) -> GrpcServer:
    """A server for `services` on `config.listen` (port 0 picks a free port), not yet started.

    `interceptors` run first-outermost around every RPC, then `callers` (who may call:
    bridge.rpc.callers), pinned here so that no list of interceptors leaves it out, and `ErrorMapping`
    innermost after them;
    `grpc_interceptors` (plain grpc.aio ones) run outside all of them. Without `credentials` the port is
    plaintext. `config` also sets message sizes and connection age, and with `health_listen` a second,
    plaintext server on that address with only grpc.health.v1, sharing the health state. `reuse_port`:
    bind with SO_REUSEPORT (worker processes). Raises OSError if an address cannot be bound.
    """
    install_log_filter()  # grpc's own line for undecodable metadata carries its value and a traceback
    options = server_options(config, reuse_port=reuse_port)
    pinned = [ErrorMapping()] if callers is None else [callers, ErrorMapping()]
    chain = InterceptorChain([*interceptors, *pinned])
    # The chain wraps each handler as it is registered, not as a grpc.aio interceptor: grpc runs those on
    # every call to find the handler. Without grpc_interceptors, grpc.aio finds the wrapped handler itself.
    server = grpc.aio.server(interceptors=list(grpc_interceptors) or None, options=options)
    chained = chain.on(server)
    for service in services:
        service.add_to_server(chained)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, chained)
    names = tuple(service.name for service in services)
    enable_reflection(chained, (*names, HEALTH_SERVICE))
    port = _bind(server, config.listen, credentials, reuse_port=reuse_port)
    built = GrpcServer(server, health, names, port, config.shutdown_grace)
    if config.health_listen is not None:
        built.health_server = grpc.aio.server(options=options)
        health_pb2_grpc.add_HealthServicer_to_server(health, built.health_server)
        flag = "--health-listen / BRIDGE_HEALTH_LISTEN"
        built.health_port = _bind(
            built.health_server, config.health_listen, None, reuse_port=reuse_port, flag=flag
        )
    return built


def _bind(
    server: grpc.aio.Server,
    listen: str,
    credentials: grpc.ServerCredentials | None,
    *,
    reuse_port: bool = False,
    flag: str = "--listen / BRIDGE_LISTEN",
) -> int:
    host, port = split_host_port(listen)
    address = f"{host}:{port}"
    # Checked first: grpc's own failure prints a core log line before raising, and a new user reads that.
    problem = unbindable(host, port, reuse_port=reuse_port)
    if problem is None:
        try:
            if credentials is None:
                return server.add_insecure_port(address)
            return server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind"
            problem = "address in use or not available"
    raise OSError(f"cannot listen on {listen} ({flag}): {problem}")


def unbindable(host: str, port: int, *, reuse_port: bool = False) -> str | None:
    """Why a TCP server could not listen on host:port ("address already in use"), or None if it can.
    `reuse_port`: as one of several processes sharing the port (SO_REUSEPORT)."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc and aiohttp bind
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                return (
                    "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
                )
    return None
