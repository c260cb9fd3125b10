"""The bridge as a process: its default parts built from `ServeSettings`, started, run until a signal.

`build_bridge` is where the defaults live: the upstream client, the services, the interceptors, the
metrics endpoint. Each can be injected instead (tests, embedding the bridge in another program); what is
not given is built from the settings. The server owns the upstream client it is given: stopping it closes
the client (and the metrics endpoint, after the calls in flight ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator, Sequence

import grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import TracerProvider as AnyTracerProvider
from prometheus_client import CollectorRegistry

from bridge.chat.service import ChatCompletionService
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.tracing import TracedTransport
from bridge.http.transport import HttpxTransport, TransportSettings
from bridge.rpc.interceptors import AccessLog, Interceptor
from bridge.rpc.limits import ConcurrencyLimit
from bridge.rpc.metrics import Metrics, serve_metrics
from bridge.rpc.server import GrpcServer, Service, build_server
from bridge.rpc.tracing import Tracing, tracer_provider_from_env
from bridge.settings import AuthSettings, ServeSettings, UpstreamSettings, split_host_port
from bridge.upstream.errors import OPENAI_COMPATIBLE
from bridge.upstream.headers import RETURNED_HEADERS, AuthPolicy, HeaderPolicy

__all__ = [
    "auth_policy",
    "build_bridge",
    "default_interceptors",
    "default_services",
    "header_policy",
    "serve",
    "stop_signals",
    "upstream_client",
]

log = logging.getLogger(__name__)


def upstream_client(
    settings: UpstreamSettings, *, tracer_provider: AnyTracerProvider | None = None
) -> HttpClient:
    """The upstream client `settings` describe, with the OpenAI-compatible error policy; its requests
    carry trace context (a span each with `tracer_provider`)."""
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
    traced = TracedTransport(HttpxTransport(transport), tracer_provider)
    return HttpClient(http, errors=OPENAI_COMPATIBLE, transport=traced)


def auth_policy(settings: AuthSettings) -> AuthPolicy:
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return AuthPolicy(mode=settings.mode, api_key=api_key, api_key_header=settings.api_key_header)


def header_policy(settings: ServeSettings) -> HeaderPolicy:
    """What crosses between metadata and upstream headers: auth, and the reply headers returned."""
    extra = tuple(name for name in settings.headers.response_headers if name not in RETURNED_HEADERS)
    return HeaderPolicy(auth=auth_policy(settings.auth), returned=RETURNED_HEADERS + extra)


def default_services(settings: ServeSettings, upstream: HttpClient) -> list[Service]:
    return [ChatCompletionService(upstream, header_policy(settings))]


def default_interceptors(
    settings: ServeSettings,
    *,
    metrics_registry: CollectorRegistry | None = None,
    tracer_provider: AnyTracerProvider | None = None,
) -> list[Interceptor]:
    """Outermost first: metrics into `metrics_registry` (if given; every call, refused ones included),
    tracing (spans with `tracer_provider`, else trace context passed on), the access log, then the
    concurrency limit, so a refused call is still counted, traced and logged."""
    interceptors: list[Interceptor] = []
    if metrics_registry is not None:
        interceptors.append(Metrics(metrics_registry, max_models=settings.metrics.max_models))
    interceptors += [Tracing(tracer_provider), AccessLog()]
    if settings.limits.max_concurrent_rpcs is not None:
        interceptors.append(ConcurrencyLimit(settings.limits.max_concurrent_rpcs))
    return interceptors


async def build_bridge(
    settings: ServeSettings,
    *,
    upstream: HttpClient | None = None,
    services: Sequence[Service] | None = None,
    interceptors: Sequence[Interceptor] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    metrics_registry: CollectorRegistry | None = None,
    tracer_provider: AnyTracerProvider | None = None,
) -> GrpcServer:
    """The bridge, built but not started (`await server.start()`); None means the default part for
    `settings`. With `--metrics-listen` the metrics endpoint is already serving `metrics_registry` (a new
    registry if None). Raises OSError if a listen address cannot be bound."""
    listen = settings.metrics.listen
    registry = metrics_registry if metrics_registry is not None or listen is None else CollectorRegistry()
    endpoint = await serve_metrics(listen, registry) if listen is not None and registry is not None else None
    client = upstream or upstream_client(settings.upstream, tracer_provider=tracer_provider)
    try:
        server = build_server(
            settings.server,
            services=default_services(settings, client) if services is None else services,
            interceptors=default_interceptors(
                settings, metrics_registry=registry, tracer_provider=tracer_provider
            )
            if interceptors is None
            else interceptors,
            credentials=credentials,
            limits=settings.limits,
        )
    except BaseException:
        if upstream is None:
            await client.aclose()
        if endpoint is not None:
            await endpoint.close()
        raise
    server.on_stop.append(client.aclose)
    if endpoint is not None:
        log.info("metrics at %s", endpoint.url)
        server.on_stop.append(endpoint.close)
    return server


async def serve(settings: ServeSettings) -> None:
    """Runs the bridge until SIGTERM or SIGINT, then shuts down gracefully. Tracing is configured by the
    standard OTEL_* variables (bridge.rpc.tracing); raises TracingConfigError if they name no exporter."""
    with stop_signals() as stop:  # before anything says "listening": a signal then must stop it cleanly
        tracer_provider = tracer_provider_from_env()
        server = await build_bridge(settings, tracer_provider=tracer_provider)
        if tracer_provider is not None:
            server.on_stop.append(lambda: _flush_spans(tracer_provider))
            log.info("tracing on: spans exported as OTEL_* variables configure")
        await server.start()
        host, _ = split_host_port(settings.server.listen)
        log.info("bridge listening on %s:%d, upstream %s", host, server.port, settings.upstream.url)
        await stop.wait()
    log.info("shutting down (grace %.0f s)", settings.server.shutdown_grace)
    await server.stop()


async def _flush_spans(provider: TracerProvider) -> None:
    await asyncio.to_thread(provider.shutdown)  # exports what is buffered; may wait on the collector


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event set by the first SIGTERM or SIGINT received inside the block."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
