"""OpenTelemetry tracing: one SERVER span per call, continuing the caller's trace (`traceparent`).

`Tracing` extracts the caller's context from the call's metadata with the global propagator (W3C trace
context and baggage unless `OTEL_PROPAGATORS` says otherwise) and makes it current for the whole call, so
the upstream request's span (bridge.http.tracing) is its child and carries the trace upstream. With a
tracer provider it records a span named `package.Service/Method` with the RPC semantic-convention
attributes, the model and token usage, and the final status; without one (tracing off) it only passes the
caller's context on, so the upstream still sees the caller's `traceparent`.

`tracer_provider_from_env` is the standard configuration: tracing is off unless `OTEL_TRACES_EXPORTER`
names an exporter (or an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set, meaning OTLP), and `OTEL_SDK_DISABLED`
is not true. Exporters are found by name as the SDK's own auto-configuration finds them: `otlp` is
OTLP/gRPC (shipped with the bridge) unless `OTEL_EXPORTER_OTLP_PROTOCOL` says http/protobuf, `console`
prints spans. Sampler, resource, batching and exporter settings come from their own `OTEL_*` variables.

OpenTelemetry's grpc.aio server interceptor is not used: it iterates every streaming handler as an async
generator, which fails every stream behind the chain, and misses statuses set by `abort_with_status`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Final

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from bridge import __version__
from bridge.rpc.call import PLUMBING_SERVICES, Context, RpcCall
from bridge.rpc.interceptors import Interceptor

__all__ = ["Tracing", "TracingConfigError", "tracer_provider_from_env"]

DEFAULT_SERVICE_NAME: Final = "prisme-bridge"
# Server-side codes that are the server's failure, not the caller's (OpenTelemetry RPC conventions).
_SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_EXPORTERS_GROUP: Final = "opentelemetry_traces_exporter"


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for an exporter that is not installed."""


class Tracing(Interceptor):
    """A SERVER span per call with `tracer_provider`; without one, the caller's context passed on only."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        skip_services: Collection[str] = PLUMBING_SERVICES,
    ) -> None:
        self._tracer = tracer_provider.get_tracer("bridge", __version__) if tracer_provider else None
        self.skip_services = frozenset(skip_services)
        self._fields = frozenset(propagate.get_global_textmap().fields)

    @contextlib.asynccontextmanager
    async def around(self, call: RpcCall, context: Context) -> AsyncIterator[None]:
        carrier = _carrier(context.invocation_metadata() or (), self._fields)
        parent = propagate.extract(carrier) if carrier else None
        if self._tracer is None:
            async with _attached(parent, call):
                yield
            return
        with self._tracer.start_as_current_span(
            f"{call.service}/{call.name}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=_start_attributes(call),
            record_exception=False,  # the status says what happened; tracebacks would quote upstream text
            set_status_on_exception=False,
        ) as span:
            call.trace_id = _trace_id(span)
            try:
                yield
            finally:
                _finish(span, call)


def _carrier(metadata: Iterable[tuple[str, str | bytes]], fields: frozenset[str]) -> dict[str, str]:
    """The propagator's fields among the call's text metadata (nothing else: metadata holds credentials)."""
    found: dict[str, str] = {}
    for key, value in metadata:
        if key in fields and isinstance(value, str):
            found.setdefault(key, value)
    return found


@contextlib.asynccontextmanager
async def _attached(parent: otel_context.Context | None, call: RpcCall) -> AsyncIterator[None]:
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    call.trace_id = _trace_id(trace.get_current_span())
    try:
        yield
    finally:
        otel_context.detach(token)


def _trace_id(span: trace.Span) -> str | None:
    span_context = span.get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def _start_attributes(call: RpcCall) -> dict[str, str]:
    attributes = {"rpc.system": "grpc", "rpc.service": call.service, "rpc.method": call.name}
    if call.model:
        attributes["gen_ai.request.model"] = call.model
    return attributes


def _finish(span: trace.Span, call: RpcCall) -> None:
    span.set_attribute("rpc.grpc.status_code", call.code.value[0])
    span.set_attribute("enduser.id", call.caller.identity)  # known once bridge.rpc.callers ran
    for name, value in (
        ("http.response.status_code", call.upstream_status),
        ("gen_ai.usage.input_tokens", call.prompt_tokens),
        ("gen_ai.usage.output_tokens", call.completion_tokens),
    ):
        if value is not None:
            span.set_attribute(name, value)
    if call.response_streaming:
        span.set_attribute("rpc.grpc.messages_sent", call.messages_sent)
    if call.code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, call.code.name))


# ------------------------------------------------------------------------------------- configuration


def tracer_provider_from_env(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """An SDK tracer provider exporting where the standard OTEL_* variables say, or None (tracing off).

    Raises TracingConfigError for an exporter name no installed package provides.
    """
    environ = os.environ if environ is None else environ
    names = _exporter_names(environ)
    if not names:
        return None
    exporters = [_exporter(_entry_point_name(name, environ)) for name in names]
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))  # + OTEL_RESOURCE_ATTRIBUTES, sampler
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    otlp_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not names and otlp_endpoint:
        names = ["otlp"]
    return [name for name in names if name != "none"]


def _entry_point_name(name: str, environ: Mapping[str, str]) -> str:
    """`otlp` is OTLP over the protocol OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL names (default grpc, the
    exporter shipped with the bridge), as the SDK's own auto-configuration resolves it."""
    if name != "otlp":
        return name
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    return {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}.get(
        protocol or "grpc", f"otlp ({protocol})"
    )


def _exporter(name: str) -> SpanExporter:
    found = entry_points(group=_EXPORTERS_GROUP, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=_EXPORTERS_GROUP))
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: no exporter named {name!r} is installed (installed: {', '.join(known)})"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter
