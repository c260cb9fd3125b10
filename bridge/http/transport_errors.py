"""How exceptions of the HTTP transport (httpx, and aiohttp under httpx-aiohttp) become bridge errors.

One table, `EXCEPTION_MAP`, from exception type to (error class, code, what happened); the most specific
type in an exception's MRO wins, as in httpx's own transport. tests check that no exception class the
libraries export is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import aiohttp
import grpc
import httpx
from google.rpc import error_details_pb2

from bridge.errors import (
    BridgeError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_info,
    reason_from,
)
from bridge.http.status import grpc_code_for_http_status
from bridge.redaction import clean, clean_optional

__all__ = ["CAUGHT_EXCEPTIONS", "EXCEPTION_MAP", "error_from_transport_exception"]

Code = grpc.StatusCode
# What the client catches around an upstream await: httpx's errors, and the aiohttp ones httpx-aiohttp's
# own map lets through unmapped.
CAUGHT_EXCEPTIONS: Final = (httpx.HTTPError, aiohttp.ClientError, OSError)

_Target = tuple[type[BridgeError], grpc.StatusCode, str]
_UNAVAILABLE: Final = UpstreamUnavailableError
_TIMEOUT: Final = UpstreamTimeoutError

# Exception type -> (error class, code, what happened). The most specific type in the exception's MRO wins.
# Timeouts: connect/pool timeouts never reached the upstream, so UNAVAILABLE (safe to retry). A read or write
# timeout is the upstream going silent mid-request (for SSE: the gap between chunks): the bridge acts as a
# gateway whose upstream timed out, which is HTTP 504 -> DEADLINE_EXCEEDED; unlike UNAVAILABLE it does not
# make retry policies re-run a generation the upstream may still be producing (and billing).
EXCEPTION_MAP: Final[Mapping[type[BaseException], _Target]] = MappingProxyType(
    {
        # --- httpx: every exception class it exports (a unit test checks that none is missing)
        httpx.HTTPError: (BridgeError, Code.INTERNAL, "upstream request failed"),
        httpx.RequestError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream request failed"),
        httpx.TransportError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream transport error"),
        httpx.TimeoutException: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "upstream timed out"),
        httpx.ConnectTimeout: (_UNAVAILABLE, Code.UNAVAILABLE, "timed out connecting to upstream"),
        httpx.ReadTimeout: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out waiting for upstream data"),
        httpx.WriteTimeout: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out sending the request upstream"),
        httpx.PoolTimeout: (_UNAVAILABLE, Code.UNAVAILABLE, "no upstream connection free in the pool"),
        httpx.NetworkError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream network error"),
        httpx.ConnectError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not connect to upstream"),
        httpx.ReadError: (_UNAVAILABLE, Code.UNAVAILABLE, "error reading from upstream"),
        httpx.WriteError: (_UNAVAILABLE, Code.UNAVAILABLE, "error sending the request upstream"),
        httpx.CloseError: (_UNAVAILABLE, Code.UNAVAILABLE, "error closing the upstream connection"),
        httpx.ProtocolError: (_UNAVAILABLE, Code.UNAVAILABLE, "HTTP protocol error with upstream"),
        httpx.LocalProtocolError: (BridgeError, Code.INTERNAL, "the bridge built an invalid HTTP request"),
        # Mostly "server disconnected" / "incomplete chunked read": a dropped connection.
        httpx.RemoteProtocolError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream broke the connection"),
        httpx.ProxyError: (_UNAVAILABLE, Code.UNAVAILABLE, "proxy error reaching upstream"),
        httpx.UnsupportedProtocol: (BridgeError, Code.INTERNAL, "unsupported upstream URL scheme"),
        httpx.DecodingError: (UpstreamProtocolError, Code.INTERNAL, "could not decode upstream response"),
        httpx.TooManyRedirects: (UpstreamProtocolError, Code.INTERNAL, "upstream redirected too often"),
        # Read from its response by error_from_transport_exception.
        httpx.HTTPStatusError: (UpstreamHTTPError, Code.UNKNOWN, "upstream returned an error status"),
        httpx.InvalidURL: (BridgeError, Code.INTERNAL, "invalid upstream URL"),
        httpx.CookieConflict: (BridgeError, Code.INTERNAL, "conflicting upstream cookies"),
        httpx.StreamError: (BridgeError, Code.INTERNAL, "upstream response stream misused"),
        httpx.StreamConsumed: (BridgeError, Code.INTERNAL, "upstream request stream already consumed"),
        httpx.StreamClosed: (BridgeError, Code.INTERNAL, "upstream response stream already closed"),
        httpx.ResponseNotRead: (BridgeError, Code.INTERNAL, "upstream response not read"),
        httpx.RequestNotRead: (BridgeError, Code.INTERNAL, "upstream request not read"),
        # --- aiohttp, under httpx-aiohttp: its map re-raises unmapped ClientErrors as they are, and maps
        # every ClientConnectionError (DNS, refused, server disconnected) to httpx.ConnectTimeout, so the
        # aiohttp cause of an httpx error is the better witness (see _witness).
        aiohttp.ClientError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream client error"),
        aiohttp.ClientConnectionError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream connection error"),
        aiohttp.ClientConnectorError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not connect to upstream"),
        aiohttp.ClientConnectorDNSError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not resolve upstream host"),
        aiohttp.ClientSSLError: (_UNAVAILABLE, Code.UNAVAILABLE, "TLS error with upstream"),
        aiohttp.ClientProxyConnectionError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not connect to proxy"),
        aiohttp.ClientHttpProxyError: (_UNAVAILABLE, Code.UNAVAILABLE, "proxy refused the request"),
        aiohttp.ServerDisconnectedError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream closed the connection"),
        aiohttp.ServerTimeoutError: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out waiting for upstream data"),
        aiohttp.SocketTimeoutError: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out waiting for upstream data"),
        aiohttp.ConnectionTimeoutError: (_UNAVAILABLE, Code.UNAVAILABLE, "timed out connecting to upstream"),
        aiohttp.ClientPayloadError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream response body cut short"),
        aiohttp.ClientResponseError: (UpstreamProtocolError, Code.INTERNAL, "invalid upstream response"),
        aiohttp.InvalidURL: (BridgeError, Code.INTERNAL, "invalid upstream URL"),
        aiohttp.NonHttpUrlClientError: (BridgeError, Code.INTERNAL, "unsupported upstream URL scheme"),
        # --- bare OS errors that slip past both libraries
        ConnectionError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream connection error"),
        TimeoutError: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "upstream timed out"),
    }
)


def error_from_transport_exception(
    exc: BaseException, *, domain: str, correlation_id: str | None = None
) -> BridgeError:
    """The error for an exception raised while talking to the upstream (httpx, or aiohttp leaking through).

    ``correlation_id``: the upstream's, when its response had begun before the failure (a body cut
    short). Exceptions no table entry covers are bugs of the bridge: INTERNAL, without their text.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        # Never raised by the client (it reads every reply's status itself); its status still decides.
        status = exc.response.status_code
        info = error_info(f"HTTP_{status}", domain, {"http_status": str(status)})
        code = grpc_code_for_http_status(status)
        return UpstreamHTTPError(
            f"upstream returned HTTP {status}", code=code, details=[info], http_status=status
        )
    witness = _witness(exc)
    target = _lookup(type(witness))
    if target is None:
        return BridgeError(f"internal error ({type(exc).__name__})", details=[_exception_info(exc, domain)])
    error_class, code, what = target
    text = clean(_safe_str(witness))
    correlation_id = clean_optional(correlation_id)
    info = _exception_info(witness, domain, original=exc, correlation_id=correlation_id)
    error = error_class(f"{what}: {text}" if text else what, code=code, details=[info])
    if isinstance(error, UpstreamError):
        error.correlation_id = correlation_id
    return error


def _witness(exc: BaseException) -> BaseException:
    cause = exc.__cause__
    return cause if isinstance(exc, httpx.HTTPError) and isinstance(cause, aiohttp.ClientError) else exc


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # aiohttp's ClientResponseError.__str__ fails without request_info
        return ""


def _lookup(exc_type: type[BaseException]) -> _Target | None:
    for cls in exc_type.__mro__:
        if cls in EXCEPTION_MAP:
            return EXCEPTION_MAP[cls]
    return None


def _exception_info(
    exc: BaseException,
    domain: str,
    original: BaseException | None = None,
    correlation_id: str | None = None,
) -> error_details_pb2.ErrorInfo:
    reason = reason_from(type(exc).__name__) or "TRANSPORT_ERROR"
    metadata: dict[str, str | None] = {"exception": _qualified(exc), "correlation_id": correlation_id}
    if original is not None and original is not exc:
        metadata["raised_as"] = _qualified(original)
    return error_info(reason, domain, metadata)


def _qualified(exc: BaseException) -> str:
    # "httpx.ConnectError", not "httpx._exceptions.ConnectError": the public spelling.
    return f"{type(exc).__module__.partition('.')[0]}.{type(exc).__name__}"
