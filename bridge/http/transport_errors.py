"""How exceptions of the HTTP transport (httpx, and aiohttp under httpx-aiohttp) become bridge errors.

One table, `EXCEPTION_MAP`, from exception type to (error class, code, reason, what happened); the most
specific type in an exception's MRO wins, as in httpx's own transport. A unit test checks that no exception
class the libraries export is left out.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Final

import aiohttp
import grpc
import httpx

from bridge.errors import (
    BridgeError,
    Key,
    Reason,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_info,
    internal_error,
)
from bridge.http.status import grpc_code_for_http_status
from bridge.redaction import clean, header_value

__all__ = ["CAUGHT_EXCEPTIONS", "EXCEPTION_MAP", "describe_cause", "error_from_transport_exception"]

log = logging.getLogger(__name__)

Code = grpc.StatusCode
# What the client catches around an upstream await: httpx's errors, and the aiohttp ones httpx-aiohttp's
# own map lets through unmapped.
CAUGHT_EXCEPTIONS: Final = (httpx.HTTPError, aiohttp.ClientError, OSError)

_Target = tuple[type[BridgeError], grpc.StatusCode, Reason, str]
# The common (error class, code, reason) of the table's entries.
_BUG: Final = (BridgeError, Code.INTERNAL, Reason.INTERNAL)  # the bridge misused its HTTP library
_LOST: Final = (UpstreamUnavailableError, Code.UNAVAILABLE, Reason.UPSTREAM_CONNECTION_LOST)
_UNREACHABLE: Final = (UpstreamUnavailableError, Code.UNAVAILABLE, Reason.UPSTREAM_UNREACHABLE)
_SILENT: Final = (UpstreamTimeoutError, Code.DEADLINE_EXCEEDED, Reason.UPSTREAM_TIMEOUT)
_GARBLED: Final = (UpstreamProtocolError, Code.INTERNAL, Reason.UPSTREAM_INVALID_RESPONSE)

# Exception type -> (error class, code, reason, what happened). The most specific type in the exception's MRO
# wins.
# Timeouts: connect/pool timeouts never reached the upstream, so UNAVAILABLE (safe to retry). A read or write
# timeout is the upstream going silent mid-request (for SSE: the gap between chunks): the bridge acts as a
# gateway whose upstream timed out, which is HTTP 504 -> DEADLINE_EXCEEDED; unlike UNAVAILABLE it does not
# make retry policies re-run a generation the upstream may still be producing (and billing).
EXCEPTION_MAP: Final[Mapping[type[BaseException], _Target]] = MappingProxyType(
    {
        # --- httpx: every exception class it exports (a unit test checks that none is missing)
        httpx.HTTPError: (*_BUG, "upstream request failed"),
        httpx.RequestError: (*_LOST, "upstream request failed"),
        httpx.TransportError: (*_LOST, "upstream transport error"),
        httpx.TimeoutException: (*_SILENT, "upstream timed out"),
        httpx.ConnectTimeout: (*_UNREACHABLE, "timed out connecting to upstream"),
        httpx.ReadTimeout: (*_SILENT, "timed out waiting for upstream data"),
        httpx.WriteTimeout: (*_SILENT, "timed out sending the request upstream"),
        httpx.PoolTimeout: (
            UpstreamUnavailableError,
            Code.UNAVAILABLE,
            Reason.UPSTREAM_POOL_EXHAUSTED,
            "no upstream connection free in the pool",
        ),
        httpx.NetworkError: (*_LOST, "upstream network error"),
        httpx.ConnectError: (*_UNREACHABLE, "could not connect to upstream"),
        httpx.ReadError: (*_LOST, "error reading from upstream"),
        httpx.WriteError: (*_LOST, "error sending the request upstream"),
        httpx.CloseError: (*_LOST, "error closing the upstream connection"),
        httpx.ProtocolError: (*_LOST, "HTTP protocol error with upstream"),
        httpx.LocalProtocolError: (*_BUG, "the bridge built an invalid HTTP request"),
        # Mostly "server disconnected" / "incomplete chunked read": a dropped connection.
        httpx.RemoteProtocolError: (*_LOST, "upstream broke the connection"),
        httpx.ProxyError: (*_UNREACHABLE, "proxy error reaching upstream"),
        httpx.UnsupportedProtocol: (*_BUG, "unsupported upstream URL scheme"),
        httpx.DecodingError: (*_GARBLED, "could not decode upstream response"),
        httpx.TooManyRedirects: (*_GARBLED, "upstream redirected too often"),
        # Read from its response by error_from_transport_exception.
        httpx.HTTPStatusError: (
            UpstreamHTTPError,
            Code.UNKNOWN,
            Reason.UPSTREAM_ERROR,
            "upstream returned an error status",
        ),
        httpx.InvalidURL: (*_BUG, "invalid upstream URL"),
        httpx.CookieConflict: (*_BUG, "conflicting upstream cookies"),
        httpx.StreamError: (*_BUG, "upstream response stream misused"),
        httpx.StreamConsumed: (*_BUG, "upstream request stream already consumed"),
        httpx.StreamClosed: (*_BUG, "upstream response stream already closed"),
        httpx.ResponseNotRead: (*_BUG, "upstream response not read"),
        httpx.RequestNotRead: (*_BUG, "upstream request not read"),
        # --- aiohttp, under httpx-aiohttp: its map re-raises unmapped ClientErrors as they are, and maps
        # every ClientConnectionError (DNS, refused, server disconnected) to httpx.ConnectTimeout, so the
        # aiohttp cause of an httpx error is the better witness (see _witness).
        aiohttp.ClientError: (*_LOST, "upstream client error"),
        aiohttp.ClientConnectionError: (*_LOST, "upstream connection error"),
        aiohttp.ClientConnectorError: (*_UNREACHABLE, "could not connect to upstream"),
        aiohttp.ClientConnectorDNSError: (*_UNREACHABLE, "could not resolve upstream host"),
        aiohttp.ClientSSLError: (*_UNREACHABLE, "TLS error with upstream"),
        aiohttp.ClientProxyConnectionError: (*_UNREACHABLE, "could not connect to proxy"),
        aiohttp.ClientHttpProxyError: (*_UNREACHABLE, "proxy refused the request"),
        aiohttp.ServerDisconnectedError: (*_LOST, "upstream closed the connection"),
        aiohttp.ServerTimeoutError: (*_SILENT, "timed out waiting for upstream data"),
        aiohttp.SocketTimeoutError: (*_SILENT, "timed out waiting for upstream data"),
        aiohttp.ConnectionTimeoutError: (*_UNREACHABLE, "timed out connecting to upstream"),
        aiohttp.ClientPayloadError: (
            UpstreamUnavailableError,
            Code.UNAVAILABLE,
            Reason.UPSTREAM_STREAM_TRUNCATED,
            "upstream response body cut short",
        ),
        aiohttp.ClientResponseError: (*_GARBLED, "invalid upstream response"),
        aiohttp.InvalidURL: (*_BUG, "invalid upstream URL"),
        aiohttp.NonHttpUrlClientError: (*_BUG, "unsupported upstream URL scheme"),
        # --- bare OS errors that slip past both libraries
        ConnectionError: (*_LOST, "upstream connection error"),
        TimeoutError: (*_SILENT, "upstream timed out"),
    }
)


def error_from_transport_exception(
    exc: BaseException, *, address: str, correlation_id: str | None = None
) -> BridgeError:
    """The error for an exception raised while talking to the upstream at `address` (host:port).

    The message says what happened in the bridge's words and, when the network said why, its reason
    ("connection refused"), never the library's text or class names. ``correlation_id``: the upstream's,
    when its response had begun before the failure (a body cut short). Exceptions no table entry covers
    are bugs of the bridge: INTERNAL, without their text.
    """
    log.debug("upstream %s: transport error", address, exc_info=exc)
    host = address.rpartition(":")[0] or address
    if isinstance(exc, httpx.HTTPStatusError):
        # Never raised by the client (it reads every reply's status itself); its status still decides.
        status = exc.response.status_code
        info = error_info(Reason.UPSTREAM_ERROR, {Key.HTTP_STATUS: str(status), Key.UPSTREAM_HOST: host})
        code = grpc_code_for_http_status(status)
        message = f"upstream returned HTTP {status}"
        return UpstreamHTTPError(message, code=code, details=[info], http_status=status)
    target = _lookup(type(_witness(exc)))
    if target is None:
        return internal_error(f"internal error ({type(exc).__name__})")
    error_class, code, reason, what = target
    cause = describe_cause(exc)
    correlation_id = header_value(correlation_id)
    metadata = {Key.UPSTREAM_HOST: host, Key.CORRELATION_ID: correlation_id, Key.CAUSE: cause}
    message = f"{what} ({address})" + (f": {cause}" if cause else "")
    error = error_class(message, code=code, details=[error_info(reason, metadata)])
    if isinstance(error, UpstreamError):
        error.correlation_id = correlation_id
    return error


def _witness(exc: BaseException) -> BaseException:
    cause = exc.__cause__
    return cause if isinstance(exc, httpx.HTTPError) and isinstance(cause, aiohttp.ClientError) else exc


def _lookup(exc_type: type[BaseException]) -> _Target | None:
    for cls in exc_type.__mro__:
        if cls in EXCEPTION_MAP:
            return EXCEPTION_MAP[cls]
    return None


# What the operating system or TLS layer said, most specific first.
_CAUSES: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset by peer"),
    (ConnectionAbortedError, "connection aborted"),
    (BrokenPipeError, "connection closed while sending"),
    (socket.gaierror, "name resolution failed"),
    (ssl.SSLCertVerificationError, "TLS certificate verification failed"),
    (ssl.SSLError, "TLS handshake or record error"),
)
_CERTIFICATE_FAILED: Final = "TLS certificate verification failed"
# OpenSSL's X509_V_ERR_* codes (SSLCertVerificationError.verify_code) an operator tells apart: a rotation
# lapse, a clock, a wrong URL, a missing CA. Others get OpenSSL's own words (verify_message).
_VERIFY_CODES: Final = {
    2: "unknown issuer (unable to get issuer certificate)",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unknown issuer (unable to get local issuer certificate)",
}


_ERRNOS: Final = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed while sending",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network is unreachable",
}


def describe_cause(exc: BaseException) -> str | None:
    """What the network said under `exc` ("connection refused"), from the chain of causes; None if nothing."""
    chain = list(_causes(exc))
    for cls, text in _CAUSES:
        found = [link for link in chain if isinstance(link, cls)]
        if found and cls is ssl.SSLCertVerificationError:
            return _certificate_cause(found)
        if found:
            return text
    for link in chain:  # an OS error by its number (libraries wrap them: aiohttp's ClientOSError)
        if isinstance(link, OSError) and link.errno in _ERRNOS:
            return _ERRNOS[link.errno]
    for link in chain:  # another OS error: its own words
        if type(link) in _PLAIN_OS_ERRORS and isinstance(link, OSError) and link.strerror:
            return clean(link.strerror.lower())
    return None


_PLAIN_OS_ERRORS: Final = frozenset({OSError, TimeoutError})


def _certificate_cause(errors: list[BaseException]) -> str:
    """ "TLS certificate verification failed: certificate has expired", and so on: an operator tells a
    rotation lapse from a wrong URL. `errors`: the SSLCertVerificationErrors of a chain; aiohttp's
    certificate error is one too, without OpenSSL's verify code and message, which the ssl module's has."""
    for error in errors:
        said = _VERIFY_CODES.get(getattr(error, "verify_code", None) or 0)
        verify_message = getattr(error, "verify_message", None)
        if said is None and isinstance(verify_message, str) and verify_message:
            # "Hostname mismatch, certificate is not valid for 'localhost'." names the host: kept.
            message = clean(verify_message).rstrip(".")
            said = message[:1].lower() + message[1:]
        if said:
            return f"{_CERTIFICATE_FAILED}: {said}"
    return _CERTIFICATE_FAILED


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        link = pending.pop()
        if link is None or id(link) in seen or len(seen) > 16:
            continue
        seen.add(id(link))
        yield link
        # aiohttp keeps the socket's error on its connector errors, the TLS one on certificate errors.
        pending += [
            getattr(link, "os_error", None),
            getattr(link, "certificate_error", None),
            link.__context__,
            link.__cause__,
        ]
