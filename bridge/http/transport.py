"""The network seam under the upstream client: send one request, read its reply's body as it arrives.

`HttpClient` speaks to a `Transport`, chosen by `--upstream-transport` (`build_transport`):

  aiohttp-direct  aiohttp's client called directly (bridge.http.aiohttp_direct); the default, the fastest
  aiohttp         the httpx client API over aiohttp (httpx-aiohttp)
  httpx           the httpx client API over httpx's own httpcore

A transport owns its connection pool, its TLS settings and the map of its own exceptions to bridge errors,
so another HTTP library plugs in here without touching the client (docs/PERFORMANCE.md compares them).
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal, Protocol, get_args
from urllib.parse import urlsplit

import aiohttp
import certifi
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from bridge.errors import BridgeError
from bridge.http.transport_errors import CAUGHT_EXCEPTIONS, error_from_transport_exception

__all__ = [
    "DEFAULT_TRANSPORT",
    "LARGE_BODY",
    "TRANSPORT_NAMES",
    "USER_AGENT",
    "HttpxTransport",
    "Response",
    "Transport",
    "TransportName",
    "TransportSettings",
    "arrived_first",
    "body_pieces",
    "build_transport",
    "proxy_for",
    "tls_context",
]

TransportName = Literal["aiohttp-direct", "aiohttp", "httpx"]
TRANSPORT_NAMES: Final[tuple[TransportName, ...]] = get_args(TransportName)
DEFAULT_TRANSPORT: Final[TransportName] = "aiohttp-direct"
USER_AGENT: Final = "prisme-grpc-bridge"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Connection-level settings of a transport."""

    connect_timeout: float = 10.0
    read_timeout: float = 300.0  # seconds of silence tolerated while a reply is read
    max_connections: int = 1024
    name: TransportName = DEFAULT_TRANSPORT
    ca_file: Path | None = None  # CAs that sign the upstream's certificate; None: certifi's public CAs
    client_cert: tuple[Path, Path] | None = None  # (certificate chain, key) for an mTLS upstream
    proxy: str | None = None  # an HTTP(S) proxy URL for every request (see `proxy_for`)


class Response(Protocol):
    """A reply whose headers have arrived; its body is read with `chunks()`, then `aclose()`d."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, without content decoding when there is no content encoding."""
        ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """Sends requests over a connection pool. Exceptions it raises are mapped by `error_for`."""

    caught: tuple[type[BaseException], ...]

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> Response:
        """Sends the request; returns once the reply's headers have arrived."""
        ...

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        """The bridge error for an exception of `caught` raised by `send` or a body read from the upstream
        at `address` (host:port)."""
        ...

    async def aclose(self) -> None: ...


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def chunks(self) -> AsyncIterator[bytes]:
        # Without a content encoding the bytes need no decoder: skip httpx's decoding layer (per chunk).
        # A reply already read in full (httpx.MockTransport's) only has its decoded bytes left.
        response = self._response
        raw = (
            response.headers.get("content-encoding", "identity") == "identity"
            and not response.is_stream_consumed
        )
        return response.aiter_raw() if raw else response.aiter_bytes()

    async def aclose(self) -> None:
        await self._response.aclose()


class _AiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport, whose reply bodies hand out every byte that arrived before a failure."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        # httpx-aiohttp keeps the aiohttp reply on its stream object only (no public accessor).
        reply = getattr(response.stream, "_aiohttp_response", None)
        if isinstance(reply, aiohttp.ClientResponse) and isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _ArrivedFirst(response.stream, reply.content)
        return response


class _ArrivedFirst(httpx.AsyncByteStream):
    """An aiohttp reply body: its bytes as they arrive; when the connection fails, the bytes that arrived
    before the failure first, then the failure. aiohttp's reader raises a connection error as soon as it
    has one, even while bytes received before it are still in its buffer, so an upstream that sends its last
    chunks and resets the connection in the same breath would otherwise lose them."""

    def __init__(self, stream: httpx.AsyncByteStream, content: aiohttp.StreamReader) -> None:
        self._stream = stream  # closes the aiohttp reply
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_exceptions():  # as httpx-aiohttp's own stream: a read timeout is httpx's ReadTimeout
            async for chunk in arrived_first(self._content):
                yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


async def arrived_first(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The bytes of an aiohttp reply body as they arrive, to its end; when the connection fails, the bytes
    received before the failure first, then the failure (aiohttp's reader raises as soon as it has an
    error, even with bytes received before it still in its buffer)."""
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


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: httpx would otherwise parse every reply's headers for cookies (a
    bridge has no use for them, and must not send one caller's cookies with another's request)."""

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
    """The httpx client API over aiohttp (`aiohttp`; encode/httpx#3215) or httpcore (`httpx`).

    `mock`: an httpx transport to use instead (unit tests: `httpx.MockTransport`).
    """

    caught: tuple[type[BaseException], ...] = CAUGHT_EXCEPTIONS

    def __init__(self, settings: TransportSettings, *, mock: httpx.AsyncBaseTransport | None = None) -> None:
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
        # One TLS context and no environment (SSL_CERT_FILE, netrc) for both transports: what reaches the
        # upstream is decided by the bridge's settings alone; a proxy only when the settings name one.
        tls = tls_context(settings)
        proxy = settings.proxy
        transport = mock
        if transport is None and settings.name == "aiohttp":
            transport = _AiohttpTransport(
                limits=limits,
                verify=tls,
                trust_env=False,
                proxy=httpx.Proxy(proxy) if proxy else None,
                client=lambda: _aiohttp_session(limits, tls),
            )
        self._client = _CookielessClient(
            timeout=timeout,
            limits=limits,
            transport=transport,
            verify=tls,
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
            trust_env=False,
            proxy=proxy if transport is None else None,
        )

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes | None
    ) -> Response:
        body: bytes | AsyncIterator[bytes] | None = content
        if content is not None and len(content) > LARGE_BODY:
            body = body_pieces(content)
            headers = {**headers, "content-length": str(len(content))}
        request = self._client.build_request(method, _url(url), content=body, headers=headers)
        return _HttpxResponse(await self._client.send(request, stream=True))

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        return error_from_transport_exception(exc, address=address, correlation_id=correlation_id)

    async def aclose(self) -> None:
        await self._client.aclose()


def _aiohttp_session(limits: httpx.Limits, tls: ssl.SSLContext) -> aiohttp.ClientSession:
    # httpx-aiohttp's own session, without its cookie jar (httpx's is the one it would fill).
    connector = aiohttp.TCPConnector(
        limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry, ssl=tls
    )
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


# A request body larger than this is written in pieces (with its length, so not chunked): one large write
# would hold the event loop, and aiohttp warns about it.
LARGE_BODY: Final = 512 * 1024
_PIECE: Final = 256 * 1024


async def body_pieces(content: bytes) -> AsyncIterator[bytes]:
    """`content` in pieces of at most 256 KiB."""
    view = memoryview(content)
    for start in range(0, len(view), _PIECE):
        yield bytes(view[start : start + _PIECE])


@lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    # Parsed once per distinct URL: httpx would re-parse the string on every request.
    return httpx.URL(url)


def tls_context(settings: TransportSettings) -> ssl.SSLContext:
    """Verifies the upstream against `ca_file` (else certifi's CAs); presents the client certificate
    if one is set. Raises OSError naming the file that cannot be used."""
    try:
        context = ssl.create_default_context(cafile=settings.ca_file or certifi.where())
    except ssl.SSLError as exc:
        raise OSError(f"upstream CA file {settings.ca_file}: no PEM CA certificate in it") from exc
    if settings.client_cert is not None:
        cert, key = settings.client_cert
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise OSError(f"upstream client certificate {cert} with key {key}: {exc.reason or exc}") from exc
    return context


def proxy_for(url: str) -> str | None:
    """The proxy that the process environment names for `url`: HTTPS_PROXY or HTTP_PROXY by its scheme,
    else ALL_PROXY, unless NO_PROXY matches its host (urllib's rules; lower-case names win), or None."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if "no" in proxies and urllib.request.proxy_bypass(parts.netloc, proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def build_transport(settings: TransportSettings) -> Transport:
    """The transport `settings.name` names (its library imported only when chosen)."""
    if settings.name == "aiohttp-direct":
        from bridge.http.aiohttp_direct import AiohttpDirectTransport

        return AiohttpDirectTransport(settings)
    return HttpxTransport(settings)
