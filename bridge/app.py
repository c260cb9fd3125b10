"""The bridge as a process: its default parts built from `ServeSettings`, started, run until a signal.

`build_bridge` is where the defaults live: the upstream client, the services, the interceptors, the
metrics endpoint. Each can be injected instead (tests, embedding the bridge in another program); what is
not given is built from the settings. The server owns the upstream client it is given: stopping it closes
the client (and the metrics endpoint, after the calls in flight ended).

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
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import TracerProvider as AnyTracerProvider
from prometheus_client import CollectorRegistry

from bridge.address import split_host_port
from bridge.auth.callers import AllowList
from bridge.chat.service import ChatCompletionService
from bridge.embeddings.service import EmbeddingService
from bridge.http.breaker import BreakerPolicy, HedgePolicy
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.failover import UpstreamPool
from bridge.http.reachability import check_upstream, log_reachability
from bridge.http.retry import NO_RETRIES, RetryPolicy
from bridge.http.tracing import TracedTransport
from bridge.http.transports import build_transport
from bridge.http.transports.base import TransportSettings, proxy_for, tls_context
from bridge.models.service import ModelService
from bridge.rpc.access import AccessLog
from bridge.rpc.call import note_upstream, note_upstream_attempt
from bridge.rpc.callers import CallerAuthorization
from bridge.rpc.interceptors import Interceptor
from bridge.rpc.limits import ConcurrencyLimit
from bridge.rpc.load import LoadBoard, LoadMeter, LoadOptions, available_cores
from bridge.rpc.metrics import Metrics, exposed, serve_metrics
from bridge.rpc.orca import LoadReports
from bridge.rpc.orca_service import OrcaService
from bridge.rpc.server import GrpcServer, ServerConfig, Service, build_server
from bridge.rpc.tls import CertificateFiles, server_credentials
from bridge.rpc.tracing import Tracing, tracer_provider_from_env
from bridge.settings import ServeSettings
from bridge.settings.callers import CallersSettings
from bridge.settings.serving import TlsSettings
from bridge.settings.upstream import AuthSettings, RetrySettings, UpstreamSettings, UpstreamTlsSettings
from bridge.upstream.errors import OPENAI_COMPATIBLE
from bridge.upstream.headers import RETURNED_HEADERS, AuthPolicy, HeaderPolicy
from bridge.upstream_call import Upstream
from bridge.upstream_metrics import PoolCollector

__all__ = [
    "StopSignals",
    "auth_policy",
    "build_bridge",
    "caller_authorization",
    "check_reachability",
    "default_interceptors",
    "default_services",
    "drain",
    "header_policy",
    "listener_credentials",
    "load_board",
    "load_meter",
    "load_options",
    "retry_policy",
    "serve",
    "server_config",
    "transport_settings",
    "upstream",
    "upstream_client",
]

log = logging.getLogger(__name__)


def upstream_client(
    settings: UpstreamSettings,
    tls: UpstreamTlsSettings | None = None,
    *,
    retry: RetrySettings | None = None,
    tracer_provider: AnyTracerProvider | None = None,
    url: str | None = None,
    count_attempts: bool = True,
) -> HttpClient:
    """The client of one upstream (`url`, default the first of `settings`), with the OpenAI-compatible
    error policy; its requests carry trace context (a span each with `tracer_provider`), and are retried
    as `retry` says (None: never), each attempt counted on the call being served (`count_attempts`)."""
    base_url = url or settings.url
    transport = transport_settings(settings, tls, url=base_url)
    http = HttpSettings(
        base_url=base_url,
        transport=transport,
        max_body_bytes=settings.max_event_bytes,
        max_event_bytes=settings.max_event_bytes,
        retry=NO_RETRIES if retry is None else retry_policy(retry),
    )
    traced = TracedTransport(build_transport(transport), tracer_provider)
    on_attempt = note_upstream_attempt if count_attempts else None
    return HttpClient(http, errors=OPENAI_COMPATIBLE, transport=traced, on_attempt=on_attempt)


def upstream(settings: ServeSettings, *, tracer_provider: AnyTracerProvider | None = None) -> Upstream:
    """What the services call: one upstream's client as it always was (no failover machinery on the
    path), or, with several `--upstream-url`s or hedging, a pool of clients without retries of their own
    (the pool applies the retry policy across them: bridge.http.failover)."""
    failover = settings.failover
    if len(settings.upstream.urls) == 1 and failover.hedge_after == 0:
        return upstream_client(
            settings.upstream, settings.upstream_tls, retry=settings.retry, tracer_provider=tracer_provider
        )
    clients = [
        upstream_client(
            settings.upstream,
            settings.upstream_tls,
            tracer_provider=tracer_provider,
            url=url,
            count_attempts=False,
        )
        for url in settings.upstream.urls
    ]
    return UpstreamPool(
        clients,
        retry=retry_policy(settings.retry),
        breaker=BreakerPolicy(failures=failover.breaker_failures, cooldown=failover.breaker_cooldown),
        hedge=HedgePolicy(after=failover.hedge_after / 1000, max_ratio=failover.hedge_max_ratio),
        on_attempt=note_upstream_attempt,
        on_upstream=note_upstream,
    )


def transport_settings(
    settings: UpstreamSettings, tls: UpstreamTlsSettings | None = None, *, url: str | None = None
) -> TransportSettings:
    """The connection-level settings of the upstream transport (to `url`, default the first)."""
    tls = tls or UpstreamTlsSettings()
    return TransportSettings(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_connections=settings.max_connections,
        name=settings.transport,
        ca_file=tls.ca_file,
        client_cert=(tls.client_cert, tls.client_key) if tls.client_cert and tls.client_key else None,
        proxy=proxy_for(url or settings.url) if tls.trust_env else None,
    )


async def check_reachability(settings: ServeSettings) -> None:
    """Resolves and connects to each upstream once, as the transport would (its TLS settings, its proxy),
    and logs the outcome in one line each (bridge.http.reachability); never raises."""
    for url in settings.upstream.urls:
        transport = transport_settings(settings.upstream, settings.upstream_tls, url=url)
        try:
            # certifi's bundle is read from disk: off the event loop
            tls = await asyncio.to_thread(tls_context, transport)
        except OSError:  # the transport refused the same files at start already
            return
        found = await check_upstream(
            url, tls=tls, proxy=transport.proxy, connect_timeout=transport.connect_timeout
        )
        log_reachability(found, others=len(settings.upstream.urls) > 1)


def server_config(settings: ServeSettings) -> ServerConfig:
    """What the RPC layer needs of the settings to build the server."""
    limits = settings.limits
    return ServerConfig(
        listen=settings.server.listen,
        shutdown_grace=settings.server.shutdown_grace,
        max_receive_message_bytes=limits.max_receive_message_bytes,
        max_send_message_bytes=limits.max_send_message_bytes,
        max_connection_age=limits.max_connection_age,
        max_connection_age_grace=limits.max_connection_age_grace,
        health_listen=settings.lifecycle.health_listen,
    )


def retry_policy(settings: RetrySettings) -> RetryPolicy:
    return RetryPolicy(
        retries=settings.retries,
        backoff=settings.backoff,
        max_backoff=settings.max_backoff,
        streams=settings.streams,
    )


def auth_policy(settings: AuthSettings, callers: CallersSettings | None = None) -> AuthPolicy:
    """How the bridge authenticates upstream, and for whom it uses its key (`callers`; None: the
    defaults, authenticated callers only)."""
    callers = callers or CallersSettings()
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return AuthPolicy(
        mode=settings.mode,
        api_key=api_key,
        api_key_header=settings.api_key_header,
        key_for=callers.api_key_for,
        identity_header=callers.identity_header,
    )


def caller_authorization(settings: ServeSettings) -> CallerAuthorization:
    """Who may call, and use the key: the allow-list of client certificate identities under mTLS."""
    return CallerAuthorization(
        auth_policy(settings.auth, settings.callers),
        mtls=settings.tls.client_ca is not None,
        allow=AllowList(settings.callers.client_allow),
    )


def header_policy(settings: ServeSettings) -> HeaderPolicy:
    """What crosses between metadata and upstream headers: auth, and the reply headers returned (none
    with `--reply-metadata false`)."""
    auth = auth_policy(settings.auth, settings.callers)
    if not settings.headers.reply_metadata:
        return HeaderPolicy(auth=auth, returned=())
    extra = tuple(name for name in settings.headers.response_headers if name not in RETURNED_HEADERS)
    return HeaderPolicy(auth=auth, returned=RETURNED_HEADERS + extra)


def listener_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """TLS (mTLS with a client CA) credentials that follow the certificate files; None for plaintext.
    Raises OSError if the files cannot be used."""
    if settings.cert is None or settings.key is None:
        return None
    return server_credentials(CertificateFiles(settings.cert, settings.key, settings.client_ca))


def default_services(settings: ServeSettings, upstream: Upstream) -> list[Service]:
    headers = header_policy(settings)
    return [
        ChatCompletionService(upstream, headers),
        ModelService(upstream, headers),
        EmbeddingService(upstream, headers),
    ]


def default_interceptors(
    settings: ServeSettings,
    *,
    metrics_registry: CollectorRegistry | None = None,
    tracer_provider: AnyTracerProvider | None = None,
    load: LoadMeter | None = None,
) -> list[Interceptor]:
    """Outermost first: metrics into `metrics_registry` (if given; every call, refused ones included),
    tracing (spans with `tracer_provider`, else trace context passed on), the access log, the load
    reports on `load` (if given), then the concurrency limit, so a refused call is still counted, traced,
    logged and reported."""
    interceptors: list[Interceptor] = []
    if metrics_registry is not None:
        interceptors.append(Metrics(metrics_registry, max_models=settings.metrics.max_models))
    interceptors += [Tracing(tracer_provider), AccessLog()]
    if load is not None:
        interceptors.append(LoadReports(load))
    if settings.limits.max_concurrent_rpcs is not None:
        interceptors.append(ConcurrencyLimit(settings.limits.max_concurrent_rpcs))
    return interceptors


def _default_upstream(
    settings: ServeSettings, tracer_provider: AnyTracerProvider | None, registry: CollectorRegistry | None
) -> Upstream:
    built = upstream(settings, tracer_provider=tracer_provider)
    if isinstance(built, UpstreamPool) and registry is not None:
        registry.register(PoolCollector(built))
    return built


def load_options(settings: ServeSettings) -> LoadOptions:
    """What the load reports measure against: `--orca-window`; the pod's capacity, --max-concurrent-rpcs
    per worker; its CPU, one core per worker at most (a Python process runs on one), within its quota."""
    workers = settings.lifecycle.workers
    return LoadOptions(
        window=settings.orca.window,
        capacity=settings.limits.max_concurrent_rpcs,
        cores=min(float(workers), available_cores()),
    )


def load_board(settings: ServeSettings) -> LoadBoard | None:
    """The pod's load counters for `--workers N` (shared: made before the fork), or None without ORCA."""
    if not settings.orca.enabled:
        return None
    workers = settings.lifecycle.workers
    return LoadBoard(workers, shared=workers > 1)


def load_meter(settings: ServeSettings, board: LoadBoard | None = None, row: int = 0) -> LoadMeter | None:
    """This process's meter of the pod's load (row `row` of `board`; a board of its own if None), or None
    with `--orca false`."""
    if not settings.orca.enabled:
        return None
    return LoadMeter(load_options(settings), board or load_board(settings), row)


async def build_bridge(
    settings: ServeSettings,
    *,
    upstream: Upstream | None = None,
    services: Sequence[Service] | None = None,
    interceptors: Sequence[Interceptor] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    metrics_registry: CollectorRegistry | None = None,
    tracer_provider: AnyTracerProvider | None = None,
    reuse_port: bool = False,
    load: LoadMeter | None = None,
) -> GrpcServer:
    """The bridge, built but not started (`await server.start()`); None means the default part for
    `settings` (credentials: from the --tls-* files, if any). With `--metrics-listen` the metrics endpoint
    is already serving `metrics_registry` (a new registry if None). `reuse_port`: one of several worker
    processes on the same port. Who may call (`caller_authorization`) is always part of it, whatever
    `interceptors` are given. With ORCA on (`--orca`), `load` is this process's meter of the pod's load
    (a worker's row of the pod's board; None: a meter of its own), reported in every call's trailer and
    by OpenRcaService. Raises OSError if an address cannot be bound or a TLS file used."""
    credentials = credentials or listener_credentials(settings.tls)
    listen = settings.metrics.listen
    registry = metrics_registry if metrics_registry is not None or listen is None else CollectorRegistry()
    endpoint = None
    if listen is not None and registry is not None:
        endpoint = await serve_metrics(listen, exposed(registry), reuse_port=reuse_port)
    client = upstream or _default_upstream(settings, tracer_provider, registry)
    load = load or load_meter(settings)
    orca = None if load is None else OrcaService(load, min_interval=settings.orca.min_interval)
    try:
        server = build_server(
            server_config(settings),
            services=[
                *(default_services(settings, client) if services is None else services),
                *([] if orca is None else [orca]),
            ],
            interceptors=default_interceptors(
                settings, metrics_registry=registry, tracer_provider=tracer_provider, load=load
            )
            if interceptors is None
            else interceptors,
            callers=caller_authorization(settings),
            credentials=credentials,
            reuse_port=reuse_port,
        )
    except BaseException:
        if upstream is None:
            await client.aclose()
        if endpoint is not None:
            await endpoint.close()
        raise
    server.on_stop.append(client.aclose)
    if orca is not None and load is not None:
        server.on_stopping.append(orca.close)
        server.on_stop.append(load.stop)
    if endpoint is not None:
        log.info("metrics at %s", endpoint.url)
        server.on_stop.append(endpoint.close)
    return server


async def serve(
    settings: ServeSettings,
    *,
    reuse_port: bool = False,
    on_ready: Callable[[], object] | None = None,
    check_upstream: bool = True,
    load: LoadMeter | None = None,
) -> None:
    """Runs the bridge until SIGTERM or SIGINT, then drains and shuts down gracefully. `on_ready` is
    called once it serves (a worker tells its supervisor). With `check_upstream`, the upstream's
    reachability is checked once in the background (one log line; it never stops the bridge). `load`: a
    worker's meter of the pod's load (bridge.workers), else one of its own. Tracing is
    configured by the standard OTEL_* variables (bridge.rpc.tracing); raises TracingConfigError if they
    name no exporter."""
    async with StopSignals() as signals:  # before anything says "listening": a signal then stops it cleanly
        tracer_provider = tracer_provider_from_env()
        server = await build_bridge(
            settings, tracer_provider=tracer_provider, reuse_port=reuse_port, load=load
        )
        if tracer_provider is not None:
            server.on_stop.append(lambda: _flush_spans(tracer_provider))
            log.info("tracing on: spans exported as OTEL_* variables configure")
        await server.start()
        _log_listening(settings, server)
        checking = asyncio.create_task(check_reachability(settings)) if check_upstream else None
        if on_ready is not None:
            on_ready()
        try:
            await signals.wait()
        finally:
            if checking is not None:
                checking.cancel()
        await drain(server, settings.lifecycle.drain_delay, signals)
    log.info("shutting down (grace %.0f s)", settings.server.shutdown_grace)
    await server.stop()


async def _flush_spans(provider: TracerProvider) -> None:
    await asyncio.to_thread(provider.shutdown)  # exports what is buffered; may wait on the collector


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
    if tls.client_ca is not None:
        allowed = len(settings.callers.client_allow)
        security += f" allowing {allowed} identities" if allowed else " allowing every certificate of its CA"
    health = "" if server.health_port is None else f", health (plaintext) on port {server.health_port}"
    log.info(
        "bridge listening on %s:%d (%s%s), upstream %s (/chat/completions, /models, /embeddings), %s",
        host,
        server.port,
        security,
        health,
        ", ".join(settings.upstream.urls),
        _key_use(settings),
    )


def _key_use(settings: ServeSettings) -> str:
    """Who the bridge's own key is for, in the words of the listening line."""
    auth = settings.auth
    if auth.mode == "none":
        return "no credentials upstream"
    if auth.api_key is None:
        return "no key of its own (callers' credentials forwarded)"
    whom = "anyone" if settings.callers.api_key_for == "anyone" else "authenticated callers"
    return f"its own key for {whom}"


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
