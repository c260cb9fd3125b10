"""bridge.upstream.errors: upstream error replies (ErrorInfo, RetryInfo, BadRequest) and in-stream errors."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from bridge.errors import (
    Reason,
    UpstreamStreamError,
)
from bridge.redaction import MAX_TEXT_BYTES
from bridge.upstream.errors import OPENAI_COMPATIBLE, error_from_document
from tests.helpers import HOST
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
    assert _info(error).metadata["upstreamType"] == "requests"


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
    assert info.reason == "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"
    assert info.domain == "grpc-bridge.prisme.ai"
    assert dict(info.metadata) == {
        "httpStatus": "400",
        "upstreamHost": HOST,
        "correlationId": "req_123",
        "upstreamCode": "context_length_exceeded",
        "upstreamType": "invalid_request_error",
        "upstreamParam": "messages",
    }
    assert error.correlation_id == "req_123"
    assert _violations(error) == [("messages", "This model's maximum context length is 8192 tokens")]


def test_http_error_info_prisme() -> None:
    body = {"error": "MODEL_NOT_ALLOWED", "message": "Not allowed", "details": {"model": "gpt-4o"}}
    headers = {"x-correlation-id": "c-42", "x-request-id": "ignored"}
    error = _http(403, body, headers)
    assert error.code is C.PERMISSION_DENIED
    info = _info(error)
    assert info.reason == "UPSTREAM_PERMISSION_DENIED"
    assert dict(info.metadata) == {
        "httpStatus": "403",
        "upstreamHost": HOST,
        "correlationId": "c-42",
        "upstreamCode": "MODEL_NOT_ALLOWED",
        "upstreamDetails": '{"model":"gpt-4o"}',
    }
    assert _violations(error) == []


@pytest.mark.parametrize(
    ("status", "body", "code", "reason"),
    [
        # What the upstream names refines the status, within the status's code...
        (429, {"error": "rate_limit_exceeded", "message": "m"}, C.RESOURCE_EXHAUSTED,
         "UPSTREAM_RATE_LIMITED"),
        (429, {"error": "quota_exceeded", "message": "m"}, C.RESOURCE_EXHAUSTED, "UPSTREAM_QUOTA_EXCEEDED"),
        (429, {"error": {"message": "m", "code": "insufficient_quota"}}, C.RESOURCE_EXHAUSTED,
         "UPSTREAM_QUOTA_EXCEEDED"),
        (400, {"error": {"message": "m", "code": "content_filter"}}, C.INVALID_ARGUMENT,
         "UPSTREAM_CONTENT_FILTERED"),
        (400, {"error": {"message": "m", "type": "BadRequestError", "code": 400}}, C.INVALID_ARGUMENT,
         "UPSTREAM_INVALID_REQUEST"),
        (404, {"error": {"message": "m", "code": "model_not_found"}}, C.NOT_FOUND, "UPSTREAM_NOT_FOUND"),
        (401, {"error": {"message": "m", "code": "invalid_api_key"}}, C.UNAUTHENTICATED,
         "UPSTREAM_UNAUTHENTICATED"),
        # ...never against it: the status decides the code; a reason contradicting it is not used.
        (502, {"error": {"message": "m", "code": "rate_limit_exceeded"}}, C.UNAVAILABLE,
         "UPSTREAM_UNAVAILABLE"),
        (504, {"error": {"message": "m", "type": "timeout"}}, C.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
        (500, {"error": {"message": "m", "code": "é"}}, C.INTERNAL, "UPSTREAM_ERROR"),
        # A bare 500 says only "it failed": what the upstream names decides, as it does in a stream.
        (500, {"error": {"message": "litellm.APIConnectionError: x", "code": "500"}}, C.UNAVAILABLE,
         "UPSTREAM_UNAVAILABLE"),
        (500, {"error": {"message": "m", "type": "overloaded_error"}}, C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        (500, {"message": "m"}, C.INTERNAL, "UPSTREAM_ERROR"),
        # Governance refusals the status does not carry: the code follows the upstream's code...
        (403, {"error": "INVALID_DIMENSIONS", "message": "m"}, C.INVALID_ARGUMENT,
         "UPSTREAM_INVALID_REQUEST"),
        (400, {"error": "INVALID_DIMENSIONS", "message": "m"}, C.INVALID_ARGUMENT,
         "UPSTREAM_INVALID_REQUEST"),
        (422, {"error": "INVALID_DIMENSIONS", "message": "m"}, C.INVALID_ARGUMENT,
         "UPSTREAM_INVALID_REQUEST"),
        (400, {"error": "MODEL_NOT_ALLOWED", "message": "m"}, C.PERMISSION_DENIED,
         "UPSTREAM_PERMISSION_DENIED"),
        (404, {"error": "MODEL_NOT_ALLOWED", "message": "m"}, C.PERMISSION_DENIED,
         "UPSTREAM_PERMISSION_DENIED"),
        (400, {"error": {"message": "m", "type": "invalid_request_error", "code": "model_not_allowed"}},
         C.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED"),
        # ...but a 429 asks the caller to wait, whatever it carries.
        (429, {"error": "MODEL_NOT_ALLOWED", "message": "m"}, C.RESOURCE_EXHAUSTED,
         "UPSTREAM_RATE_LIMITED"),
        (429, {"error": "INVALID_DIMENSIONS", "message": "m"}, C.RESOURCE_EXHAUSTED,
         "UPSTREAM_RATE_LIMITED"),
    ],
)  # fmt: skip
def test_http_errors_get_a_stable_reason(status: int, body: Any, code: grpc.StatusCode, reason: str) -> None:
    error = _http(status, body)
    assert (error.code, _info(error).reason) == (code, reason)
    assert _info(error).reason in set(Reason)


DIMENSIONS = "dimensions=4 is not supported: use one of [256, 1536]"


@pytest.mark.parametrize("status", [400, 403, 422])
def test_invalid_dimensions_blames_the_dimensions_field(status: int) -> None:
    error = _http(status, {"error": "INVALID_DIMENSIONS", "message": DIMENSIONS, "details": {}})
    assert _violations(error) == [("dimensions", DIMENSIONS)]
    metadata = _info(error).metadata
    assert (metadata["upstreamCode"], metadata["httpStatus"]) == ("INVALID_DIMENSIONS", str(status))


def test_a_field_the_upstream_names_wins_over_the_refused_field() -> None:
    body = {"error": {"message": "bad", "code": "INVALID_DIMENSIONS", "param": "dims"}}
    assert _violations(_http(400, body)) == [("dims", "bad")]


def test_a_throttled_refusal_keeps_its_retry_info_and_blames_no_field() -> None:
    for code in ("MODEL_NOT_ALLOWED", "INVALID_DIMENSIONS"):
        throttled = _http(429, {"error": code, "message": "m"}, {"Retry-After": "7"})
        assert _retry_seconds(throttled) == 7.0
        assert _violations(throttled) == []
        assert _info(throttled).metadata["upstreamCode"] == code


def test_http_original_code_is_kept_in_metadata() -> None:
    info = _info(_http(429, {"error": "rate_limit_exceeded", "message": "m"}))
    assert info.reason == "UPSTREAM_RATE_LIMITED"
    assert info.metadata["upstreamCode"] == "rate_limit_exceeded"


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
        "UPSTREAM_ERROR",
        "upstream stream error: provider failed",
    ),
    (
        "openai-event-error",
        {"error": {"message": "provider failed", "type": "server_error", "code": None}},
        "error",
        C.INTERNAL,
        "UPSTREAM_ERROR",
        "upstream stream error: provider failed",
    ),
    (
        "vllm-int-code",
        {"error": {"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}},
        "message",
        C.INVALID_ARGUMENT,
        "UPSTREAM_INVALID_REQUEST",
        "upstream stream error: too long",
    ),
    (
        "litellm-string-code",
        {"error": {"message": "litellm.APIError: x", "type": None, "code": "500"}},
        "message",
        C.INTERNAL,
        "UPSTREAM_ERROR",
        "upstream stream error: litellm.APIError: x",
    ),
    (
        "litellm-429",
        {"error": {"message": "slow", "type": "throttling_error", "code": "429"}},
        "message",
        C.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
        "upstream stream error: slow",
    ),
    (
        "litellm-503",
        {"error": {"message": "down", "code": "503"}},
        "message",
        C.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        "upstream stream error: down",
    ),
    (
        "prisme",
        {"error": "rate_limit_exceeded", "message": "Rate limit exceeded", "details": {}},
        "message",
        C.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
        "upstream stream error: Rate limit exceeded",
    ),
    (
        "anthropic-overloaded",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        "message",
        C.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        "upstream stream error: Overloaded",
    ),
    (
        "camel-case-transient",
        {"error": {"message": "m", "type": "ServiceUnavailableError"}},
        "message",
        C.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        "upstream stream error: m",
    ),
    (
        "timeout",
        {"error": {"message": "m", "type": "APITimeoutError"}},
        "message",
        C.UNAVAILABLE,
        "UPSTREAM_TIMEOUT",
        "upstream stream error: m",
    ),
    (
        "code-not-http",
        {"error": {"message": "m", "code": 200}},
        "message",
        C.INTERNAL,
        "UPSTREAM_ERROR",
        "upstream stream error: m",
    ),
    (
        "event-error-text",
        "the model crashed",
        "error",
        C.INTERNAL,
        "UPSTREAM_ERROR",
        "upstream stream error: the model crashed",
    ),
    ("event-error-empty", "", "error", C.INTERNAL, "UPSTREAM_ERROR", "upstream stream error"),
    *(
        # A LiteLLM proxy names the exception behind an in-stream error and sends code "500" for most of
        # them: the class decides, so a caller retries a connection failure and fixes an overlong prompt.
        (
            f"litellm-{name}",
            {
                "error": {
                    "message": f"litellm.{name}: {name}: details",
                    "type": None,
                    "param": None,
                    "code": "500",
                }
            },
            "message",
            code,
            reason,
            f"upstream stream error: litellm.{name}: {name}: details",
        )
        for name, code, reason in [
            ("APIConnectionError", C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
            ("ServiceUnavailableError", C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
            ("Timeout", C.UNAVAILABLE, "UPSTREAM_TIMEOUT"),
            ("RateLimitError", C.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
            ("ContextWindowExceededError", C.INVALID_ARGUMENT, "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"),
            ("ContentPolicyViolationError", C.INVALID_ARGUMENT, "UPSTREAM_CONTENT_FILTERED"),
            ("BadRequestError", C.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST"),
            ("AuthenticationError", C.UNAUTHENTICATED, "UPSTREAM_UNAUTHENTICATED"),
            ("PermissionDeniedError", C.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED"),
            ("NotFoundError", C.NOT_FOUND, "UPSTREAM_NOT_FOUND"),
            ("InternalServerError", C.INTERNAL, "UPSTREAM_ERROR"),  # unclassified: its "500" decides
        ]
    ),
    (
        "event-error-done",
        "[DONE]",
        "error",
        C.INTERNAL,
        "UPSTREAM_ERROR",
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
    assert (info.reason, info.domain) == (reason, "grpc-bridge.prisme.ai")
    assert info.metadata["correlationId"] == "corr-1"
    assert info.metadata["upstreamHost"] == HOST
    assert error.correlation_id == "corr-1"


def test_stream_error_metadata_keeps_the_originals() -> None:
    data = {"error": {"message": "m", "type": "BadRequestError", "param": "n", "code": 400}}
    error = _stream(data, correlation_id=None)
    assert dict(_info(error).metadata) == {
        "upstreamHost": HOST,
        "upstreamCode": "400",
        "upstreamType": "BadRequestError",
        "upstreamParam": "n",
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


class _UnreadHeaders(dict[str, str]):
    """Reply headers that fail the test if anything reads them."""

    def get(self, *_: Any) -> Any:  # type: ignore[override]
        raise AssertionError("the headers of a reply that reports no error were read")


@pytest.mark.parametrize(
    "doc",
    [
        {"id": "x", "choices": []},
        {"error": None},
        {"error": False},
        {"error": ""},
        {"error": 0},
        [1],
        "s",
        None,
    ],
)
def test_a_document_that_reports_no_error_is_read_without_its_headers(doc: Any) -> None:
    assert OPENAI_COMPATIBLE.from_document(doc, _UnreadHeaders(), host=HOST) is None
    assert error_from_document(doc, host=HOST, correlation_id=None) is None


@pytest.mark.parametrize(
    "doc",
    [
        {"error": "overloaded"},
        {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}},
        {"error": {"message": "bad", "code": 400}, "choices": []},
        {"error": True},
    ],
)
def test_a_document_that_reports_an_error_gets_the_reply_s_correlation_id(doc: Any) -> None:
    error = OPENAI_COMPATIBLE.from_document(doc, {"x-correlation-id": "corr-9"}, host=HOST)
    expected = error_from_document(doc, host=HOST, correlation_id="corr-9")
    assert error is not None
    assert expected is not None
    assert (error.code, error.message, error.correlation_id) == (expected.code, expected.message, "corr-9")
    assert _info(error) == _info(expected)
