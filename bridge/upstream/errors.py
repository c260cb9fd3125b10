"""Errors of OpenAI-compatible upstreams, whatever the endpoint: error replies, error documents in a 200,
error events inside a stream (pure).

`OPENAI_COMPATIBLE` bundles them as the error policy `bridge.http.HttpClient` applies to replies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import grpc
from google.protobuf.message import Message

from bridge.errors import (
    UpstreamHTTPError,
    UpstreamStreamError,
    bad_request,
    error_info,
    reason_from,
    retry_info,
)
from bridge.http.status import grpc_code_for_http_status, parse_retry_after
from bridge.redaction import clean_optional
from bridge.upstream.error_body import UpstreamErrorBody, parse_error_body, parse_error_document
from bridge.upstream.headers import correlation_id

__all__ = [
    "OPENAI_COMPATIBLE",
    "OpenAICompatibleErrors",
    "error_from_document",
    "error_from_http_response",
    "error_from_stream_event",
]

Code = grpc.StatusCode
_BAD_REQUEST_STATUSES: Final = frozenset({400, 422})


def error_from_http_response(
    status: int, headers: Mapping[str, str], body: bytes, *, domain: str
) -> UpstreamHTTPError:
    """The error for a non-2xx upstream reply; ``domain`` (the upstream host) goes into ErrorInfo."""
    parsed = parse_error_body(body)
    lowered = {key.lower(): value for key, value in headers.items()}
    request_id = clean_optional(correlation_id(lowered))
    retry_after = _retry_delay(lowered)
    metadata = {"http_status": str(status), "correlation_id": request_id, **_body_metadata(parsed)}
    details: list[Message] = [error_info(_reason(parsed, f"HTTP_{status}"), domain, metadata)]
    if retry_after is not None:
        details.append(retry_info(retry_after))
    code, field = _refusal(status, parsed) or (grpc_code_for_http_status(status), None)
    violations = _http_violations(parsed) if status in _BAD_REQUEST_STATUSES else ()
    if field and not violations:
        violations = ((field, parsed.message or "is invalid"),)
    if violations:
        details.append(bad_request(violations))
    message = f"upstream HTTP {status}: {parsed.message}" if parsed.message else None
    return UpstreamHTTPError(
        message or f"upstream returned HTTP {status}",
        code=code,
        details=details,
        correlation_id=request_id,
        http_status=status,
        retry_after=retry_after,
    )


# Refusal codes of the gateway whose meaning does not depend on the status carrying them: its governance
# overlays forward them as 403 or 429 (docs.prisme.ai, LLM gateway, "Create text embeddings"). Code -> (gRPC
# code, request field at fault). Only 4xx: a 429 stays RESOURCE_EXHAUSTED (wait, whatever the code says).
_REFUSALS: Final[Mapping[str, tuple[grpc.StatusCode, str | None]]] = {
    "INVALID_DIMENSIONS": (Code.INVALID_ARGUMENT, "dimensions"),
    "MODEL_NOT_ALLOWED": (Code.PERMISSION_DENIED, None),
}


def _refusal(status: int, body: UpstreamErrorBody) -> tuple[grpc.StatusCode, str | None] | None:
    if not 400 <= status < 500 or status == 429:
        return None
    return _REFUSALS.get(reason_from(body.code) or "")


def _http_violations(body: UpstreamErrorBody) -> tuple[tuple[str, str], ...]:
    if body.violations:
        return body.violations
    if body.param:
        return ((body.param, body.message or "is invalid"),)
    return ()


_DECIMAL: Final = re.compile(r"\d+(?:\.\d+)?")


def _retry_delay(lowered_headers: Mapping[str, str]) -> float | None:
    # OpenAI sends retry-after-ms alongside Retry-After; it is the more precise of the two.
    millis = lowered_headers.get("retry-after-ms", "").strip()
    if _DECIMAL.fullmatch(millis):
        return float(millis) / 1000
    value = lowered_headers.get("retry-after")
    return parse_retry_after(value) if value is not None else None


# ------------------------------------------------------------------------------------ in-stream errors

# Types/codes of errors that are a passing state of the upstream: UNAVAILABLE invites a retry. Rate limits
# and quotas are RESOURCE_EXHAUSTED, as an HTTP 429 is, so a caller handles both the same way.
_QUOTA_MARKERS: Final = ("rate_limit", "throttl", "quota")
_TRANSIENT_MARKERS: Final = ("overloaded", "unavailable", "timeout", "timed_out")


def error_from_stream_event(
    data: str, *, event: str, domain: str, correlation_id: str | None
) -> UpstreamStreamError | None:
    """The error an SSE event carries, or None for an ordinary chunk.

    An error is an ``event: error`` (any data) or a JSON object with a non-null top-level "error".
    """
    if event == "error":
        return _stream_error(parse_error_body(data.encode()), domain, correlation_id)
    # Cheap test first: this runs on every chunk, and almost none is an error.
    if '"error"' not in data:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None  # not ours to judge: the caller reports undecodable chunks
    return error_from_document(doc, domain=domain, correlation_id=correlation_id)


def error_from_document(doc: Any, *, domain: str, correlation_id: str | None) -> UpstreamStreamError | None:
    """The error a parsed JSON document (a 200 reply, or a chunk) reports, or None if it is no error."""
    if not isinstance(doc, dict) or doc.get("error") in (None, False, ""):
        return None
    return _stream_error(parse_error_document(doc), domain, correlation_id)


def _stream_error(parsed: UpstreamErrorBody, domain: str, request_id: str | None) -> UpstreamStreamError:
    request_id = clean_optional(request_id)
    metadata = {"correlation_id": request_id, **_body_metadata(parsed)}
    message = "upstream stream error" + (f": {parsed.message}" if parsed.message else "")
    return UpstreamStreamError(
        message,
        code=_stream_code(parsed),
        details=[error_info(_reason(parsed, "STREAM_ERROR"), domain, metadata)],
        correlation_id=request_id,
    )


def _stream_code(body: UpstreamErrorBody) -> grpc.StatusCode:
    # vLLM's 400, LiteLLM's "500": an HTTP status in the code means what it would mean on the reply.
    if body.code is not None and body.code.isdigit() and 400 <= int(body.code) <= 599:
        return grpc_code_for_http_status(int(body.code))
    label = " ".join(filter(None, (reason_from(body.code), reason_from(body.type)))).lower()
    if any(marker in label for marker in _QUOTA_MARKERS):
        return Code.RESOURCE_EXHAUSTED
    if any(marker in label for marker in _TRANSIENT_MARKERS):
        return Code.UNAVAILABLE
    return Code.INTERNAL


# ------------------------------------------------------------------------------------------- shared


def _reason(body: UpstreamErrorBody, fallback: str) -> str:
    # The code is the most specific ("context_length_exceeded" beats type "invalid_request_error"), but
    # vLLM/LiteLLM codes are HTTP numbers, which can't be reasons: then the type names the error.
    return reason_from(body.code) or reason_from(body.type) or fallback


def _body_metadata(body: UpstreamErrorBody) -> dict[str, str | None]:
    return {
        "upstream_code": body.code,
        "upstream_type": body.type,
        "param": body.param,
        "upstream_details": body.details,
    }


class OpenAICompatibleErrors:
    """The error policy of `bridge.http.HttpClient` for OpenAI-compatible upstreams."""

    @staticmethod
    def correlation_id(headers: Mapping[str, str]) -> str | None:
        return correlation_id(headers)

    @staticmethod
    def from_reply(status: int, headers: Mapping[str, str], body: bytes, *, domain: str) -> UpstreamHTTPError:
        return error_from_http_response(status, headers, body, domain=domain)

    @staticmethod
    def from_document(doc: Any, headers: Mapping[str, str], *, domain: str) -> UpstreamStreamError | None:
        return error_from_document(doc, domain=domain, correlation_id=correlation_id(headers))


OPENAI_COMPATIBLE: Final = OpenAICompatibleErrors()
