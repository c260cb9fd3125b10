"""bridge.http.transports: every exception of each transport's library maps to a bridge error (the httpx
transport's map, the aiohttp transport's, the bare OS errors both share), and what the network said is
told in the bridge's words."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from bridge.errors import (
    BridgeError,
    Reason,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from bridge.http.transports import aiohttp as aiohttp_transport
from bridge.http.transports import httpx as httpx_transport
from bridge.http.transports.base import describe_cause
from bridge.http.transports.mock import MockResponse, MockTransport
from tests.helpers import error_info as _info
from tests.helpers import everything_sent as _everything_sent

C = grpc.StatusCode
HOST = "gateway.example.com"
ADDRESS = f"{HOST}:443"


# ----------------------------------------------------------------------------------- transport errors


def _httpx_exception_classes() -> list[type[Exception]]:
    found = []
    for name in httpx.__all__:
        obj = getattr(httpx, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            found.append(obj)
    return found


# What each httpx exception becomes; a class httpx adds fails test_every_httpx_exception_is_mapped.
_HTTPX_EXPECTED: dict[type[Exception], tuple[type[BridgeError], grpc.StatusCode]] = {
    httpx.HTTPError: (BridgeError, C.INTERNAL),
    httpx.RequestError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.TransportError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.TimeoutException: (UpstreamTimeoutError, C.DEADLINE_EXCEEDED),
    httpx.ConnectTimeout: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.ReadTimeout: (UpstreamTimeoutError, C.DEADLINE_EXCEEDED),
    httpx.WriteTimeout: (UpstreamTimeoutError, C.DEADLINE_EXCEEDED),
    httpx.PoolTimeout: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.NetworkError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.ConnectError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.ReadError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.WriteError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.CloseError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.ProtocolError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.LocalProtocolError: (BridgeError, C.INTERNAL),
    httpx.RemoteProtocolError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.ProxyError: (UpstreamUnavailableError, C.UNAVAILABLE),
    httpx.UnsupportedProtocol: (BridgeError, C.INTERNAL),
    httpx.DecodingError: (UpstreamProtocolError, C.INTERNAL),
    httpx.TooManyRedirects: (UpstreamProtocolError, C.INTERNAL),
    httpx.HTTPStatusError: (UpstreamHTTPError, C.UNAVAILABLE),  # from its 503 response below
    httpx.InvalidURL: (BridgeError, C.INTERNAL),
    httpx.CookieConflict: (BridgeError, C.INTERNAL),
    httpx.StreamError: (BridgeError, C.INTERNAL),
    httpx.StreamConsumed: (BridgeError, C.INTERNAL),
    httpx.StreamClosed: (BridgeError, C.INTERNAL),
    httpx.ResponseNotRead: (BridgeError, C.INTERNAL),
    httpx.RequestNotRead: (BridgeError, C.INTERNAL),
}

_REQUEST = httpx.Request("POST", "https://gateway.example.com/v1/chat/completions")


def _make_httpx(cls: type[Exception]) -> Exception:
    if cls is httpx.HTTPStatusError:
        response = httpx.Response(503, content=b'{"message":"down"}', request=_REQUEST)
        return httpx.HTTPStatusError("503", request=_REQUEST, response=response)
    try:
        return cls("boom")
    except TypeError:  # StreamConsumed() & co. take no message
        return cls()


def _name_of(function: Any) -> str:
    return str(function.__name__).removeprefix("_from_")


def _from_httpx(exc: BaseException, address: str = ADDRESS) -> BridgeError:
    return httpx_transport.error_for(exc, address=address)


def _from_aiohttp(exc: BaseException, address: str = ADDRESS) -> BridgeError:
    return aiohttp_transport.error_for_exception(exc, aiohttp_transport.EXCEPTIONS, address=address)


def test_every_httpx_exception_is_mapped() -> None:
    classes = _httpx_exception_classes()
    assert len(classes) >= 28
    assert set(classes) == set(_HTTPX_EXPECTED)
    missing = [cls.__name__ for cls in classes if cls not in httpx_transport.EXCEPTIONS]
    assert missing == []


@pytest.mark.parametrize("cls", list(_HTTPX_EXPECTED), ids=lambda cls: cls.__name__)
def test_httpx_exception_mapping(cls: type[Exception]) -> None:
    error_class, code = _HTTPX_EXPECTED[cls]
    error = _from_httpx(_make_httpx(cls))
    assert type(error) is error_class
    assert error.code is code
    assert error.to_status().code is code
    info = _info(error)
    assert info.domain == "grpc-bridge.prisme.ai"
    assert info.reason in set(Reason)
    assert info.metadata["upstreamHost"] == HOST


def test_transport_message_and_error_info() -> None:
    refused = httpx.ConnectError("All connection attempts failed")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    error = _from_httpx(refused)
    # The bridge's words, the address, and what the network said; not the library's text or class names.
    assert error.message == f"could not connect to upstream ({ADDRESS}): connection refused"
    info = _info(error)
    assert info.reason == "UPSTREAM_UNREACHABLE"
    assert dict(info.metadata) == {"upstreamHost": HOST, "cause": "connection refused"}
    quiet = _from_httpx(httpx.ReadTimeout("httpx says something"))
    assert quiet.message == f"timed out waiting for upstream data ({ADDRESS})"
    assert _info(quiet).reason == "UPSTREAM_TIMEOUT"


def test_http_status_error_takes_the_code_of_its_response() -> None:
    # The client never raises it (it reads every reply's status); the status alone still decides.
    response = httpx.Response(429, content=b'{"message":"slow"}', request=_REQUEST)
    error = _from_httpx(httpx.HTTPStatusError("429", request=_REQUEST, response=response))
    assert isinstance(error, UpstreamHTTPError)
    assert (error.code, error.message, error.http_status) == (
        C.RESOURCE_EXHAUSTED,
        "upstream returned HTTP 429",
        429,
    )
    assert dict(_info(error).metadata) == {"httpStatus": "429", "upstreamHost": HOST}


def _connection_key() -> ConnectionKey:
    return ConnectionKey("gateway.example.com", 443, True, True, None, None, None, None)


_UNAV = (UpstreamUnavailableError, C.UNAVAILABLE)
_SLOW = (UpstreamTimeoutError, C.DEADLINE_EXCEEDED)


def _aiohttp_cases() -> dict[
    str, tuple[BaseException, tuple[type[BridgeError], grpc.StatusCode], str, str | None]
]:
    key = _connection_key()
    no_dns = socket.gaierror(-2, "Name or service not known")
    bad_status = aiohttp.ClientResponseError(None, (), status=400, message="Invalid response status")  # type: ignore[arg-type]
    return {
        "disconnected": (aiohttp.ServerDisconnectedError(), _UNAV, "UPSTREAM_CONNECTION_LOST", None),
        "refused": (
            aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused")),
            _UNAV,
            "UPSTREAM_UNREACHABLE",
            "connection refused",
        ),
        "dns": (
            aiohttp.ClientConnectorDNSError(key, no_dns),
            _UNAV,
            "UPSTREAM_UNREACHABLE",
            "name resolution failed",
        ),
        "connect-timeout": (aiohttp.ConnectionTimeoutError("connect"), _UNAV, "UPSTREAM_UNREACHABLE", None),
        "read-timeout": (aiohttp.SocketTimeoutError("read"), _SLOW, "UPSTREAM_TIMEOUT", None),
        "server-timeout": (aiohttp.ServerTimeoutError("read"), _SLOW, "UPSTREAM_TIMEOUT", None),
        "payload": (aiohttp.ClientPayloadError("incomplete"), _UNAV, "UPSTREAM_STREAM_TRUNCATED", None),
        "reset": (
            aiohttp.ClientOSError(104, "Connection reset by peer"),
            _UNAV,
            "UPSTREAM_CONNECTION_LOST",
            "connection reset by peer",
        ),
        "bad-response": (bad_status, (UpstreamProtocolError, C.INTERNAL), "UPSTREAM_INVALID_RESPONSE", None),
        "non-http-url": (
            aiohttp.NonHttpUrlClientError("ftp://x"),
            (BridgeError, C.INTERNAL),
            "INTERNAL",
            None,
        ),
    }


@pytest.mark.parametrize("case", list(_aiohttp_cases()))
def test_aiohttp_errors(case: str) -> None:
    raised, (error_class, code), reason, cause = _aiohttp_cases()[case]
    error = _from_aiohttp(raised)
    assert type(error) is error_class
    assert error.code is code
    info = _info(error)
    assert info.reason == reason
    assert info.metadata.get("cause") == cause
    # No library class names in the contract: not in the metadata, not in the message.
    assert set(info.metadata) <= {"upstreamHost", "correlationId", "cause"}
    assert "aiohttp" not in error.message
    assert "httpx" not in error.message


def test_aiohttp_messages_say_what_happened_in_the_bridge_words() -> None:
    # aiohttp's own text for a refused connection says "ssl:default" (a timeout "over TLS" to a reader);
    # the message says what the network said, plainly.
    refused = aiohttp.ClientConnectorError(
        _connection_key(), ConnectionRefusedError(111, "Connect call failed")
    )
    assert "ssl" in str(refused)
    error = _from_aiohttp(refused, address="127.0.0.1:9")
    assert error.message == "could not connect to upstream (127.0.0.1:9): connection refused"
    assert _info(error).reason == "UPSTREAM_UNREACHABLE"
    error = _from_aiohttp(aiohttp.ServerDisconnectedError())
    assert error.message == f"upstream closed the connection ({ADDRESS})"


def test_causes_are_described_from_the_chain() -> None:
    tls = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    assert describe_cause(httpx.ConnectError("x").with_traceback(None)) is None
    wrapped = httpx.ConnectError("boom")
    wrapped.__cause__ = tls
    assert describe_cause(wrapped) == "TLS certificate verification failed"
    assert describe_cause(OSError(101, "Network is unreachable")) == "network is unreachable"
    assert describe_cause(BrokenPipeError(32, "Broken pipe")) == "connection closed while sending"
    loop = httpx.ReadError("loop")
    loop.__context__ = loop  # a cycle in the chain ends the walk
    assert describe_cause(loop) is None


def test_every_aiohttp_client_error_has_an_aiohttp_entry() -> None:
    classes = [
        getattr(aiohttp.client_exceptions, name)
        for name in aiohttp.client_exceptions.__all__
        if isinstance(getattr(aiohttp.client_exceptions, name), type)
        and issubclass(getattr(aiohttp.client_exceptions, name), aiohttp.ClientError)
    ]
    assert len(classes) > 20
    for cls in classes:
        entry = next(base for base in cls.__mro__ if base in aiohttp_transport.EXCEPTIONS)
        assert entry.__module__.startswith("aiohttp"), cls


def _from_mock(exc: BaseException, address: str = ADDRESS) -> BridgeError:
    return MockTransport(lambda _: MockResponse()).error_for(exc, address=address, correlation_id=None)


EVERY_MAP = pytest.mark.parametrize("error_for", [_from_aiohttp, _from_httpx, _from_mock], ids=_name_of)


@EVERY_MAP
@pytest.mark.parametrize(
    ("exc", "error_class", "code"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), UpstreamUnavailableError, C.UNAVAILABLE),
        (ConnectionRefusedError(111, "Connection refused"), UpstreamUnavailableError, C.UNAVAILABLE),
        (socket.gaierror(-2, "Name or service not known"), UpstreamUnavailableError, C.UNAVAILABLE),
        (BrokenPipeError(32, "Broken pipe"), UpstreamUnavailableError, C.UNAVAILABLE),
        (TimeoutError(), UpstreamTimeoutError, C.DEADLINE_EXCEEDED),
    ],
)
def test_bare_os_errors(
    error_for: Any, exc: BaseException, error_class: type[BridgeError], code: grpc.StatusCode
) -> None:
    error = error_for(exc)
    assert (type(error), error.code) == (error_class, code)
    assert _info(error).reason in {"UPSTREAM_CONNECTION_LOST", "UPSTREAM_TIMEOUT", "UPSTREAM_UNREACHABLE"}


@EVERY_MAP
def test_unknown_exceptions_are_internal_and_keep_their_text_private(error_for: Any) -> None:
    error = error_for(KeyError("sk-live-secret-value in a dict"))
    assert type(error) is BridgeError
    assert error.code is C.INTERNAL
    assert error.message == "internal error (KeyError)"
    assert _info(error).reason == "INTERNAL"
    assert "secret" not in _everything_sent(error)


def _verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
    )
    error.verify_code = code
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    ("code", "openssl", "cause"),
    [
        (10, "certificate has expired", "certificate has expired"),
        (9, "certificate is not yet valid", "certificate is not yet valid"),
        (
            62,
            "Hostname mismatch, certificate is not valid for 'gw'.",
            "hostname mismatch, certificate is not valid for 'gw'",
        ),
        (
            20,
            "unable to get local issuer certificate",
            "unknown issuer (unable to get local issuer certificate)",
        ),
        (18, "self-signed certificate", "self-signed certificate"),
        (19, "self-signed certificate in certificate chain", "self-signed certificate in certificate chain"),
        (26, "unsuitable certificate purpose", "unsuitable certificate purpose"),
    ],
)
def test_a_certificate_failure_names_its_cause_whichever_library_wrapped_it(
    code: int, openssl: str, cause: str
) -> None:
    tls = _verification_error(code, openssl)
    expected = f"TLS certificate verification failed: {cause}"
    httpcore_style = httpx.ConnectError("x")
    httpcore_style.__cause__ = tls
    # aiohttp's certificate error is an SSLCertVerificationError itself, without OpenSSL's code and message.
    aiohttp_style = aiohttp.ClientConnectorCertificateError(_connection_key(), tls)
    for wrapped, error_for in ((httpcore_style, _from_httpx), (aiohttp_style, _from_aiohttp)):
        assert describe_cause(wrapped) == expected
        assert _info(error_for(wrapped)).metadata["cause"] == expected
