"""Tests for bridge.errors: status mapping, upstream error bodies, rich details, redaction.

Rich details are always read back the way a client reads them: the ``grpc-status-details-bin`` trailer of
``to_status()`` decoded with ``grpc_status.rpc_status.from_call`` and the ``Any`` details unpacked.
"""

from __future__ import annotations

import base64
import email.utils
import inspect
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from httpx_aiohttp.transport import map_aiohttp_exceptions
from hypothesis import given
from hypothesis import strategies as st

from bridge import errors
from bridge.errors import (
    HTTP_STATUS_TO_GRPC,
    MAX_MESSAGE_BYTES,
    TRANSPORT_ERRORS,
    BridgeError,
    InvalidRequestError,
    UpstreamError,
    UpstreamErrorBody,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamStreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_from_http_response,
    error_from_stream_event,
    error_from_transport_exception,
    grpc_code_for_http_status,
    invalid_request,
    parse_error_body,
    parse_retry_after,
    protocol_error,
    redact,
)

C = grpc.StatusCode
DOMAIN = "gateway.example.com"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------------------- helpers


class _FakeCall:
    """What rpc_status.from_call reads from a finished call, taken from a grpc.Status."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata


def _rich(error: BridgeError) -> status_pb2.Status:
    # from_call also checks that the trailer agrees with grpc-status and grpc-message.
    rich = rpc_status.from_call(_FakeCall(error.to_status()))
    assert rich is not None
    return rich


def _details(error: BridgeError) -> dict[type[Message], Message]:
    found: dict[type[Message], Message] = {}
    for packed in _rich(error).details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind] = message
    assert len(found) == len(_rich(error).details), "unexpected detail type"
    return found


def _info(error: BridgeError) -> error_details_pb2.ErrorInfo:
    info = _details(error)[error_details_pb2.ErrorInfo]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    return info


def _violations(error: BridgeError) -> list[tuple[str, str]]:
    bad = _details(error).get(error_details_pb2.BadRequest)
    if bad is None:
        return []
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad.field_violations]


def _retry_seconds(error: BridgeError) -> float | None:
    retry = _details(error).get(error_details_pb2.RetryInfo)
    if retry is None:
        return None
    assert isinstance(retry, error_details_pb2.RetryInfo)
    return float(retry.retry_delay.ToNanoseconds()) / 1e9


def _http(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> UpstreamHTTPError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_from_http_response(status, headers or {}, raw, domain=DOMAIN)


def _stream(data: Any, event: str = "message", correlation_id: str | None = "corr-1") -> Any:
    text = data if isinstance(data, str) else json.dumps(data)
    return error_from_stream_event(text, event=event, domain=DOMAIN, correlation_id=correlation_id)


def _everything_sent(error: BridgeError) -> str:
    """All text a client could see: message and every detail, as sent."""
    status = error.to_status()
    trailer = b"".join(value for _, value in status.trailing_metadata if isinstance(value, bytes))
    return status.details + trailer.decode("utf-8", "replace") + str(_details(error))


# --------------------------------------------------------------------------------------- hierarchy


def test_hierarchy() -> None:
    for cls in (InvalidRequestError, UpstreamError):
        assert issubclass(cls, BridgeError)
    upstream = (
        UpstreamHTTPError,
        UpstreamStreamError,
        UpstreamProtocolError,
        UpstreamUnavailableError,
        UpstreamTimeoutError,
    )
    for cls in upstream:
        assert issubclass(cls, UpstreamError)
    assert UpstreamUnavailableError("x").code is C.UNAVAILABLE
    assert UpstreamTimeoutError("x").code is C.DEADLINE_EXCEEDED
    assert UpstreamProtocolError("x").code is C.INTERNAL
    assert UpstreamProtocolError("x", code=C.UNAVAILABLE).code is C.UNAVAILABLE


def test_module_docstring_draws_every_error_class() -> None:
    classes = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BridgeError) and obj.__module__ == errors.__name__
    }
    assert len(classes) == 8
    tree = (errors.__doc__ or "").split("Hierarchy::")[1].split("\n\n")[1]
    drawn = {line.lstrip(" │├└─").split()[0] for line in tree.splitlines()}
    assert drawn == {cls.__name__ for cls in classes}
    assert drawn <= set(errors.__all__)


def test_to_status_round_trips_code_message_and_details() -> None:
    info = error_details_pb2.ErrorInfo(reason="SOME_REASON", domain=DOMAIN)
    error = BridgeError("boom", code=C.ABORTED, details=[info])
    status = error.to_status()
    assert status.code is C.ABORTED
    assert status.details == "boom"
    assert [key for key, _ in status.trailing_metadata] == ["grpc-status-details-bin"]
    rich = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    assert (rich.code, rich.message) == (C.ABORTED.value[0], "boom")
    assert _info(error) == info
    assert str(error) == "boom"


async def test_to_status_crosses_a_real_grpc_aio_server() -> None:
    error = _http(429, {"error": "rate_limit_exceeded", "message": "slow down"}, {"Retry-After": "7"})

    async def handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort_with_status(error.to_status())
        raise AssertionError("abort_with_status returned")

    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler(handler)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", {"M": method})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.T/M")(b"")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
    finally:
        await server.stop(None)
    rpc_error = caught.value
    assert rpc_error.code() is C.RESOURCE_EXHAUSTED
    assert rpc_error.details() == "upstream HTTP 429: slow down"
    trailer = dict(rpc_error.trailing_metadata() or ())["grpc-status-details-bin"]  # type: ignore[var-annotated,arg-type,index]
    rich = status_pb2.Status.FromString(trailer)
    kinds = {any_.TypeName() for any_ in rich.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"}


# ------------------------------------------------------------------------------------ HTTP -> gRPC

_EXPECTED_TABLE = {
    400: C.INVALID_ARGUMENT,
    401: C.UNAUTHENTICATED,
    403: C.PERMISSION_DENIED,
    404: C.NOT_FOUND,
    405: C.UNIMPLEMENTED,
    408: C.DEADLINE_EXCEEDED,
    409: C.ABORTED,
    410: C.NOT_FOUND,
    413: C.RESOURCE_EXHAUSTED,
    422: C.INVALID_ARGUMENT,
    429: C.RESOURCE_EXHAUSTED,
    499: C.CANCELLED,
    500: C.INTERNAL,
    501: C.UNIMPLEMENTED,
    502: C.UNAVAILABLE,
    503: C.UNAVAILABLE,
    504: C.DEADLINE_EXCEEDED,
}


def test_http_table_is_exactly_the_agreed_one() -> None:
    assert dict(HTTP_STATUS_TO_GRPC) == _EXPECTED_TABLE


@pytest.mark.parametrize(("status", "code"), sorted(_EXPECTED_TABLE.items()))
def test_every_table_status_maps_and_reaches_the_error(status: int, code: grpc.StatusCode) -> None:
    assert grpc_code_for_http_status(status) is code
    error = _http(status)
    assert error.code is code
    assert error.to_status().code is code
    assert error.http_status == status
    assert error.message == f"upstream returned HTTP {status}"
    info = _info(error)
    assert (info.reason, info.domain) == (f"HTTP_{status}", DOMAIN)
    assert dict(info.metadata) == {"http_status": str(status)}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (402, C.FAILED_PRECONDITION),
        (412, C.FAILED_PRECONDITION),
        (418, C.FAILED_PRECONDITION),
        (451, C.FAILED_PRECONDITION),
        (505, C.UNAVAILABLE),
        (520, C.UNAVAILABLE),
        (529, C.UNAVAILABLE),
        (599, C.UNAVAILABLE),
        (302, C.UNKNOWN),
        (200, C.UNKNOWN),
        (100, C.UNKNOWN),
        (600, C.UNKNOWN),
    ],
)
def test_statuses_outside_the_table_fall_back_by_class(status: int, code: grpc.StatusCode) -> None:
    assert grpc_code_for_http_status(status) is code


# ----------------------------------------------------------------------------------- error bodies

_LONG = "x" * 5000

_BODIES: list[tuple[str, bytes, UpstreamErrorBody]] = [
    (
        "openai",
        b'{"error":{"message":"Invalid value for \'messages\'.","type":"invalid_request_error",'
        b'"param":"messages","code":"invalid_value"}}',
        UpstreamErrorBody(
            message="Invalid value for 'messages'.",
            code="invalid_value",
            type="invalid_request_error",
            param="messages",
        ),
    ),
    (
        "openai-null-code",
        b'{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}',
        UpstreamErrorBody(message="The server had an error", type="server_error"),
    ),
    (
        "vllm-int-code",
        b'{"object":"error","error":{"message":"prompt too long","type":"BadRequestError",'
        b'"param":null,"code":400}}',
        UpstreamErrorBody(message="prompt too long", code="400", type="BadRequestError"),
    ),
    (
        "vllm-flat",
        b'{"object":"error","message":"bad temperature","type":"BadRequestError","param":"temperature",'
        b'"code":400}',
        UpstreamErrorBody(message="bad temperature", code="400", type="BadRequestError", param="temperature"),
    ),
    (
        "litellm-string-code",
        b'{"error":{"message":"litellm.APIError: boom","type":null,"param":null,"code":"500"}}',
        UpstreamErrorBody(message="litellm.APIError: boom", code="500"),
    ),
    (
        "google-status",
        b'{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}',
        UpstreamErrorBody(message="Quota exceeded", code="429", type="RESOURCE_EXHAUSTED"),
    ),
    (
        "prisme",
        b'{"error":"rate_limit_exceeded","message":"Rate limit exceeded","details":{"limit":100}}',
        UpstreamErrorBody(message="Rate limit exceeded", code="rate_limit_exceeded", details='{"limit":100}'),
    ),
    (
        "prisme-empty-details",
        b'{"error":"MODEL_NOT_ALLOWED","message":"Not for you","details":{}}',
        UpstreamErrorBody(message="Not for you", code="MODEL_NOT_ALLOWED"),
    ),
    (
        "error-is-a-sentence",
        b'{"error":"Internal Server Error"}',
        UpstreamErrorBody(message="Internal Server Error"),
    ),
    ("error-is-a-bare-code", b'{"error":"invalid_token"}', UpstreamErrorBody(code="invalid_token")),
    ("bare-message", b'{"message":"Something broke"}', UpstreamErrorBody(message="Something broke")),
    ("fastapi-str", b'{"detail":"Not Found"}', UpstreamErrorBody(message="Not Found")),
    (
        "fastapi-list",
        b'{"detail":[{"loc":["body","messages",0,"role"],"msg":"Field required","type":"missing"},'
        b'{"loc":["body","temperature"],"msg":"Input should be a valid number","type":"float_type"},'
        b'{"loc":"junk"},"junk"]}',
        UpstreamErrorBody(
            message="messages[0].role: Field required (and 1 more)",
            violations=(
                ("messages[0].role", "Field required"),
                ("temperature", "Input should be a valid number"),
            ),
        ),
    ),
    ("fastapi-dict", b'{"detail":{"message":"nope","x":1}}', UpstreamErrorBody(message="nope")),
    ("error-null-with-message", b'{"error":null,"message":"m"}', UpstreamErrorBody(message="m")),
    ("error-null-alone", b'{"error":null}', UpstreamErrorBody()),
    ("error-object-empty", b'{"error":{}}', UpstreamErrorBody()),
    ("error-message-not-a-string", b'{"error":{"message":{"a":1}}}', UpstreamErrorBody(message='{"a":1}')),
    ("unknown-shape", b'{"oops":"it failed"}', UpstreamErrorBody(message='{"oops":"it failed"}')),
    ("json-list", b'["a",1]', UpstreamErrorBody(message='["a",1]')),
    ("json-string", b'"just a string"', UpstreamErrorBody(message="just a string")),
    ("json-null", b"null", UpstreamErrorBody(message="null")),
    (
        "plain-text",
        b"upstream connect error or disconnect/reset",
        UpstreamErrorBody(message="upstream connect error or disconnect/reset"),
    ),
    ("text-whitespace", b"  line one\n\n\tline two  ", UpstreamErrorBody(message="line one line two")),
    ("empty", b"", UpstreamErrorBody()),
    ("blank", b" \r\n ", UpstreamErrorBody()),
    (
        "truncated-json",
        b'{"error": {"message": "cut',
        UpstreamErrorBody(message='{"error": {"message": "cut'),
    ),
    ("bom", b'\xef\xbb\xbf{"message":"with bom"}', UpstreamErrorBody(message="with bom")),
    ("not-utf8", b"caf\xe9 \xff", UpstreamErrorBody(message="caf\ufffd \ufffd")),
    (
        "html-title",
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway"
        b"</h1></center><hr><center>nginx</center></body></html>",
        UpstreamErrorBody(message="502 Bad Gateway"),
    ),
    (
        "html-no-title",
        b"<!DOCTYPE html><body><h1>Service &amp; friends</h1><p>down</p></body>",
        UpstreamErrorBody(message="Service & friends down"),
    ),
]


@pytest.mark.parametrize(("body", "expected"), [b[1:] for b in _BODIES], ids=[b[0] for b in _BODIES])
def test_parse_error_body_shapes(body: bytes, expected: UpstreamErrorBody) -> None:
    assert parse_error_body(body) == expected


def test_huge_bodies_are_capped() -> None:
    huge_html = b"<html><head><title>Oops</title></head><body>" + b"<p>filler</p>" * 500_000 + b"</body>"
    assert parse_error_body(huge_html).message == "Oops"
    huge_json = json.dumps({"error": {"message": _LONG * 400}}).encode()
    parsed = parse_error_body(huge_json)
    assert parsed.message is not None
    assert len(parsed.message.encode()) == MAX_MESSAGE_BYTES
    assert parsed.message.endswith("…")
    long_message = parse_error_body(json.dumps({"message": _LONG}).encode()).message
    assert long_message == "x" * (MAX_MESSAGE_BYTES - 3) + "…"  # the ellipsis is 3 bytes of UTF-8


def test_truncation_counts_bytes_and_never_splits_a_character() -> None:
    message = parse_error_body(("é" * 2000).encode()).message
    assert message is not None
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert message == "é" * ((MAX_MESSAGE_BYTES - 3) // 2) + "…"


def test_deeply_nested_json_does_not_blow_the_stack() -> None:
    parsed = parse_error_body(b"[" * 50_000)
    assert parsed.message is not None
    assert parsed.message.startswith("[[[")


@given(st.binary(max_size=2048))
def test_parse_error_body_never_raises_and_stays_bounded(body: bytes) -> None:
    parsed = parse_error_body(body)
    for value in (parsed.message, parsed.code, parsed.type, parsed.param, parsed.details):
        assert value is None or 0 < len(value.encode()) <= MAX_MESSAGE_BYTES


# --------------------------------------------------------------------------------- HTTP error replies


def test_http_error_message_says_it_came_from_upstream() -> None:
    error = _http(429, {"error": {"message": "Rate limit exceeded", "type": "requests"}})
    assert error.message == "upstream HTTP 429: Rate limit exceeded"
    assert error.body.message == "Rate limit exceeded"


def test_http_error_message_is_truncated() -> None:
    error = _http(500, {"error": {"message": _LONG}})
    assert len(error.message.encode()) == len("upstream HTTP 500: ") + MAX_MESSAGE_BYTES
    assert error.message.endswith("…")


def test_http_error_info_openai() -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    error = _http(400, body, {"X-Request-ID": "req_123"})
    info = _info(error)
    assert info.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert info.domain == DOMAIN
    assert dict(info.metadata) == {
        "http_status": "400",
        "correlation_id": "req_123",
        "upstream_code": "context_length_exceeded",
        "upstream_type": "invalid_request_error",
        "param": "messages",
    }
    assert error.correlation_id == "req_123"
    assert _violations(error) == [("messages", "This model's maximum context length is 8192 tokens")]


def test_http_error_info_prisme() -> None:
    body = {"error": "MODEL_NOT_ALLOWED", "message": "Not allowed", "details": {"model": "gpt-4o"}}
    headers = {"x-correlation-id": "c-42", "x-request-id": "ignored"}
    error = _http(403, body, headers)
    assert error.code is C.PERMISSION_DENIED
    info = _info(error)
    assert info.reason == "MODEL_NOT_ALLOWED"
    assert dict(info.metadata) == {
        "http_status": "403",
        "correlation_id": "c-42",
        "upstream_code": "MODEL_NOT_ALLOWED",
        "upstream_details": '{"model":"gpt-4o"}',
    }
    assert _violations(error) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"error": {"message": "m", "type": "BadRequestError", "code": 400}}, "BAD_REQUEST_ERROR"),
        ({"error": {"message": "m", "type": "HTTPException"}}, "HTTP_EXCEPTION"),
        ({"error": {"message": "m", "code": "model-not-found"}}, "MODEL_NOT_FOUND"),
        ({"error": {"message": "m", "code": "500"}}, "HTTP_502"),
        ({"error": {"message": "m", "code": "é"}}, "HTTP_502"),
        ({"error": {"message": "m", "code": "a" * 100}}, "A" * 63),
        ({"message": "m"}, "HTTP_502"),
    ],
)
def test_error_info_reason_is_upper_snake_case(body: Any, reason: str) -> None:
    info = _info(_http(502, body))
    assert info.reason == reason
    assert len(info.reason) <= 63


def test_http_original_code_is_kept_in_metadata() -> None:
    info = _info(_http(429, {"error": "rate_limit_exceeded", "message": "m"}))
    assert info.reason == "RATE_LIMIT_EXCEEDED"
    assert info.metadata["upstream_code"] == "rate_limit_exceeded"


def test_bad_request_from_fastapi_detail() -> None:
    body = {"detail": [{"loc": ["body", "messages", 0, "role"], "msg": "Field required", "type": "missing"}]}
    error = _http(422, body)
    assert error.code is C.INVALID_ARGUMENT
    assert error.message == "upstream HTTP 422: messages[0].role: Field required"
    assert _violations(error) == [("messages[0].role", "Field required")]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": {"message": "bad", "type": "invalid_request_error"}}),  # no param named
        (500, {"error": {"message": "bad", "param": "messages"}}),  # not a bad request
        (404, {"detail": [{"loc": ["body", "model"], "msg": "unknown"}]}),
    ],
)
def test_no_bad_request_without_a_named_field_on_400_or_422(status: int, body: Any) -> None:
    assert _violations(_http(status, body)) == []


# ---------------------------------------------------------------------------------------- Retry-After


def _http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (_http_date(NOW + timedelta(seconds=30)), 30.0),
        (_http_date(NOW - timedelta(hours=1)), 0.0),  # in the past: retry now
        ("Thursday, 01-Jan-26 12:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Thu Jan  1 12:00:05 2026", 5.0),  # asctime form, no zone: GMT
        ("garbage", None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("7 seconds", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_defaults_now_and_accepts_naive_now() -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    delay = parse_retry_after(_http_date(future))
    assert delay is not None
    assert 3500 < delay <= 3600
    assert parse_retry_after(_http_date(NOW + timedelta(seconds=9)), now=NOW.replace(tzinfo=None)) == 9.0


@pytest.mark.parametrize(
    ("headers", "retry_after", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0, 7.0),
        ({"retry-after": "7"}, 7.0, 7.0),
        ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5, 1.5),
        ({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0, 2.0),
        ({"Retry-After": "99999999999999"}, 99999999999999.0, 86_400.0),  # the detail is capped
        ({"Retry-After": "garbage"}, None, None),
        ({"Retry-After": "-3"}, None, None),
        ({}, None, None),
    ],
)
def test_retry_info_from_headers(
    headers: dict[str, str], retry_after: float | None, seconds: float | None
) -> None:
    error = _http(429, {"error": "rate_limit_exceeded", "message": "m"}, headers)
    assert error.retry_after == retry_after
    assert _retry_seconds(error) == seconds


def test_retry_info_from_http_date() -> None:
    moment = datetime.now(UTC) + timedelta(seconds=120)
    seconds = _retry_seconds(_http(503, b"", {"Retry-After": _http_date(moment)}))
    assert seconds is not None
    assert 100 <= seconds <= 121


# ----------------------------------------------------------------------------------- stream events

_STREAM_ERRORS: list[tuple[str, Any, str, grpc.StatusCode, str, str]] = [
    # id, data, event, code, reason, message
    (
        "openai",
        {"error": {"message": "provider failed", "type": "server_error", "code": "provider_error"}},
        "message",
        C.INTERNAL,
        "PROVIDER_ERROR",
        "upstream stream error: provider failed",
    ),
    (
        "openai-event-error",
        {"error": {"message": "provider failed", "type": "server_error", "code": None}},
        "error",
        C.INTERNAL,
        "SERVER_ERROR",
        "upstream stream error: provider failed",
    ),
    (
        "vllm-int-code",
        {"error": {"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}},
        "message",
        C.INVALID_ARGUMENT,
        "BAD_REQUEST_ERROR",
        "upstream stream error: too long",
    ),
    (
        "litellm-string-code",
        {"error": {"message": "litellm.APIError: x", "type": None, "code": "500"}},
        "message",
        C.INTERNAL,
        "STREAM_ERROR",
        "upstream stream error: litellm.APIError: x",
    ),
    (
        "litellm-429",
        {"error": {"message": "slow", "type": "throttling_error", "code": "429"}},
        "message",
        C.RESOURCE_EXHAUSTED,
        "THROTTLING_ERROR",
        "upstream stream error: slow",
    ),
    (
        "litellm-503",
        {"error": {"message": "down", "code": "503"}},
        "message",
        C.UNAVAILABLE,
        "STREAM_ERROR",
        "upstream stream error: down",
    ),
    (
        "prisme",
        {"error": "rate_limit_exceeded", "message": "Rate limit exceeded", "details": {}},
        "message",
        C.RESOURCE_EXHAUSTED,
        "RATE_LIMIT_EXCEEDED",
        "upstream stream error: Rate limit exceeded",
    ),
    (
        "anthropic-overloaded",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        "message",
        C.UNAVAILABLE,
        "OVERLOADED_ERROR",
        "upstream stream error: Overloaded",
    ),
    (
        "camel-case-transient",
        {"error": {"message": "m", "type": "ServiceUnavailableError"}},
        "message",
        C.UNAVAILABLE,
        "SERVICE_UNAVAILABLE_ERROR",
        "upstream stream error: m",
    ),
    (
        "timeout",
        {"error": {"message": "m", "type": "APITimeoutError"}},
        "message",
        C.UNAVAILABLE,
        "API_TIMEOUT_ERROR",
        "upstream stream error: m",
    ),
    (
        "code-not-http",
        {"error": {"message": "m", "code": 200}},
        "message",
        C.INTERNAL,
        "STREAM_ERROR",
        "upstream stream error: m",
    ),
    (
        "event-error-text",
        "the model crashed",
        "error",
        C.INTERNAL,
        "STREAM_ERROR",
        "upstream stream error: the model crashed",
    ),
    ("event-error-empty", "", "error", C.INTERNAL, "STREAM_ERROR", "upstream stream error"),
    (
        "event-error-done",
        "[DONE]",
        "error",
        C.INTERNAL,
        "STREAM_ERROR",
        "upstream stream error: [DONE]",
    ),
]


@pytest.mark.parametrize(
    ("data", "event", "code", "reason", "message"),
    [s[1:] for s in _STREAM_ERRORS],
    ids=[s[0] for s in _STREAM_ERRORS],
)
def test_stream_error_events(data: Any, event: str, code: grpc.StatusCode, reason: str, message: str) -> None:
    error = _stream(data, event)
    assert isinstance(error, UpstreamStreamError)
    assert error.code is code
    assert error.message == message
    assert error.to_status().code is code
    info = _info(error)
    assert (info.reason, info.domain) == (reason, DOMAIN)
    assert info.metadata["correlation_id"] == "corr-1"
    assert error.correlation_id == "corr-1"


def test_stream_error_metadata_keeps_the_originals() -> None:
    data = {"error": {"message": "m", "type": "BadRequestError", "param": "n", "code": 400}}
    error = _stream(data, correlation_id=None)
    assert dict(_info(error).metadata) == {
        "upstream_code": "400",
        "upstream_type": "BadRequestError",
        "param": "n",
    }
    assert error.correlation_id is None


_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
}


@pytest.mark.parametrize(
    "data",
    [
        _CHUNK,
        {**_CHUNK, "choices": [{"index": 0, "delta": {"content": 'the "error" key is {"error": 1}'}}]},
        {**_CHUNK, "choices": [{"index": 0, "delta": {"content": "error"}, "error": {"message": "nested"}}]},
        {**_CHUNK, "error": None},
        {**_CHUNK, "error": ""},
        {**_CHUNK, "usage": {"prompt_tokens": 1}, "choices": []},
        '{"error": broken json',
        '["error"]',
        '"error"',
        "[DONE]",
        "",
    ],
    ids=[
        "chunk",
        "content-mentions-error",
        "nested-error-key",
        "error-null",
        "error-empty",
        "usage",
        "bad-json",
        "json-list",
        "json-string",
        "done",
        "empty",
    ],
)
def test_ordinary_events_are_not_errors(data: Any) -> None:
    assert _stream(data) is None


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
    missing = [cls.__name__ for cls in classes if cls not in TRANSPORT_ERRORS]
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


def test_http_status_error_reads_its_response() -> None:
    response = httpx.Response(
        429, headers={"Retry-After": "3"}, content=b'{"message":"slow"}', request=_REQUEST
    )
    error = error_from_transport_exception(
        httpx.HTTPStatusError("429", request=_REQUEST, response=response), domain=DOMAIN
    )
    assert isinstance(error, UpstreamHTTPError)
    assert (error.code, error.message) == (C.RESOURCE_EXHAUSTED, "upstream HTTP 429: slow")
    assert _retry_seconds(error) == 3.0
    unread = httpx.Response(502, stream=httpx.ByteStream(b"never read"), request=_REQUEST)
    error = error_from_transport_exception(
        httpx.HTTPStatusError("502", request=_REQUEST, response=unread), domain=DOMAIN
    )
    assert (error.code, error.message) == (C.UNAVAILABLE, "upstream returned HTTP 502")


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
        entry = next(base for base in cls.__mro__ if base in TRANSPORT_ERRORS)
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


# ----------------------------------------------------------------------------------- protocol errors


def test_protocol_error() -> None:
    error = protocol_error(
        "invalid JSON chunk: {bad", domain=DOMAIN, reason="invalid_json", correlation_id="c"
    )
    assert isinstance(error, UpstreamProtocolError)
    assert (error.code, error.message) == (C.INTERNAL, "upstream protocol error: invalid JSON chunk: {bad")
    info = _info(error)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_JSON",
        DOMAIN,
        {"correlation_id": "c"},
    )
    truncated = protocol_error(
        "stream ended without [DONE]", domain=DOMAIN, reason="TRUNCATED_STREAM", code=C.UNAVAILABLE
    )
    assert truncated.code is C.UNAVAILABLE
    assert _info(truncated).reason == "TRUNCATED_STREAM"


# -------------------------------------------------------------------------------------------- redaction

_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
_SECRETS = {
    "bearer": ("Authorization: Bearer abc.DEF-123_xyz~+/=", "abc.DEF-123_xyz"),
    "bearer-lower": ("header was bearer opaque0token1", "opaque0token1"),
    "iak": ("key iak_acme_7f0e9a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b rejected", "iak_acme_7f0e"),
    "sk": ("Incorrect API key provided: sk-abcdEFGH1234ijkl", "sk-abcdEFGH1234ijkl"),
    "sk-proj": ("key sk-proj-AbC_dEf-123456 is revoked", "AbC_dEf-123456"),
    "sk-litellm": ("master key sk-1234.", "sk-1234"),
    "jwt": (f"token {_JWT} expired", "dozjgNryP4J3"),
    "jwt-unsigned": ("token eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. used", "eyJzdWIiOiJ4In0"),
    "api-key-query": ("GET https://x/v1?api_key=hunter2hunter2&x=1", "hunter2hunter2"),
    "api-key-json": ('{"x-prismeai-api-key": "not-an-iak-format-key"}', "not-an-iak-format-key"),
    "password": ("password=Tr0ub4dor&3", "Tr0ub4dor"),
}


@pytest.mark.parametrize(("text", "secret"), list(_SECRETS.values()), ids=list(_SECRETS))
def test_redact_removes_secrets(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[REDACTED]" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "api.openai.com returned 502",
        "task-force risk-free desk-top",
        "version 1.2.3 of eyJ-less text",
        "Bearer",
        "messages[0].role: must not be empty",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_keeps_the_auth_scheme() -> None:
    assert redact("Authorization: Bearer abc123") == "Authorization: Bearer [REDACTED]"


@given(st.text(max_size=300))
def test_redact_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize(("text", "secret"), list(_SECRETS.values()), ids=list(_SECRETS))
def test_secrets_never_reach_http_errors(text: str, secret: str) -> None:
    body = {
        "error": {"message": text, "type": text, "param": text, "code": text},
    }
    headers = {"x-correlation-id": text, "Retry-After": "1"}
    for status in (400, 401, 500):
        sent = _everything_sent(_http(status, body, headers))
        assert secret not in sent
    prisme = {"error": "invalid_token", "message": text, "details": {"auth": text}}
    assert secret not in _everything_sent(_http(401, prisme))
    fastapi = {"detail": [{"loc": ["body", text], "msg": text}]}
    assert secret not in _everything_sent(_http(422, fastapi))
    assert secret not in _everything_sent(_http(502, text.encode()))


@pytest.mark.parametrize(("text", "secret"), list(_SECRETS.values()), ids=list(_SECRETS))
def test_secrets_never_reach_stream_or_transport_errors(text: str, secret: str) -> None:
    stream = _stream({"error": {"message": text, "type": text, "code": text}}, correlation_id=text)
    assert stream is not None
    assert secret not in _everything_sent(stream)
    event = _stream(text, event="error")
    assert secret not in _everything_sent(event)
    transport = error_from_transport_exception(httpx.ConnectError(text), domain=DOMAIN)
    assert secret not in _everything_sent(transport)
    assert secret not in _everything_sent(
        protocol_error(text, domain=DOMAIN, reason="X_Y", correlation_id=text)
    )


def test_secret_in_huge_message_is_redacted_before_truncation() -> None:
    text = "x" * (MAX_MESSAGE_BYTES - 8) + " Bearer abcdefghijklmnop"
    error = _http(500, {"message": text})
    assert "abcdefgh" not in error.message


# ---------------------------------------------------------------------------------- invalid requests


def test_invalid_request_names_the_first_violation() -> None:
    error = invalid_request([("messages[0].role", "must not be empty")])
    assert isinstance(error, InvalidRequestError)
    assert error.code is C.INVALID_ARGUMENT
    assert error.message == "invalid request: messages[0].role: must not be empty"
    assert _violations(error) == [("messages[0].role", "must not be empty")]
    assert error.violations == (("messages[0].role", "must not be empty"),)


def test_invalid_request_counts_the_rest() -> None:
    violations = [("model", "must not be empty"), ("messages", "must contain at least one message")]
    error = invalid_request(violations)
    assert error.message == "invalid request: model: must not be empty (and 1 more)"
    assert _violations(error) == violations


def _trailer_bytes(status: grpc.Status) -> int:
    # As on the wire: grpc-message percent-encoded, -bin values base64.
    message = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in status.details.encode())
    return message + sum(len(base64.b64encode(value)) for _, value in status.trailing_metadata)


def test_many_violations_stay_within_what_clients_accept() -> None:
    violations = [(f"messages[{i}].role", "must not be empty: use system, user, ...") for i in range(500)]
    error = invalid_request(violations)
    assert error.message.endswith("(and 499 more)")
    assert len(_violations(error)) == 10
    assert error.violations == tuple(violations)
    assert _trailer_bytes(error.to_status()) < 8 * 1024


def test_oversized_status_sheds_details_but_keeps_code_and_message() -> None:
    info = error_details_pb2.ErrorInfo(reason="R_R", domain=DOMAIN, metadata={"k": "v" * 200})
    bad_request = invalid_request([("f" * 300, "d" * 300)] * 10).details[0]
    error = BridgeError("é" * 5000, code=C.UNAVAILABLE, details=[info, bad_request])
    status = error.to_status()
    assert _trailer_bytes(status) <= 7 * 1024
    assert status.code is C.UNAVAILABLE
    assert len(status.details.encode()) <= 1280
    assert status.details.endswith("…")
    assert list(_details(error)) == [error_details_pb2.ErrorInfo]  # BadRequest, the last, went first


def test_invalid_request_custom_message_and_none() -> None:
    assert invalid_request([("a", "b")], "nope").message == "nope"
    empty = invalid_request([])
    assert empty.message == "invalid request"
    assert _details(empty) == {}
    assert empty.to_status().code is C.INVALID_ARGUMENT
