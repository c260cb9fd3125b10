"""HTTP semantics the bridge relies on, whatever the API: status -> gRPC code, Retry-After (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Final

import grpc

__all__ = ["HTTP_STATUS_TO_GRPC", "grpc_code_for_http_status", "parse_retry_after"]

Code = grpc.StatusCode

# Inverse of the HTTP mapping in google/rpc/code.proto (AIP-193; grpc-gateway uses the same pairs). Where
# several gRPC codes share one HTTP status the table picks the one a client should act on: 400 ->
# INVALID_ARGUMENT (not FAILED_PRECONDITION/OUT_OF_RANGE), 409 -> ABORTED (retry), 500 -> INTERNAL.
# 502 has no entry in code.proto: a bad gateway in front of the model is transient, so UNAVAILABLE.
# Not in code.proto, decided here: 405 UNIMPLEMENTED (the upstream has no such operation), 408
# DEADLINE_EXCEEDED, 410 NOT_FOUND (gone: a retired model), 422 INVALID_ARGUMENT (FastAPI/vLLM validation).
HTTP_STATUS_TO_GRPC: Final[Mapping[int, grpc.StatusCode]] = MappingProxyType(
    {
        400: Code.INVALID_ARGUMENT,
        401: Code.UNAUTHENTICATED,
        403: Code.PERMISSION_DENIED,
        404: Code.NOT_FOUND,
        405: Code.UNIMPLEMENTED,
        408: Code.DEADLINE_EXCEEDED,
        409: Code.ABORTED,
        410: Code.NOT_FOUND,
        413: Code.RESOURCE_EXHAUSTED,
        422: Code.INVALID_ARGUMENT,
        429: Code.RESOURCE_EXHAUSTED,
        499: Code.CANCELLED,
        500: Code.INTERNAL,
        501: Code.UNIMPLEMENTED,
        502: Code.UNAVAILABLE,
        503: Code.UNAVAILABLE,
        504: Code.DEADLINE_EXCEEDED,
    }
)


def grpc_code_for_http_status(status: int) -> grpc.StatusCode:
    """The gRPC code for an upstream HTTP status (see HTTP_STATUS_TO_GRPC)."""
    code = HTTP_STATUS_TO_GRPC.get(status)
    if code is not None:
        return code
    if 400 <= status < 500:
        # The request was refused for a reason the caller may fix, but it is not a plain bad argument.
        return Code.FAILED_PRECONDITION
    if 500 <= status < 600:
        # 505-511, Cloudflare 520-527, Anthropic's 529 "overloaded": all worth a retry later.
        return Code.UNAVAILABLE
    if 300 <= status < 400:
        # A redirect (never followed) means a misconfigured base URL: no retry helps until it is fixed.
        return Code.FAILED_PRECONDITION
    # A 1xx as the final reply, or no HTTP status at all (600-999): a reply the bridge cannot understand.
    return Code.INTERNAL


_DELAY_SECONDS: Final = re.compile(r"\d+")  # RFC 9110 10.2.3: delay-seconds = 1*DIGIT


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP-date); None if unparseable.

    A date in the past means "now" (0.0); a negative or fractional delay is not valid and gives None.
    """
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    current = now or datetime.now(UTC)
    # asctime dates and "-0000" parse without a zone; HTTP dates are always GMT.
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    current = current if current.tzinfo else current.replace(tzinfo=UTC)
    return max(0.0, (when - current).total_seconds())
