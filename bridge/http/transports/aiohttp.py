"""`--upstream-transport aiohttp` (the default): aiohttp's client, behind the `Transport` seam.

No httpx objects, header classes or cookie extraction on the way (docs/PERFORMANCE.md measures what they
cost). The session is made on the first request, inside the running event loop; it keeps no cookies (a
bridge has no use for them, and must not send one caller's cookies with another's request) and follows no
redirects. aiohttp's exceptions become bridge errors through `EXCEPTIONS`; a unit test checks that every
client error aiohttp exports has an entry of its own family.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote, urlsplit

import aiohttp
import grpc
from aiohttp.client_proto import ResponseHandler

from bridge.errors import BridgeError, Reason, UpstreamUnavailableError
from bridge.http.transports.base import (
    BUG,
    GARBLED,
    LOST,
    OS_EXCEPTIONS,
    SILENT,
    UNREACHABLE,
    USER_AGENT,
    ExceptionMap,
    Mapped,
    TransportSettings,
    error_for_exception,
    request_body,
    tls_context,
)

__all__ = ["EXCEPTIONS", "AiohttpTransport", "arrived_first"]

_TRUNCATED: Final = (UpstreamUnavailableError, grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_STREAM_TRUNCATED)
# Exception type -> what it becomes; the most specific type in the exception's MRO wins.
EXCEPTIONS: Final[ExceptionMap] = MappingProxyType(
    {
        aiohttp.ClientError: Mapped(*LOST, "upstream client error"),
        aiohttp.ClientConnectionError: Mapped(*LOST, "upstream connection error"),
        aiohttp.ClientConnectorError: Mapped(*UNREACHABLE, "could not connect to upstream"),
        aiohttp.ClientConnectorDNSError: Mapped(*UNREACHABLE, "could not resolve upstream host"),
        aiohttp.ClientSSLError: Mapped(*UNREACHABLE, "TLS error with upstream"),
        aiohttp.ClientProxyConnectionError: Mapped(*UNREACHABLE, "could not connect to proxy"),
        aiohttp.ClientHttpProxyError: Mapped(*UNREACHABLE, "proxy refused the request"),
        aiohttp.ServerDisconnectedError: Mapped(*LOST, "upstream closed the connection"),
        aiohttp.ServerTimeoutError: Mapped(*SILENT, "timed out waiting for upstream data"),
        aiohttp.SocketTimeoutError: Mapped(*SILENT, "timed out waiting for upstream data"),
        aiohttp.ConnectionTimeoutError: Mapped(*UNREACHABLE, "timed out connecting to upstream"),
        aiohttp.ClientPayloadError: Mapped(*_TRUNCATED, "upstream response body cut short"),
        aiohttp.ClientResponseError: Mapped(*GARBLED, "invalid upstream response"),
        aiohttp.InvalidURL: Mapped(*BUG, "invalid upstream URL"),
        aiohttp.NonHttpUrlClientError: Mapped(*BUG, "unsupported upstream URL scheme"),
        **OS_EXCEPTIONS,
    }
)
# What an upstream await can raise here: aiohttp's errors (its timeouts are among them) and the OS's.
_CAUGHT: Final = (aiohttp.ClientError, OSError)


async def arrived_first(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The bytes of an aiohttp reply body as they arrive, to its end; when the connection fails, the bytes
    received before the failure first, then the failure. aiohttp's reader raises a connection error as soon
    as it has one, even while bytes received before it are still in its buffer, so an upstream that sends
    its last chunks and resets the connection in the same breath would otherwise lose them."""
    while True:
        try:
            chunk = await content.readany()
        except aiohttp.ClientError:
            left = content._read_nowait(-1)  # what arrived before the failure (no public API)
            if left:
                yield left
            raise
        if not chunk:
            return
        yield chunk
        del chunk  # not held while the next read waits (an idle stream holds no old bytes)


class _AiohttpResponse:
    """An aiohttp reply; its body read with `arrived_first` (`chunks`) or a read at a time (`read`).

    The read timeout (`--upstream-read-timeout`, aiohttp's `sock_read`) on the stream path: aiohttp cancels
    its timer and makes a new one on every read of the socket (a timer handle made and closed per token of
    a paced stream). From the first `read()` on, this reply takes it over with one lazy timer: each read
    stamps its time, and the timer, when it fires, re-arms itself at the last read plus the timeout, or
    ends the reply as aiohttp's own would (its `SocketTimeoutError` on the body: the same error, mapped the
    same way) when the upstream stayed silent that long while a read waited for it. Time the reader
    spends elsewhere (writing to a slow caller) is not counted as the upstream's silence."""

    __slots__ = (
        "_clock",
        "_failure",
        "_last",
        "_read_timeout",
        "_reply",
        "_timer",
        "_waiting",
        "headers",
        "status",
    )

    def __init__(self, reply: aiohttp.ClientResponse, read_timeout: float | None) -> None:
        self._reply = reply
        self.status = reply.status
        self.headers: Mapping[str, str] = reply.headers  # case-insensitive
        self._failure: BaseException | None = None  # raised by the read after the bytes before it
        self._read_timeout = read_timeout  # set while read() has not taken the timeout over from aiohttp
        self._timer: asyncio.TimerHandle | None = None  # the lazy read timer, while the body is read
        self._waiting = False  # a read() waits for the upstream
        self._last = 0.0  # the loop's time when the last read() returned (or the first began)
        self._clock: Callable[[], float] | None = None  # the loop's time(), with the timer

    def chunks(self) -> AsyncIterator[bytes]:
        return arrived_first(self._reply.content)

    async def read(self) -> bytes:
        """`arrived_first` a read at a time, under the lazy read timer."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._read_timeout is not None:
            self._take_read_timeout(self._read_timeout)
        content = self._reply.content
        self._waiting = True
        try:
            data = await content.readany()
        except aiohttp.ClientError as exc:
            self._stop_timer()
            left = content._read_nowait(-1)  # what arrived before the failure (no public API)
            if not left:
                raise
            self._failure = exc
            return left
        self._waiting = False
        if self._timer is not None:
            if data:
                self._last = self._clock()  # type: ignore[misc]  # set with the timer
            else:
                self._stop_timer()
        return data

    async def aclose(self) -> None:
        self._stop_timer()
        # Back to the pool when the body was read to its end; otherwise aiohttp closes the connection.
        self._reply.release()

    def _take_read_timeout(self, timeout: float) -> None:
        """aiohttp's per-read timer off for this reply, the lazy one on (once, at the first read)."""
        self._read_timeout = None
        connection = self._reply.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None or not timeout:
            return  # the body has arrived whole (nothing left to time), or there is no read timeout
        # The timer aiohttp armed at the last bytes it received stays until the next bytes cancel it (it
        # times the silence before this read); aiohttp resets the setting for the connection's next request.
        protocol.read_timeout = None
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._last = loop.time()
        self._timer = loop.call_at(self._last + timeout, self._silence_check, protocol, timeout)

    def _silence_check(self, protocol: ResponseHandler, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._last + timeout if self._waiting else now + timeout
        if due > now:
            self._timer = loop.call_at(due, self._silence_check, protocol, timeout)
            return
        self._timer = None
        error = aiohttp.SocketTimeoutError("Timeout on reading data from socket")  # as aiohttp's own
        protocol.set_exception(error)  # the connection is not reused
        self._reply.content.set_exception(error)  # the waiting read raises it

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class AiohttpTransport:
    """aiohttp's ClientSession behind the `Transport` seam."""

    caught: tuple[type[BaseException], ...] = _CAUGHT

    def __init__(self, settings: TransportSettings) -> None:
        self._settings = settings
        self._tls = tls_context(settings)  # now: a file that cannot be used fails the start, not a call
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self._proxy, self._proxy_auth = _proxy(settings.proxy)
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        # Streams hold their connection for minutes: the pool is as large as the concurrency allowed, and
        # keeps every connection alive so bursts don't pay new handshakes.
        connector = aiohttp.TCPConnector(
            limit=self._settings.max_connections, limit_per_host=0, keepalive_timeout=30.0, ssl=self._tls
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"user-agent": USER_AGENT},
            trust_env=False,
        )

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> _AiohttpResponse:
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        data, headers = request_body(content, headers)
        reply = await session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
        )
        return _AiohttpResponse(reply, self._settings.read_timeout)

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        return error_for_exception(exc, EXCEPTIONS, address=address, correlation_id=correlation_id)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _proxy(proxy: str | None) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy URL without its credentials, and those credentials as Basic auth (aiohttp wants them
    apart)."""
    if proxy is None:
        return None, None
    parts = urlsplit(proxy)
    if parts.username is None:
        return proxy, None
    auth = aiohttp.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(), auth
