"""bridge.upstream.errors: the gateway's refusal codes decide the gRPC code over the HTTP status that
carries them (its governance overlays forward INVALID_DIMENSIONS and MODEL_NOT_ALLOWED as 403 or 429)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.helpers import error_info, error_violations, http_error, retry_seconds

C = grpc.StatusCode
DIMENSIONS = "dimensions=4 is not supported: use one of [256, 1536]"


def _prisme(code: str, message: str = DIMENSIONS) -> dict[str, Any]:
    return {"error": code, "message": message, "details": {}}


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, _prisme("INVALID_DIMENSIONS"), C.INVALID_ARGUMENT),
        (403, _prisme("INVALID_DIMENSIONS"), C.INVALID_ARGUMENT),  # governance overlay: the code decides
        (422, _prisme("INVALID_DIMENSIONS"), C.INVALID_ARGUMENT),
        (403, _prisme("MODEL_NOT_ALLOWED"), C.PERMISSION_DENIED),
        (400, _prisme("MODEL_NOT_ALLOWED"), C.PERMISSION_DENIED),
        (404, _prisme("MODEL_NOT_ALLOWED"), C.PERMISSION_DENIED),
        # OpenAI's error shape and another spelling of the same code.
        (
            400,
            {"error": {"message": "m", "type": "invalid_request_error", "code": "model_not_allowed"}},
            C.PERMISSION_DENIED,
        ),
        (403, {"error": {"message": "m", "code": "invalid-dimensions"}}, C.INVALID_ARGUMENT),
        # A 429 stays RESOURCE_EXHAUSTED: the caller should wait, whatever the code says.
        (429, _prisme("MODEL_NOT_ALLOWED"), C.RESOURCE_EXHAUSTED),
        (429, _prisme("INVALID_DIMENSIONS"), C.RESOURCE_EXHAUSTED),
        # 5xx are the upstream's failures, not refusals.
        (500, _prisme("MODEL_NOT_ALLOWED"), C.INTERNAL),
        (503, _prisme("INVALID_DIMENSIONS"), C.UNAVAILABLE),
        # Other codes: the status decides, as before.
        (403, _prisme("FORBIDDEN"), C.PERMISSION_DENIED),
        (400, _prisme("invalid_request"), C.INVALID_ARGUMENT),
        (401, _prisme("invalid_token"), C.UNAUTHENTICATED),
    ],
)
def test_refusal_code_decides_over_the_status(status: int, body: Any, code: grpc.StatusCode) -> None:
    assert http_error(status, body).code is code


def test_invalid_dimensions_names_the_field_and_keeps_the_gateway_code() -> None:
    error = http_error(403, _prisme("INVALID_DIMENSIONS"))
    assert error.http_status == 403
    assert error_violations(error) == [("dimensions", DIMENSIONS)]
    info = error_info(error)
    assert info.reason == "INVALID_DIMENSIONS"
    assert info.metadata["http_status"] == "403"
    assert info.metadata["upstream_code"] == "INVALID_DIMENSIONS"


def test_a_field_the_upstream_names_wins_over_the_table() -> None:
    body = {"error": {"message": "bad", "code": "INVALID_DIMENSIONS", "param": "dims"}}
    assert error_violations(http_error(400, body)) == [("dims", "bad")]


def test_model_not_allowed_has_no_field_violation_and_a_429_keeps_its_retry_info() -> None:
    assert error_violations(http_error(403, _prisme("MODEL_NOT_ALLOWED"))) == []
    throttled = http_error(429, _prisme("MODEL_NOT_ALLOWED"), {"Retry-After": "7"})
    assert retry_seconds(throttled) == 7.0
    assert error_violations(throttled) == []
