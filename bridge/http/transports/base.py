"""The network seam under the upstream client, and what every transport shares.

`HttpClient` (bridge.http.client) speaks to a `Transport`: send one request, read its reply's body as it
arrives, map the transport library's exceptions to bridge errors. This module is the protocol and the
helpers the implementations share (settings, TLS context, proxy, request body pieces, the exception map's
common part); it imports none of them. `--upstream-transport` chooses one (bridge.http.transports):

  aiohttp  aiohttp's client (bridge.http.transports.aiohttp); the default, the fastest
  httpx    httpx's client over httpcore (bridge.http.transports.httpx)

and unit tests use the in-memory `bridge.http.transports.mock`. A transport owns its connection pool, its
TLS settings and the map of its library's exceptions (`error_for`), so another HTTP library plugs in
without touching the client (docs/PERFORMANCE.md compares them).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, NamedTuple, Protocol, get_args
from urllib.parse import urlsplit

import certifi
import grpc

from bridge.errors import (
    BridgeError,
    Key,
    Reason,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    internal_error,
)
from bridge.redaction import clean, header_value

__all__ = [
    "BUG",
    "DEFAULT_TRANSPORT",
    "GARBLED",
    "LARGE_BODY",
    "LOST",
    "OS_EXCEPTIONS",
    "SILENT",
    "TRANSPORT_NAMES",
    "UNREACHABLE",
    "USER_AGENT",
    "ExceptionMap",
    "Mapped",
    "Response",
    "Transport",
    "TransportName",
    "TransportSettings",
    "body_pieces",
    "describe_cause",
    "error_for_exception",
    "next_piece",
    "proxy_for",
    "request_body",
    "tls_context",
]

log = logging.getLogger(__name__)

TransportName = Literal["aiohttp", "httpx"]
TRANSPORT_NAMES: Final[tuple[TransportName, ...]] = get_args(TransportName)
DEFAULT_TRANSPORT: Final[TransportName] = "aiohttp"
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
        """The body's bytes as they arrive, without content decoding when there is no content encoding;
        when the connection fails, the bytes that arrived before the failure first, then the failure."""
        ...

    async def read(self) -> bytes:
        """The next bytes of the body, as `chunks` gives them; b"" at its end. (A coroutine per read, for
        the stream path, where a generator layer would cost per read.) Not to be mixed with `chunks`."""
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


# ------------------------------------------------------------------------------------- request bodies

# A request body larger than this is written in pieces (with its length, so not chunked): one large write
# would hold the event loop, and aiohttp warns about it.
LARGE_BODY: Final = 512 * 1024
_PIECE: Final = 256 * 1024


async def next_piece(pieces: AsyncIterator[bytes]) -> bytes:
    """The next non-empty piece of a body, b"" at its end (`Response.read` over `Response.chunks`)."""
    async for piece in pieces:
        if piece:
            return piece
    return b""


async def body_pieces(content: bytes) -> AsyncIterator[bytes]:
    """`content` in pieces of at most 256 KiB."""
    view = memoryview(content)
    for start in range(0, len(view), _PIECE):
        yield bytes(view[start : start + _PIECE])


def request_body(
    content: bytes | None, headers: Mapping[str, str]
) -> tuple[bytes | AsyncIterator[bytes] | None, Mapping[str, str]]:
    """(the body to send, its headers): `content` as it is, or past `LARGE_BODY` its pieces, with its
    length among the headers (so not chunked)."""
    if content is None or len(content) <= LARGE_BODY:
        return content, headers
    return body_pieces(content), {**headers, "content-length": str(len(content))}


# --------------------------------------------------------------------------------------- TLS and proxy


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


# ------------------------------------------------------------------------------------- exception maps


class Mapped(NamedTuple):
    """What an exception of a transport library becomes: the error class, its code and reason, and what
    happened in the bridge's words."""

    error: type[BridgeError]
    code: grpc.StatusCode
    reason: Reason
    what: str


ExceptionMap = Mapping[type[BaseException], Mapped]
Code = grpc.StatusCode

# The common (error class, code, reason) of map entries; each transport's map adds what happened.
BUG: Final = (BridgeError, Code.INTERNAL, Reason.INTERNAL)  # the bridge misused its HTTP library
LOST: Final = (UpstreamUnavailableError, Code.UNAVAILABLE, Reason.UPSTREAM_CONNECTION_LOST)
UNREACHABLE: Final = (UpstreamUnavailableError, Code.UNAVAILABLE, Reason.UPSTREAM_UNREACHABLE)
# A read or write timeout is the upstream going silent mid-request (for SSE: the gap between chunks): the
# bridge acts as a gateway whose upstream timed out, which is HTTP 504 -> DEADLINE_EXCEEDED; unlike
# UNAVAILABLE it does not make retry policies re-run a generation the upstream may still be producing (and
# billing). Connect and pool timeouts never reached the upstream: UNAVAILABLE (safe to retry).
SILENT: Final = (UpstreamTimeoutError, Code.DEADLINE_EXCEEDED, Reason.UPSTREAM_TIMEOUT)
GARBLED: Final = (UpstreamProtocolError, Code.INTERNAL, Reason.UPSTREAM_INVALID_RESPONSE)

# Bare OS errors, which every library lets slip through somewhere: part of every transport's map.
OS_EXCEPTIONS: Final[ExceptionMap] = MappingProxyType(
    {
        ConnectionError: Mapped(*LOST, "upstream connection error"),
        ConnectionRefusedError: Mapped(*UNREACHABLE, "could not connect to upstream"),
        socket.gaierror: Mapped(*UNREACHABLE, "could not resolve upstream host"),
        TimeoutError: Mapped(*SILENT, "upstream timed out"),
    }
)


def error_for_exception(
    exc: BaseException, exceptions: ExceptionMap, *, address: str, correlation_id: str | None = None
) -> BridgeError:
    """The error for an exception raised while talking to the upstream at `address` (host:port), by the
    entry of `exceptions` for the most specific class in its MRO (as in httpx's own transport).

    The message says what happened in the bridge's words and, when the network said why, its reason
    ("connection refused"), never the library's text or class names. ``correlation_id``: the upstream's,
    when its response had begun before the failure (a body cut short). Exceptions no entry covers are
    bugs of the bridge: INTERNAL, without their text.
    """
    log.debug("upstream %s: transport error", address, exc_info=exc)
    target = next((exceptions[cls] for cls in type(exc).__mro__ if cls in exceptions), None)
    if target is None:
        return internal_error(f"internal error ({type(exc).__name__})")
    host = address.rpartition(":")[0] or address
    cause = describe_cause(exc)
    correlation_id = header_value(correlation_id)
    metadata = {Key.UPSTREAM_HOST: host, Key.CORRELATION_ID: correlation_id, Key.CAUSE: cause}
    message = f"{target.what} ({address})" + (f": {cause}" if cause else "")
    if issubclass(target.error, UpstreamError):
        return target.error(
            message, target.code, reason=target.reason, metadata=metadata, correlation_id=correlation_id
        )
    return target.error(message, target.code, reason=target.reason, metadata=metadata)


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
