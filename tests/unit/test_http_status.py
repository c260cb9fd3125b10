"""bridge.http.status: the HTTP status -> gRPC code table and Retry-After values."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from bridge.http.status import HTTP_STATUS_TO_GRPC, grpc_code_for_http_status, parse_retry_after
from tests.helpers import HOST
from tests.helpers import error_info as _info
from tests.helpers import http_error as _http

C = grpc.StatusCode
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


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
    assert (info.reason, info.domain) == (_EXPECTED_REASONS[status], "grpc-bridge.prisme.ai")
    assert dict(info.metadata) == {"httpStatus": str(status), "upstreamHost": HOST}


# The stable ErrorInfo.reason of a reply that says no more than its status (docs/errors.md).
_EXPECTED_REASONS = {
    400: "UPSTREAM_INVALID_REQUEST",
    401: "UPSTREAM_UNAUTHENTICATED",
    403: "UPSTREAM_PERMISSION_DENIED",
    404: "UPSTREAM_NOT_FOUND",
    405: "UPSTREAM_ERROR",
    408: "UPSTREAM_TIMEOUT",
    409: "UPSTREAM_ERROR",
    410: "UPSTREAM_NOT_FOUND",
    413: "UPSTREAM_PAYLOAD_TOO_LARGE",
    422: "UPSTREAM_INVALID_REQUEST",
    429: "UPSTREAM_RATE_LIMITED",
    499: "UPSTREAM_ERROR",
    500: "UPSTREAM_ERROR",
    501: "UPSTREAM_ERROR",
    502: "UPSTREAM_UNAVAILABLE",
    503: "UPSTREAM_UNAVAILABLE",
    504: "UPSTREAM_TIMEOUT",
}


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
        (302, C.FAILED_PRECONDITION),
        (200, C.INTERNAL),
        (100, C.INTERNAL),
        (600, C.INTERNAL),
        (999, C.INTERNAL),
    ],
)
def test_statuses_outside_the_table_fall_back_by_class(status: int, code: grpc.StatusCode) -> None:
    assert grpc_code_for_http_status(status) is code
    # A transient 5xx invites a retry like 502/503 do; a redirect is the base URL's fault; a status that is
    # no final HTTP status is a reply the bridge cannot understand; anything else is an upstream error.
    expected = {
        C.UNAVAILABLE: "UPSTREAM_UNAVAILABLE",
        C.FAILED_PRECONDITION: "UPSTREAM_REDIRECTED" if 300 <= status < 400 else "UPSTREAM_ERROR",
        C.INTERNAL: "UPSTREAM_INVALID_RESPONSE" if not 200 <= status < 600 else "UPSTREAM_ERROR",
    }[code]
    assert _info(_http(status)).reason == expected


def test_no_status_maps_to_unknown() -> None:
    """UNKNOWN is the one code a caller cannot act on (issue 19: redirects were UNKNOWN)."""
    for status in range(100, 1000):
        assert grpc_code_for_http_status(status) is not C.UNKNOWN, status
        assert _http(status).code is not C.UNKNOWN, status


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
