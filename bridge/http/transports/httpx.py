"""`--upstream-transport httpx`: httpx's client over its own httpcore, behind the `Transport` seam.

The design's named client, kept selectable and run by the same tests as the default (encode/httpx#3215:
slower than aiohttp under concurrency; docs/PERFORMANCE.md). No cookie jar (httpx would parse every reply's
headers for cookies, and one caller's cookies must never travel with another's request), no redirects
followed, nothing read from the environment. httpx's exceptions become bridge errors through `EXCEPTIONS`;
a unit test checks that every exception class httpx exports has an entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Final

import grpc
import httpx

from bridge.errors import BridgeError, Key, Reason, UpstreamHTTPError, UpstreamUnavailableError
from bridge.http.status import grpc_code_for_http_status
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
    Response,
    TransportSettings,
    error_for_exception,
    next_piece,
    request_body,
    tls_context,
)

__all__ = ["EXCEPTIONS", "HttpxTransport"]

_POOL_EXHAUSTED: Final = (
    UpstreamUnavailableError,
    grpc.StatusCode.UNAVAILABLE,
    Reason.UPSTREAM_POOL_EXHAUSTED,
)
_STATUS: Final = (UpstreamHTTPError, grpc.StatusCode.UNKNOWN, Reason.UPSTREAM_ERROR)
# Exception type -> what it becomes; the most specific type in the exception's MRO wins. Every class httpx
# exports is here (a unit test checks), though the client never lets httpx raise most of them.
EXCEPTIONS: Final[ExceptionMap] = MappingProxyType(
    {
        httpx.HTTPError: Mapped(*BUG, "upstream request failed"),
        httpx.RequestError: Mapped(*LOST, "upstream request failed"),
        httpx.TransportError: Mapped(*LOST, "upstream transport error"),
        httpx.TimeoutException: Mapped(*SILENT, "upstream timed out"),
        httpx.ConnectTimeout: Mapped(*UNREACHABLE, "timed out connecting to upstream"),
        httpx.ReadTimeout: Mapped(*SILENT, "timed out waiting for upstream data"),
        httpx.WriteTimeout: Mapped(*SILENT, "timed out sending the request upstream"),
        httpx.PoolTimeout: Mapped(*_POOL_EXHAUSTED, "no upstream connection free in the pool"),
        httpx.NetworkError: Mapped(*LOST, "upstream network error"),
        httpx.ConnectError: Mapped(*UNREACHABLE, "could not connect to upstream"),
        httpx.ReadError: Mapped(*LOST, "error reading from upstream"),
        httpx.WriteError: Mapped(*LOST, "error sending the request upstream"),
        httpx.CloseError: Mapped(*LOST, "error closing the upstream connection"),
        httpx.ProtocolError: Mapped(*LOST, "HTTP protocol error with upstream"),
        httpx.LocalProtocolError: Mapped(*BUG, "the bridge built an invalid HTTP request"),
        # Mostly "server disconnected" / "incomplete chunked read": a dropped connection.
        httpx.RemoteProtocolError: Mapped(*LOST, "upstream broke the connection"),
        httpx.ProxyError: Mapped(*UNREACHABLE, "proxy error reaching upstream"),
        httpx.UnsupportedProtocol: Mapped(*BUG, "unsupported upstream URL scheme"),
        httpx.DecodingError: Mapped(*GARBLED, "could not decode upstream response"),
        httpx.TooManyRedirects: Mapped(*GARBLED, "upstream redirected too often"),
        httpx.HTTPStatusError: Mapped(*_STATUS, "upstream returned an error"),  # error_for reads its status
        httpx.InvalidURL: Mapped(*BUG, "invalid upstream URL"),
        httpx.CookieConflict: Mapped(*BUG, "conflicting upstream cookies"),
        httpx.StreamError: Mapped(*BUG, "upstream response stream misused"),
        httpx.StreamConsumed: Mapped(*BUG, "upstream request stream already consumed"),
        httpx.StreamClosed: Mapped(*BUG, "upstream response stream already closed"),
        httpx.ResponseNotRead: Mapped(*BUG, "upstream response not read"),
        httpx.RequestNotRead: Mapped(*BUG, "upstream request not read"),
        **OS_EXCEPTIONS,
    }
)
# What an upstream await can raise here: httpx's errors and bare OS errors httpcore lets through.
_CAUGHT: Final = (httpx.HTTPError, OSError)


def error_for(exc: BaseException, *, address: str, correlation_id: str | None = None) -> BridgeError:
    """The bridge error for an exception httpx raised talking to the upstream at `address`."""
    if isinstance(exc, httpx.HTTPStatusError):
        # Never raised by the client (it reads every reply's status itself); its status still decides.
        status = exc.response.status_code
        host = address.rpartition(":")[0] or address
        return UpstreamHTTPError(
            f"upstream returned HTTP {status}",
            grpc_code_for_http_status(status),
            reason=Reason.UPSTREAM_ERROR,
            metadata={Key.HTTP_STATUS: str(status), Key.UPSTREAM_HOST: host},
            http_status=status,
        )
    return error_for_exception(exc, EXCEPTIONS, address=address, correlation_id=correlation_id)


class _HttpxResponse:
    __slots__ = ("_body", "_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self._body: AsyncIterator[bytes] | None = None  # for `read`
        if _LOCATION in response.extensions:  # a redirect: its Location back where the bridge reads it
            headers = response.headers.copy()
            headers["location"] = response.extensions[_LOCATION]
            self.headers = headers

    def chunks(self) -> AsyncIterator[bytes]:
        # Without a content encoding the bytes need no decoder: skip httpx's decoding layer (per chunk).
        raw = self._response.headers.get("content-encoding", "identity") == "identity"
        return self._response.aiter_raw() if raw else self._response.aiter_bytes()

    async def read(self) -> bytes:
        if self._body is None:
            self._body = self.chunks()
        return await next_piece(self._body)

    async def aclose(self) -> None:
        await self._response.aclose()


_REDIRECTS: Final = frozenset((301, 302, 303, 307, 308))
_LOCATION: Final = "prisme_bridge.location"


async def _set_location_aside(response: httpx.Response) -> None:
    """httpx parses a redirect's Location even when it follows none (to offer `next_request`), and fails the
    reply as a protocol error on one it cannot parse (a control byte, a space): a lost connection, retried.
    The bridge never follows and explains the Location itself (redirect.py), so httpx does not see it."""
    if response.status_code in _REDIRECTS and "location" in response.headers:
        response.extensions[_LOCATION] = response.headers["location"]
        del response.headers["location"]


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class _CookielessClient(httpx.AsyncClient):
    _NONE: Final = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._NONE

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("the upstream client keeps no cookies")


class HttpxTransport:
    """httpx's AsyncClient behind the `Transport` seam."""

    caught: tuple[type[BaseException], ...] = _CAUGHT

    def __init__(self, settings: TransportSettings) -> None:
        # Streams hold their connection for minutes: the pool is as large as the concurrency allowed, and
        # keeps every connection alive so bursts don't pay new handshakes.
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=30.0,
        )
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        # No environment (SSL_CERT_FILE, netrc): what reaches the upstream is decided by the bridge's
        # settings alone; a proxy only when the settings name one.
        self._client = _CookielessClient(
            timeout=timeout,
            limits=limits,
            verify=tls_context(settings),
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
            event_hooks={"response": [_set_location_aside]},
            trust_env=False,
            proxy=settings.proxy,
        )

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> Response:
        body, headers = request_body(content, headers)
        request = self._client.build_request(method, _url(url), content=body, headers=headers)
        return _HttpxResponse(await self._client.send(request, stream=True))

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        return error_for(exc, address=address, correlation_id=correlation_id)

    async def aclose(self) -> None:
        await self._client.aclose()


@lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    # Parsed once per distinct URL: httpx would re-parse the string on every request.
    return httpx.URL(url)
