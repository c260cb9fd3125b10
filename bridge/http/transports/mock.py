"""An in-memory transport for unit tests: a handler function in, replies out (httpx's MockTransport).

    def handler(request: MockRequest) -> MockResponse:
        return MockResponse.json({"id": "x"}, headers={"x-request-id": "r-1"})

    client = HttpClient(settings, errors=..., transport=MockTransport(handler))

A handler may be async, may raise (an OSError stands for a network failure: `ConnectionRefusedError` before
any reply, and it maps as the real transports map the OS's errors), and may return a reply whose body
arrives in pieces and then fails (`MockResponse(body=[...], error=ConnectionResetError())`). The
transport counts the replies it handed out and not yet closed (`open_replies`), so a test can check that
every reply is closed whatever happened to it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge import jsoncodec
from bridge.errors import BridgeError
from bridge.http.transports.base import OS_EXCEPTIONS, USER_AGENT, error_for_exception, next_piece

__all__ = ["Headers", "MockRequest", "MockResponse", "MockTransport"]


class Headers(Mapping[str, str]):
    """Header names looked up in any case; iterated lower-cased."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {name.lower(): value for name, value in (items or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class MockRequest:
    """A request as the transport was asked to send it."""

    method: str
    url: str  # with its query
    headers: Headers
    content: bytes

    def json(self) -> Any:
        return jsoncodec.loads(self.content)


@dataclass(frozen=True, slots=True)
class MockResponse:
    """A reply: its status and headers, its body (bytes, or the pieces it arrives in, which an async
    iterable hands out when it likes), and the error its connection fails with once the body's pieces have
    arrived (None: the body ends normally)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] | AsyncIterable[bytes] = b""
    error: BaseException | None = None

    @classmethod
    def json(cls, document: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> MockResponse:
        return cls(status, {"content-type": "application/json", **(headers or {})}, jsoncodec.dumps(document))

    @classmethod
    def events(cls, *data: str, status: int = 200, headers: Mapping[str, str] | None = None) -> MockResponse:
        """An event stream: one `data:` event per argument, each its own piece of the body."""
        pieces = [f"data: {item}\n\n".encode() for item in data]
        return cls(status, {"content-type": "text/event-stream", **(headers or {})}, pieces)


Handler = Callable[[MockRequest], MockResponse | Awaitable[MockResponse]]


class _MockReply:
    __slots__ = ("_body", "_open", "_response", "_transport", "headers", "status")

    def __init__(self, response: MockResponse, transport: MockTransport) -> None:
        self._response = response
        self._transport = transport
        self._open = True
        self.status = response.status
        self.headers = Headers(response.headers)
        self._body: AsyncIterator[bytes] | None = None  # for `read`

    async def chunks(self) -> AsyncIterator[bytes]:
        body = self._response.body
        if isinstance(body, AsyncIterable):
            async for piece in body:
                yield piece
        else:
            for piece in [body] if isinstance(body, bytes) else body:
                if piece:
                    yield piece
        if self._response.error is not None:
            raise self._response.error

    async def read(self) -> bytes:
        if self._body is None:
            self._body = self.chunks()
        return await next_piece(self._body)

    async def aclose(self) -> None:
        if self._open:  # closing twice counts once
            self._open = False
            self._transport.open_replies -= 1


class MockTransport:
    """A `Transport` whose replies come from `handler`; bare OS errors map as on the real transports."""

    caught: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.open_replies = 0
        self.closed = False

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> _MockReply:
        request = MockRequest(method, url, Headers({"user-agent": USER_AGENT, **headers}), content or b"")
        response = self._handler(request)
        if inspect.isawaitable(response):
            response = await response
        self.open_replies += 1
        return _MockReply(response, self)

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        return error_for_exception(exc, OS_EXCEPTIONS, address=address, correlation_id=correlation_id)

    async def aclose(self) -> None:
        self.closed = True
