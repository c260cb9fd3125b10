"""`--upstream-transport aiohttp-direct`: aiohttp's client called directly, without the httpx API above it.

The same connection pool, TLS context, proxy and exception map as the httpx-over-aiohttp transport
(`aiohttp`), without httpx's request and response objects, header classes and cookie extraction on every
reply (docs/PERFORMANCE.md measures what they cost). The session is made on the first request, inside the
running event loop; it keeps no cookies (a bridge has no use for them) and follows no redirects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

import aiohttp

from bridge.errors import BridgeError
from bridge.http.transport import (
    LARGE_BODY,
    USER_AGENT,
    TransportSettings,
    arrived_first,
    body_pieces,
    tls_context,
)
from bridge.http.transport_errors import error_from_transport_exception

__all__ = ["AiohttpDirectTransport"]

# What an upstream await can raise here: aiohttp's errors (its timeouts are among them) and the OS's.
_CAUGHT: Final = (aiohttp.ClientError, OSError)


class _AiohttpResponse:
    """An aiohttp reply; its body read with `arrived_first` (bytes received before a connection failure are
    delivered before it)."""

    __slots__ = ("_reply", "headers", "status")

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self._reply = reply
        self.status = reply.status
        self.headers: Mapping[str, str] = reply.headers  # case-insensitive

    def chunks(self) -> AsyncIterator[bytes]:
        return arrived_first(self._reply.content)

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end; otherwise aiohttp closes the connection.
        self._reply.release()


class AiohttpDirectTransport:
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
        data: bytes | AsyncIterator[bytes] | None = content
        if content is not None and len(content) > LARGE_BODY:
            data = body_pieces(content)
            headers = {**headers, "content-length": str(len(content))}
        reply = await session.request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
        )
        return _AiohttpResponse(reply)

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        return error_from_transport_exception(exc, address=address, correlation_id=correlation_id)

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
