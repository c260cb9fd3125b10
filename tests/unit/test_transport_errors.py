"""bridge.http.transport_errors: every httpx and aiohttp exception maps to a bridge error."""

from __future__ import annotations

import aiohttp
import grpc
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey
from httpx_aiohttp.transport import map_aiohttp_exceptions

from bridge.errors import (
    BridgeError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from bridge.http.transport_errors import EXCEPTION_MAP, error_from_transport_exception
from tests.helpers import DOMAIN
from tests.helpers import error_info as _info
from tests.helpers import everything_sent as _everything_sent

C = grpc.StatusCode


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


def test_every_httpx_exception_is_mapped() -> None:
    classes = _httpx_exception_classes()
    assert len(classes) >= 28
    assert set(classes) == set(_HTTPX_EXPECTED)
    missing = [cls.__name__ for cls in classes if cls not in EXCEPTION_MAP]
    assert missing == []


@pytest.mark.parametrize("cls", list(_HTTPX_EXPECTED), ids=lambda cls: cls.__name__)
def test_httpx_exception_mapping(cls: type[Exception]) -> None:
    error_class, code = _HTTPX_EXPECTED[cls]
    error = error_from_transport_exception(_make_httpx(cls), domain=DOMAIN)
    assert type(error) is error_class
    assert error.code is code
    assert error.to_status().code is code
    info = _info(error)
    assert info.domain == DOMAIN
    assert info.reason


def test_transport_message_and_error_info() -> None:
    error = error_from_transport_exception(
        httpx.ConnectError("All connection attempts failed"), domain=DOMAIN
    )
    assert error.message == "could not connect to upstream: All connection attempts failed"
    info = _info(error)
    assert info.reason == "CONNECT_ERROR"
    assert dict(info.metadata) == {"exception": "httpx.ConnectError"}
    quiet = error_from_transport_exception(httpx.ReadTimeout(""), domain=DOMAIN)
    assert quiet.message == "timed out waiting for upstream data"
    assert _info(quiet).reason == "READ_TIMEOUT"


def test_http_status_error_takes_the_code_of_its_response() -> None:
    # The client never raises it (it reads every reply's status); the status alone still decides.
    response = httpx.Response(429, content=b'{"message":"slow"}', request=_REQUEST)
    error = error_from_transport_exception(
        httpx.HTTPStatusError("429", request=_REQUEST, response=response), domain=DOMAIN
    )
    assert isinstance(error, UpstreamHTTPError)
    assert (error.code, error.message, error.http_status) == (
        C.RESOURCE_EXHAUSTED,
        "upstream returned HTTP 429",
        429,
    )


def _through_httpx_aiohttp(exc: BaseException) -> BaseException:
    """What the transport lets out when aiohttp raises ``exc``: httpx-aiohttp's own translation."""
    try:
        with map_aiohttp_exceptions():
            raise exc
    except Exception as let_out:
        return let_out
    raise AssertionError("unreachable")


def _connection_key() -> ConnectionKey:
    return ConnectionKey("gateway.example.com", 443, True, True, None, None, None, None)


_UNAV = (UpstreamUnavailableError, C.UNAVAILABLE)
_SLOW = (UpstreamTimeoutError, C.DEADLINE_EXCEEDED)


def _aiohttp_cases() -> dict[str, tuple[BaseException, tuple[type[BridgeError], grpc.StatusCode], str]]:
    key = _connection_key()
    no_dns = OSError(-2, "Name or service not known")
    bad_status = aiohttp.ClientResponseError(None, (), status=400, message="Invalid response status")  # type: ignore[arg-type]
    return {
        "disconnected": (aiohttp.ServerDisconnectedError(), _UNAV, "SERVER_DISCONNECTED_ERROR"),
        "refused": (
            aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused")),
            _UNAV,
            "CLIENT_CONNECTOR_ERROR",
        ),
        "dns": (aiohttp.ClientConnectorDNSError(key, no_dns), _UNAV, "CLIENT_CONNECTOR_DNS_ERROR"),
        "connect-timeout": (aiohttp.ConnectionTimeoutError("connect"), _UNAV, "CONNECTION_TIMEOUT_ERROR"),
        "read-timeout": (aiohttp.SocketTimeoutError("read"), _SLOW, "SOCKET_TIMEOUT_ERROR"),
        "server-timeout": (aiohttp.ServerTimeoutError("read"), _SLOW, "SERVER_TIMEOUT_ERROR"),
        "payload": (aiohttp.ClientPayloadError("incomplete"), _UNAV, "CLIENT_PAYLOAD_ERROR"),
        "reset": (aiohttp.ClientOSError(104, "Connection reset by peer"), _UNAV, "CLIENT_OS_ERROR"),
        "bad-response": (bad_status, (UpstreamProtocolError, C.INTERNAL), "CLIENT_RESPONSE_ERROR"),
        "non-http-url": (
            aiohttp.NonHttpUrlClientError("ftp://x"),
            (BridgeError, C.INTERNAL),
            "NON_HTTP_URL_CLIENT_ERROR",
        ),
    }


@pytest.mark.parametrize("case", list(_aiohttp_cases()))
def test_aiohttp_errors_through_httpx_aiohttp(case: str) -> None:
    raised, (error_class, code), reason = _aiohttp_cases()[case]
    let_out = _through_httpx_aiohttp(raised)
    error = error_from_transport_exception(let_out, domain=DOMAIN)
    assert type(error) is error_class
    assert error.code is code
    info = _info(error)
    assert info.reason == reason
    assert info.metadata["exception"].startswith("aiohttp.")
    if let_out is not raised:  # translated: say what httpx-aiohttp called it
        assert info.metadata["raised_as"] == f"httpx.{type(let_out).__name__}"


def test_httpx_aiohttp_lossy_translation_is_undone() -> None:
    # httpx-aiohttp turns a mid-stream disconnect into httpx.ConnectTimeout; the cause tells the truth.
    let_out = _through_httpx_aiohttp(aiohttp.ServerDisconnectedError())
    assert type(let_out) is httpx.ConnectTimeout
    error = error_from_transport_exception(let_out, domain=DOMAIN)
    assert error.message == "upstream closed the connection: Server disconnected"


def test_every_aiohttp_client_error_has_an_aiohttp_entry() -> None:
    classes = [
        getattr(aiohttp.client_exceptions, name)
        for name in aiohttp.client_exceptions.__all__
        if isinstance(getattr(aiohttp.client_exceptions, name), type)
        and issubclass(getattr(aiohttp.client_exceptions, name), aiohttp.ClientError)
    ]
    assert len(classes) > 20
    for cls in classes:
        entry = next(base for base in cls.__mro__ if base in EXCEPTION_MAP)
        assert entry.__module__.startswith("aiohttp"), cls


@pytest.mark.parametrize(
    ("exc", "error_class", "code"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), UpstreamUnavailableError, C.UNAVAILABLE),
        (BrokenPipeError(32, "Broken pipe"), UpstreamUnavailableError, C.UNAVAILABLE),
        (TimeoutError(), UpstreamTimeoutError, C.DEADLINE_EXCEEDED),
    ],
)
def test_bare_os_errors(exc: BaseException, error_class: type[BridgeError], code: grpc.StatusCode) -> None:
    error = error_from_transport_exception(exc, domain=DOMAIN)
    assert (type(error), error.code) == (error_class, code)


def test_unknown_exceptions_are_internal_and_keep_their_text_private() -> None:
    error = error_from_transport_exception(KeyError("sk-live-secret-value in a dict"), domain=DOMAIN)
    assert type(error) is BridgeError
    assert error.code is C.INTERNAL
    assert error.message == "internal error (KeyError)"
    assert "secret" not in _everything_sent(error)
