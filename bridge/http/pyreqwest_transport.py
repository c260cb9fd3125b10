"""`--upstream-transport pyreqwest`: pyreqwest, a Python binding of the Rust reqwest/hyper client.

Its connection pool, TLS (rustls) and HTTP parsing run in Rust, outside the event loop; replies are read as
its own `Bytes` chunks, handed on as `bytes`. Its exceptions carry the causes reqwest reports as text
("Connection refused (os error 111)"): `error_for` turns them into the same bridge errors, with the same
words, as the other transports. It cannot restrict trust to `--upstream-ca-file` (reqwest always adds the
public CAs), so that combination is refused at startup (bridge.http.transport.unsupported).
"""

from __future__ import annotations

import errno
import re
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Final

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import (
    BodyDecodeError,
    BuilderError,
    ClientClosedError,
    ConnectError,
    ConnectTimeoutError,
    DecodeError,
    NetworkError,
    PoolTimeoutError,
    PyreqwestError,
    ReadError,
    ReadTimeoutError,
    RedirectError,
    RequestError,
    RequestPanicError,
    RequestTimeoutError,
    StatusError,
    TransportError,
    WriteError,
    WriteTimeoutError,
)
from pyreqwest.proxy import ProxyBuilder
from pyreqwest.request import StreamRequest
from pyreqwest.response import Response as PyreqwestResponse

from bridge.errors import (
    BridgeError,
    Key,
    Reason,
    UpstreamError,
    error_info,
    internal_error,
)
from bridge.http.transport import USER_AGENT, TransportSettings
from bridge.http.transport_errors import ERRNO_CAUSES, Target, lookup, target_of
from bridge.redaction import clean_optional

__all__ = ["EXCEPTION_MAP", "PyreqwestTransport", "error_from_pyreqwest"]

# Exception type -> (error class, code, reason, what happened), as bridge.http.transport_errors.EXCEPTION_MAP
# for httpx and aiohttp; the most specific type in the exception's MRO wins.
EXCEPTION_MAP: Final[Mapping[type[BaseException], Target]] = {
    PyreqwestError: target_of("bug", "upstream request failed"),
    RequestError: target_of("lost", "upstream request failed"),
    StatusError: target_of("bug", "upstream returned an error status"),  # never enabled here
    RedirectError: target_of("garbled", "upstream redirected too often"),
    DecodeError: target_of("garbled", "could not decode upstream response"),
    BodyDecodeError: target_of("garbled", "could not decode upstream response"),
    TransportError: target_of("lost", "upstream transport error"),
    RequestTimeoutError: target_of("silent", "upstream timed out"),
    ConnectTimeoutError: target_of("unreachable", "timed out connecting to upstream"),
    ReadTimeoutError: target_of("silent", "timed out waiting for upstream data"),
    WriteTimeoutError: target_of("silent", "timed out sending the request upstream"),
    PoolTimeoutError: target_of("pool", "no upstream connection free in the pool"),
    NetworkError: target_of("lost", "upstream network error"),
    ConnectError: target_of("unreachable", "could not connect to upstream"),
    ReadError: target_of("lost", "error reading from upstream"),
    WriteError: target_of("lost", "error sending the request upstream"),
    ClientClosedError: target_of("bug", "upstream client already closed"),
    BuilderError: target_of("bug", "the bridge built an invalid HTTP request"),
    RequestPanicError: target_of("bug", "upstream request failed"),
}

# reqwest's cause texts, lower-cased, and the bridge's words for them (most specific first).
_CAUSE_TEXTS: Final = (
    ("invalid peer certificate", "TLS certificate verification failed"),
    ("certificate", "TLS certificate verification failed"),
    ("tls", "TLS handshake or record error"),
    ("dns error", "name resolution failed"),
    ("failed to lookup address", "name resolution failed"),
)
_OS_ERROR: Final = re.compile(r"os error (\d+)")


class _Reply:
    """A pyreqwest reply whose body is streamed."""

    __slots__ = ("_request", "_response", "headers", "status")

    def __init__(self, request: StreamRequest, response: PyreqwestResponse) -> None:
        self._request = request
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        reader = self._response.body_reader
        while (chunk := await reader.read_chunk()) is not None:
            yield chunk.to_bytes()

    async def aclose(self) -> None:
        await self._request.__aexit__(None, None, None)


class PyreqwestTransport:
    """pyreqwest's Client behind the `Transport` seam; the client is built on the first request."""

    caught: tuple[type[BaseException], ...] = (PyreqwestError, OSError)

    def __init__(self, settings: TransportSettings) -> None:
        self._builder = _builder(settings)  # now: a file that cannot be used fails the start, not a call
        self._client: Client | None = None

    async def send(self, method: str, url: str, headers: Mapping[str, str], content: bytes | None) -> _Reply:
        client = self._client
        if client is None:
            client = self._client = self._builder.build()
        builder = client.request(method, url).headers(headers)
        if content is not None:
            builder = builder.body_bytes(content)
        request = builder.build_streamed()
        response = await request.__aenter__()
        return _Reply(request, response)

    def error_for(self, exc: BaseException, *, address: str, correlation_id: str | None) -> BridgeError:
        return error_from_pyreqwest(exc, address=address, correlation_id=correlation_id)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _builder(settings: TransportSettings) -> ClientBuilder:
    seconds = timedelta(seconds=1)
    builder = (
        ClientBuilder()
        .max_connections(settings.max_connections)
        .connect_timeout(settings.connect_timeout * seconds)
        .read_timeout(settings.read_timeout * seconds)
        .pool_timeout(settings.connect_timeout * seconds)
        .pool_idle_timeout(30 * seconds)
        .pool_max_idle_per_host(settings.max_connections)
        .follow_redirects(False)
        .default_cookie_store(False)
        .user_agent(USER_AGENT)
        .gzip(True)
        .deflate(True)
        .brotli(True)
        .zstd(True)
        .http1_only()
    )
    if settings.client_cert is not None:
        cert, key = settings.client_cert
        try:
            builder = builder.identity_pem(cert.read_bytes() + b"\n" + key.read_bytes())
        except (OSError, BuilderError) as exc:
            raise OSError(f"upstream client certificate {cert} with key {key}: {exc}") from exc
    if settings.proxy is not None:
        builder = builder.proxy(ProxyBuilder.all(settings.proxy))
    else:
        builder = builder.no_proxy()
    return builder


def error_from_pyreqwest(
    exc: BaseException, *, address: str, correlation_id: str | None = None
) -> BridgeError:
    """The bridge error for an exception pyreqwest raised while talking to the upstream at `address`, in
    the same words as the other transports' (bridge.http.transport_errors.error_from_transport_exception)."""
    target = lookup(type(exc), EXCEPTION_MAP)
    if target is None:  # an OSError
        from bridge.http.transport_errors import error_from_transport_exception

        return error_from_transport_exception(exc, address=address, correlation_id=correlation_id)
    if type(exc) is ConnectError and "proxy" in _causes_text(exc):
        target = target_of("unreachable", "proxy error reaching upstream")
    error_class, code, reason, what = target
    if error_class is BridgeError and reason == Reason.INTERNAL:
        return internal_error(f"internal error ({type(exc).__name__})")
    host = address.rpartition(":")[0] or address
    cause = describe_pyreqwest_cause(exc)
    correlation_id = clean_optional(correlation_id)
    metadata = {Key.UPSTREAM_HOST: host, Key.CORRELATION_ID: correlation_id, Key.CAUSE: cause}
    message = f"{what} ({address})" + (f": {cause}" if cause else "")
    error = error_class(message, code=code, details=[error_info(reason, metadata)])
    if isinstance(error, UpstreamError):
        error.correlation_id = correlation_id
    return error


def describe_pyreqwest_cause(exc: BaseException) -> str | None:
    """What the network said under a pyreqwest exception ("connection refused"), from the causes reqwest
    reports; None if nothing the bridge has words for (reqwest's own text is never passed on)."""
    text = _causes_text(exc)
    for needle, words in _CAUSE_TEXTS:
        if needle in text:
            return words
    found = _OS_ERROR.search(text)
    if found is not None:
        return ERRNO_CAUSES.get(int(found.group(1)))
    if "connection closed before message completed" in text or "incomplete message" in text:
        return None
    if "timed out" in text or "timeout" in text:
        return ERRNO_CAUSES[errno.ETIMEDOUT]
    return None


def _causes_text(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    causes = details.get("causes") if isinstance(details, dict) else None
    texts = [str(exc)] + [str(c.get("message", "")) for c in causes or () if isinstance(c, dict)]
    return " | ".join(texts).lower()
