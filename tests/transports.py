"""The upstream transports for tests of `HttpClient`: the in-memory mock, and each real transport in front of
a loopback HTTP server that answers with the same handler function (a `MockRequest` in, a `MockResponse`
out), so one test body runs on all of them."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Final

from aiohttp import web

from bridge.http.transports import build_transport
from bridge.http.transports.base import TRANSPORT_NAMES, Transport, TransportSettings
from bridge.http.transports.mock import Handler, Headers, MockRequest, MockResponse, MockTransport

MOCK: Final = "mock"
KINDS: Final = (MOCK, *TRANSPORT_NAMES)  # every transport a client test runs on
REAL_KINDS: Final = TRANSPORT_NAMES  # those with a network under them (timeouts, sockets)
MOCK_BASE_URL: Final = "http://gw.test/v1"


@asynccontextmanager
async def transport_for(
    kind: str, handler: Handler, settings: TransportSettings | None = None
) -> AsyncIterator[tuple[Transport, str]]:
    """(a transport of `kind`, the base URL at which `handler` answers it)."""
    if kind == MOCK:
        yield MockTransport(handler), MOCK_BASE_URL
        return
    # Handlers are cancelled when the client leaves (a silent one would otherwise hold the cleanup).
    server = web.Server(_serving(handler), handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transport = build_transport(replace(settings or TransportSettings(), name=kind))  # type: ignore[arg-type]
    try:
        yield transport, f"http://127.0.0.1:{port}/v1"
    finally:
        await transport.aclose()
        await runner.cleanup()


def _serving(handler: Handler) -> Callable[[web.BaseRequest], object]:
    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        content = await request.read()
        url = f"http://{request.host}{request.raw_path}"
        answer = handler(MockRequest(request.method, url, Headers(dict(request.headers)), content))
        response: MockResponse = await answer if inspect.isawaitable(answer) else answer
        reply = web.StreamResponse(status=response.status, headers=dict(response.headers))
        body = response.body
        if isinstance(body, bytes) and response.error is None:
            reply.content_length = len(body)
        await reply.prepare(request)
        async for piece in _pieces(body):
            await reply.write(piece)
        if response.error is not None:
            assert request.transport is not None
            request.transport.close()  # the body cut short, as a dropped connection leaves it
            return reply
        await reply.write_eof()
        return reply

    return serve


async def _pieces(body: bytes | Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, AsyncIterable):
        async for piece in body:
            yield piece
    else:
        for piece in [body] if isinstance(body, bytes) else body:
            yield piece
