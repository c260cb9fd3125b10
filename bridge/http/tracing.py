"""Trace context for upstream requests: a CLIENT span per request, its context sent in the headers.

`TracedTransport` wraps any `Transport`. With a tracer provider each request gets a span, a child of the
current context (the call's SERVER span, bridge.rpc.tracing), ended when the reply is closed, i.e. after
the last byte of a stream; its context goes upstream through the global propagator (`traceparent`,
`tracestate`, `baggage`), so the upstream's own spans join the trace. Without one (tracing off) the
current context is injected as it is: the caller's `traceparent` reaches the upstream unchanged.
Trace headers are only ever written by the propagator, never copied from the caller's metadata.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from bridge import __version__
from bridge.errors import BridgeError
from bridge.http.transports.base import Response, Transport

__all__ = ["TracedTransport"]


class TracedTransport:
    """`inner` with trace context in every request, and a span per request when tracing is on."""

    def __init__(self, inner: Transport, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._inner = inner
        self._tracer = tracer_provider.get_tracer("bridge.http", __version__) if tracer_provider else None
        self.caught = inner.caught

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> Response:
        carrier = dict(headers)
        if self._tracer is None:
            propagate.inject(carrier)
            return await self._inner.send(method, url, carrier, content)
        span = self._tracer.start_span(
            method, kind=SpanKind.CLIENT, attributes=_request_attributes(method, url)
        )
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        try:
            response = await self._inner.send(method, url, carrier, content)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
            span.end()
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 400:
            span.set_attribute("error.type", str(response.status))
            span.set_status(Status(StatusCode.ERROR))
        return _TracedResponse(response, span)

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        return self._inner.error_for(exc, address=address, correlation_id=correlation_id)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TracedResponse:
    """A reply whose span ends when it is closed (a stream: once read to its end, failed or cancelled)."""

    __slots__ = ("_response", "_span")

    def __init__(self, response: Response, span: trace.Span) -> None:
        self._response = response
        self._span = span

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.chunks()

    async def read(self) -> bytes:
        return await self._response.read()

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            self._span.end()


def _request_attributes(method: str, url: str) -> dict[str, str | int]:
    # The base URL carries no credentials (bridge.settings checks); a query may carry caller input: dropped.
    parts = urlsplit(url)
    full = parts._replace(query="", fragment="").geturl()
    attributes: dict[str, str | int] = {"http.request.method": method, "url.full": full}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    if port:
        attributes["server.port"] = port
    return attributes
