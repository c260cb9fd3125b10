"""Prometheus metrics of the calls served, and the endpoint that serves them (`--metrics-listen`).

gRPC server metrics carry go-grpc-prometheus' names and labels, so existing dashboards and alerts work:
`grpc_server_started_total`, `grpc_server_handled_total` (with `grpc_code` spelled as grpc-go spells it:
OK, Canceled, InvalidArgument, ...), `grpc_server_handling_seconds`, `grpc_server_msg_received_total` and
`grpc_server_msg_sent_total`, the last counted live through the chain's hook: the first message of a
call at once, then in steps of 64 (the rest when the call ends).

The bridge's own, named `prisme_bridge_*`, come from what services report on the call (bridge.rpc.call):
the upstream request's duration by HTTP status, its retries, time to first chunk and chunks per stream,
calls in flight, calls per caller, tokens and `usage.cost` per model and caller.

Label values are bounded: methods are the server's own, codes and HTTP statuses are fixed sets, and model
names, which callers choose, go through `ModelLabels`: a model becomes a label value only once the upstream
answered a call for it with a 2xx, up to `max_models` of them; every other call counts as model "other".
Caller identities (bridge.rpc.callers) are certificate SANs that passed the allow-list: the first
`MAX_CALLERS` become label values, later ones count as caller "other"; callers without a certificate are
"anonymous". No label carries metadata, credentials or content.

`Metrics` records into the `CollectorRegistry` it is given, never into prometheus-client's global one, so
a process may hold several (tests), and a multi-process setup can hand it its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from bridge.address import split_host_port
from bridge.auth.callers import ANONYMOUS
from bridge.rpc.call import Context, RpcCall
from bridge.rpc.interceptors import Interceptor

__all__ = [
    "GO_CODE_NAMES",
    "MAX_CALLERS",
    "OTHER_MODEL",
    "Metrics",
    "MetricsEndpoint",
    "ModelLabels",
    "exposed",
    "serve_metrics",
]

OTHER_MODEL: Final = "other"
MAX_CALLERS: Final = 100  # caller label values kept; an allow-list names far fewer
# grpc-go's codes.Code.String(), which go-grpc-prometheus puts in grpc_code.
GO_CODE_NAMES: Final = {
    code: {"OK": "OK", "CANCELLED": "Canceled"}.get(
        code.name, "".join(part.capitalize() for part in code.name.split("_"))
    )
    for code in grpc.StatusCode
}
_RPC_LABELS: Final = ("grpc_type", "grpc_service", "grpc_method")
_IN_FLIGHT: Final = "prisme_bridge_rpcs_in_flight"
_HELP: Final = {
    # go-grpc-prometheus' own help texts
    "grpc_server_started_total": "Total number of RPCs started on the server.",
    "grpc_server_handled_total": "Total number of RPCs completed on the server, regardless of success or "
    "failure.",
    "grpc_server_handling_seconds": "Histogram of response latency (seconds) of gRPC that had been "
    "application-level handled by the server.",
    "grpc_server_msg_received_total": "Total number of RPC stream messages received on the server.",
    "grpc_server_msg_sent_total": "Total number of gRPC stream messages sent by the server.",
    _IN_FLIGHT: "Calls being served now (a stream until its last message).",
    "prisme_bridge_upstream_request_duration_seconds": "Upstream HTTP requests, until their reply was read "
    'to its end, by HTTP status ("none": no reply).',
    "prisme_bridge_upstream_retries_total": "Upstream requests sent again after a failure the upstream "
    "cannot have answered (attempts after each call's first).",
    "prisme_bridge_upstream_headers_dropped_total": "Upstream reply headers not returned as metadata: "
    "their value was not printable ASCII, or too long.",
    "prisme_bridge_time_to_first_chunk_seconds": "Streams: from the call's start to its first message sent.",
    "prisme_bridge_stream_chunks": "Streams: messages sent per stream that reached the upstream.",
    "prisme_bridge_overhead_seconds": "The bridge's own time per call that reached the upstream: its "
    "time in the bridge minus its time waiting on the upstream (streams: docs/observability.md).",
    "prisme_bridge_caller_calls_total": "Calls completed, by caller (its allowed client certificate "
    'identity, or "anonymous") and code.',
    "prisme_bridge_llm_tokens_total": "Tokens the upstream reported in usage, by model, type (prompt, "
    "completion) and caller.",
    "prisme_bridge_llm_cost_total": "usage.cost the upstream reported, by model and caller, in the "
    "upstream's unit.",
}
_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FIRST_CHUNK_SECONDS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
_OVERHEAD_SECONDS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_CHUNKS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def _grpc_type(call: RpcCall) -> str:
    if call.request_streaming:
        return "bidi_stream" if call.response_streaming else "client_stream"
    return "server_stream" if call.response_streaming else "unary"


class ModelLabels:
    """Bounded label values for model names, which callers choose: a model is admitted once the upstream
    answered it with a 2xx, up to `max_models`; anything else is `OTHER_MODEL` ("other"). Caller
    identities are bounded the same way (admitted once they passed the allow-list)."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self._known: set[str] = set()

    def label(self, model: str, *, admit: bool) -> str:
        if model in self._known:
            return model
        if admit and model and len(self._known) < self.max_models:
            self._known.add(model)
            return model
        return OTHER_MODEL


@dataclass(slots=True)
class _MethodSeries:
    """The label children of one method, bound once: `.labels()` costs more than the increment."""

    labels: tuple[str, str, str]
    started: Any
    received: Any
    sent: Any
    handling: Any
    in_flight: Any
    handled: dict[grpc.StatusCode, Any] = field(default_factory=dict)


class Metrics(Interceptor):
    """Records every call (health and reflection included, as go-grpc-prometheus does) into `registry`."""

    def __init__(self, registry: CollectorRegistry, *, max_models: int = 100) -> None:
        self.models = ModelLabels(max_models)
        self.callers = ModelLabels(MAX_CALLERS)
        self._series: dict[str, _MethodSeries] = {}
        self._children: dict[tuple[object, ...], Any] = {}

        def counter(name: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, _HELP[name], labels, registry=registry)

        def histogram(name: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, _HELP[name], labels, buckets=buckets, registry=registry)

        by_model = ("grpc_service", "grpc_method", "model")
        self._started = counter("grpc_server_started_total", _RPC_LABELS)
        self._handled = counter("grpc_server_handled_total", (*_RPC_LABELS, "grpc_code"))
        self._handling = histogram("grpc_server_handling_seconds", _RPC_LABELS, _SECONDS)
        self._received = counter("grpc_server_msg_received_total", _RPC_LABELS)
        self._sent = counter("grpc_server_msg_sent_total", _RPC_LABELS)
        # livesum: summed over live processes in prometheus-client's multiprocess mode
        self._in_flight = Gauge(
            _IN_FLIGHT, _HELP[_IN_FLIGHT], _RPC_LABELS[1:], registry=registry, multiprocess_mode="livesum"
        )
        upstream_labels = ("grpc_service", "grpc_method", "status")
        self._upstream = histogram(
            "prisme_bridge_upstream_request_duration_seconds", upstream_labels, _SECONDS
        )
        self._retries = counter("prisme_bridge_upstream_retries_total", _RPC_LABELS[1:])
        self._dropped = counter("prisme_bridge_upstream_headers_dropped_total", _RPC_LABELS[1:])
        self._first_chunk = histogram(
            "prisme_bridge_time_to_first_chunk_seconds", by_model, _FIRST_CHUNK_SECONDS
        )
        self._chunks = histogram("prisme_bridge_stream_chunks", by_model, _CHUNKS)
        self._overhead = histogram("prisme_bridge_overhead_seconds", ("grpc_method",), _OVERHEAD_SECONDS)
        self._by_caller = counter(
            "prisme_bridge_caller_calls_total", ("grpc_service", "grpc_method", "grpc_code", "caller")
        )
        self._tokens = counter("prisme_bridge_llm_tokens_total", ("model", "type", "caller"))
        self._cost = counter("prisme_bridge_llm_cost_total", ("model", "caller"))

    def call_started(self, call: RpcCall, context: Context) -> object:
        series = self._series_of(call)
        series.started.inc()
        series.in_flight.inc()
        return series

    def call_ended(self, call: RpcCall, started: object) -> None:
        series: _MethodSeries = started  # type: ignore[assignment]  # what call_started returned
        series.in_flight.dec()
        handled = series.handled.get(call.code)
        if handled is None:
            handled = series.handled[call.code] = self._handled.labels(
                *series.labels, GO_CODE_NAMES[call.code]
            )
        handled.inc()
        caller = self._caller_label(call)
        self._child(self._by_caller, call.service, call.name, GO_CODE_NAMES[call.code], caller).inc()
        series.handling.observe(call.elapsed_ms / 1000)
        unreported = _unreported_sent(call.messages_sent)
        if unreported:
            series.sent.inc(unreported)
        self._record_upstream(call, series, caller)

    def message_sent(self, call: RpcCall) -> None:
        sent = call.messages_sent
        if sent % _SENT_BATCH == 1:  # the 1st message, then the 64 up to the 65th, the 129th...
            self._series[call.method].sent.inc(1 if sent == 1 else _SENT_BATCH)
        if sent == 1 and call.response_streaming and call.upstream_status is not None:
            model = self.models.label(call.model, admit=_answered(call))
            self._child(self._first_chunk, call.service, call.name, model).observe(call.elapsed_ms / 1000)

    def message_received(self, call: RpcCall) -> None:
        self._series[call.method].received.inc()

    def _series_of(self, call: RpcCall) -> _MethodSeries:
        series = self._series.get(call.method)
        if series is None:
            labels = (_grpc_type(call), call.service, call.name)
            series = self._series[call.method] = _MethodSeries(
                labels,
                started=self._started.labels(*labels),
                received=self._received.labels(*labels),
                sent=self._sent.labels(*labels),
                handling=self._handling.labels(*labels),
                in_flight=self._in_flight.labels(call.service, call.name),
            )
        return series

    def _caller_label(self, call: RpcCall) -> str:
        caller = call.caller
        return self.callers.label(caller.identity, admit=True) if caller.authenticated else ANONYMOUS

    def _record_upstream(self, call: RpcCall, series: _MethodSeries, caller: str) -> None:
        if call.upstream_seconds is None:
            return  # no upstream request was made (refused, invalid, not an upstream-calling method)
        status = _status_label(call.upstream_status)
        self._child(self._upstream, call.service, call.name, status).observe(call.upstream_seconds)
        overhead = call.overhead_seconds
        if overhead is not None:
            self._child(self._overhead, call.name).observe(overhead)
        if call.upstream_attempts > 1:
            self._child(self._retries, call.service, call.name).inc(call.upstream_attempts - 1)
        if call.headers_dropped:
            self._child(self._dropped, call.service, call.name).inc(call.headers_dropped)
        if not (call.response_streaming or call.prompt_tokens or call.completion_tokens or call.cost):
            return  # nothing per model: a lookup (GetModel) takes no model label
        model = self.models.label(call.model, admit=_answered(call))
        if call.response_streaming:
            self._child(self._chunks, call.service, call.name, model).observe(call.messages_sent)
        if call.prompt_tokens:
            self._child(self._tokens, model, "prompt", caller).inc(call.prompt_tokens)
        if call.completion_tokens:
            self._child(self._tokens, model, "completion", caller).inc(call.completion_tokens)
        if call.cost:
            self._child(self._cost, model, caller).inc(call.cost)

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """`metric.labels(*labels)`, bound once: label sets are bounded, so is this cache."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


# grpc_server_msg_sent_total is counted in steps: the first message of a call at once, then each 64
# messages as the 64th is sent, the rest when the call ends. A streamed chunk then costs no counter update
# (a lock and a float add: 3-4 % of a chunk's CPU, measured in docs/PERFORMANCE.md), and a long stream
# still shows up within 64 messages.
_SENT_BATCH: Final = 64


def _unreported_sent(sent: int) -> int:
    """Of a call's `sent` messages, those `Metrics.message_sent` has not counted yet."""
    return 0 if sent == 0 else (sent - 1) % _SENT_BATCH


def _answered(call: RpcCall) -> bool:
    return call.upstream_status is not None and 200 <= call.upstream_status < 300


def _status_label(status: int | None) -> str:
    if status is None:
        return "none"
    return str(status) if 100 <= status <= 599 else "invalid"


# ------------------------------------------------------------------------------------------- endpoint


@dataclass
class MetricsEndpoint:
    """A running HTTP server answering GET /metrics (Prometheus text, or OpenMetrics when asked)."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def close(self) -> None:
        await self.runner.cleanup()


def exposed(registry: CollectorRegistry) -> Collector:
    """What /metrics serves for `registry`: the registry itself, or, in prometheus-client's multiprocess
    mode (`--workers N`: PROMETHEUS_MULTIPROC_DIR set before import), the aggregate of every worker."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return registry
    aggregate = CollectorRegistry()
    multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
    return aggregate


async def serve_metrics(listen: str, registry: Collector, *, reuse_port: bool = False) -> MetricsEndpoint:
    """Serves `registry` at http://`listen`/metrics on this event loop (port 0 picks a free port);
    `reuse_port`: one of several worker processes sharing the port.

    Raises OSError if the address cannot be bound. Also turns off prometheus-client's `*_created` series
    for the process: they double the series count and go-grpc-prometheus has none.
    """
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    host, port = split_host_port(listen)
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app, access_log=None)  # scrapes are not calls: no line per scrape
    await runner.setup()
    try:
        site = web.TCPSite(runner, host.strip("[]"), port, reuse_port=reuse_port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from exc
    bound = runner.addresses[0][1]
    return MetricsEndpoint(runner, host.strip("[]"), bound)
