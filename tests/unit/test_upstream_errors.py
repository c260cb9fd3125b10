"""bridge.upstream.errors: upstream error replies (ErrorInfo, RetryInfo, BadRequest) and in-stream errors."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from bridge.errors import (
    UpstreamStreamError,
)
from bridge.redaction import MAX_TEXT_BYTES
from tests.helpers import DOMAIN
from tests.helpers import error_info as _info
from tests.helpers import error_violations as _violations
from tests.helpers import http_error as _http
from tests.helpers import retry_seconds as _retry_seconds
from tests.helpers import stream_error as _stream

C = grpc.StatusCode


# --------------------------------------------------------------------------------- HTTP error replies


def test_http_error_message_says_it_came_from_upstream() -> None:
    error = _http(429, {"error": {"message": "Rate limit exceeded", "type": "requests"}})
    assert error.message == "upstream HTTP 429: Rate limit exceeded"
    assert _info(error).metadata["upstream_type"] == "requests"


def test_http_error_message_is_truncated() -> None:
    error = _http(500, {"error": {"message": "x" * 5000}})
    assert len(error.message.encode()) == len("upstream HTTP 500: ") + MAX_TEXT_BYTES
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
    seconds = _retry_seconds(
        _http(503, b"", {"Retry-After": email.utils.format_datetime(moment, usegmt=True)})
    )
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
