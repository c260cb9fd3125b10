"""Errors of OpenAI-compatible upstreams, whatever the endpoint: error replies, error documents in a 200,
error events inside a stream (pure).

Each becomes a gRPC code and a `bridge.errors.Reason`. An HTTP reply's code follows its status
(bridge.http.status), except for the few governance codes whose meaning the status does not carry
(`MODEL_NOT_ALLOWED`, `INVALID_DIMENSIONS`; but a 429 stays a rate limit) and for a bare 500, which says
only that something failed; the reason refines the status when the upstream's error code or type says
more (a 400 that is a context overflow, a 429 that is a spent quota). An error inside a stream has no
status: what the upstream names (its error code or type, the exception class a LiteLLM proxy prefixes to
its message) decides, then a numeric code read as an HTTP status (vLLM 400, LiteLLM "500"), then INTERNAL.
`OPENAI_COMPATIBLE` bundles this as the error policy `bridge.http.HttpClient` applies to replies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf.message import Message

from bridge.errors import (
    Key,
    Reason,
    UpstreamHTTPError,
    UpstreamStreamError,
    bad_request,
    retry_info,
)
from bridge.http.status import grpc_code_for_http_status
from bridge.redaction import header_value
from bridge.upstream.error_body import UpstreamErrorBody, parse_error_body, parse_error_document
from bridge.upstream.headers import correlation_id, retry_delay

__all__ = [
    "OPENAI_COMPATIBLE",
    "OpenAICompatibleErrors",
    "classify",
    "error_from_document",
    "error_from_http_response",
    "error_from_stream_event",
    "reports_error",
]

Code = grpc.StatusCode
_BAD_REQUEST_STATUSES: Final = frozenset({400, 422})


@dataclass(frozen=True, slots=True)
class _Rule:
    needles: tuple[str, ...]  # matched in the upstream's code, type and LiteLLM exception class, lower case
    code: grpc.StatusCode
    reason: Reason


# First match wins: the specific meanings before the broad ones.
_RULES: Final = (
    _Rule(("context_length", "context_window", "contextwindowexceeded"), Code.INVALID_ARGUMENT,
          Reason.UPSTREAM_CONTEXT_LENGTH_EXCEEDED),
    _Rule(("content_filter", "content_policy", "contentpolicyviolation"), Code.INVALID_ARGUMENT,
          Reason.UPSTREAM_CONTENT_FILTERED),
    _Rule(("quota",), Code.RESOURCE_EXHAUSTED, Reason.UPSTREAM_QUOTA_EXCEEDED),
    _Rule(("rate_limit", "ratelimit", "throttl"), Code.RESOURCE_EXHAUSTED, Reason.UPSTREAM_RATE_LIMITED),
    _Rule(("timeout", "timed_out"), Code.UNAVAILABLE, Reason.UPSTREAM_TIMEOUT),
    _Rule(("overloaded", "unavailable", "apiconnectionerror", "connection_error"), Code.UNAVAILABLE,
          Reason.UPSTREAM_UNAVAILABLE),
    _Rule(("authenticationerror", "invalid_api_key", "invalid_token"), Code.UNAUTHENTICATED,
          Reason.UPSTREAM_UNAUTHENTICATED),
    _Rule(("permissiondenied", "permission_error", "model_not_allowed"), Code.PERMISSION_DENIED,
          Reason.UPSTREAM_PERMISSION_DENIED),
    _Rule(("notfounderror", "not_found"), Code.NOT_FOUND, Reason.UPSTREAM_NOT_FOUND),
    _Rule(("badrequesterror", "unprocessableentity", "invalid_request", "invalid_dimensions",
           "invalid_value"), Code.INVALID_ARGUMENT, Reason.UPSTREAM_INVALID_REQUEST),
)  # fmt: skip

# Governance refusals whose meaning the HTTP status does not carry (the gateway may send them as 403/400).
# A 429 is not overridden: it asks callers to wait, whatever code it carries.
_CODE_OVERRIDES: Final = {
    "model_not_allowed": Code.PERMISSION_DENIED,
    "invalid_dimensions": Code.INVALID_ARGUMENT,
}
_RATE_LIMITED: Final = 429
# The request field a governance refusal blames, when the upstream names none (BadRequest).
_REFUSED_FIELDS: Final = {"invalid_dimensions": "dimensions"}

_GENERIC_FAILURE: Final = 500
_STATUS_REASONS: Final = {
    400: Reason.UPSTREAM_INVALID_REQUEST,
    401: Reason.UPSTREAM_UNAUTHENTICATED,
    403: Reason.UPSTREAM_PERMISSION_DENIED,
    404: Reason.UPSTREAM_NOT_FOUND,
    408: Reason.UPSTREAM_TIMEOUT,
    410: Reason.UPSTREAM_NOT_FOUND,
    413: Reason.UPSTREAM_PAYLOAD_TOO_LARGE,
    422: Reason.UPSTREAM_INVALID_REQUEST,
    429: Reason.UPSTREAM_RATE_LIMITED,
    500: Reason.UPSTREAM_ERROR,
    504: Reason.UPSTREAM_TIMEOUT,
}

# LiteLLM names its exception class at the head of an error's message: "litellm.RateLimitError: ...".
_LITELLM_CLASS: Final = re.compile(r"^\s*litellm\.([A-Za-z]+)")


def classify(body: UpstreamErrorBody, status: int | None) -> tuple[grpc.StatusCode, Reason]:
    """The code and reason of an upstream error: a reply with `status`, or an in-stream error (None)."""
    rule = _rule(body)
    if status == _GENERIC_FAILURE and rule is not None:
        return rule.code, rule.reason  # a 500 says only "it failed": what the upstream names says more
    if status is None:
        if rule is not None:
            return rule.code, rule.reason
        numeric = _numeric_status(body.code)
        if numeric is None:
            return Code.INTERNAL, Reason.UPSTREAM_ERROR
        status = numeric
    override = None if status == _RATE_LIMITED else _CODE_OVERRIDES.get((body.code or "").lower())
    code = override or grpc_code_for_http_status(status)
    if rule is not None and rule.code == code:
        return code, rule.reason
    return code, _status_reason(status, code)


def _rule(body: UpstreamErrorBody) -> _Rule | None:
    litellm = _LITELLM_CLASS.match(body.message or "")
    label = " ".join(filter(None, (body.code, body.type, litellm.group(1) if litellm else None))).lower()
    if not label:
        return None
    return next((rule for rule in _RULES if any(needle in label for needle in rule.needles)), None)


def _numeric_status(code: str | None) -> int | None:
    # vLLM's 400, LiteLLM's "500": an HTTP status in the code means what it would mean on the reply.
    if code is not None and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    return None


def _status_reason(status: int, code: grpc.StatusCode) -> Reason:
    reason = _STATUS_REASONS.get(status)
    if reason is not None:
        return reason
    if 300 <= status < 400:
        return Reason.UPSTREAM_REDIRECTED  # bridge.http.client answers these itself (bridge.http.redirect)
    if not 200 <= status < 600:
        return Reason.UPSTREAM_INVALID_RESPONSE
    if code == Code.PERMISSION_DENIED:
        return Reason.UPSTREAM_PERMISSION_DENIED
    if code == Code.INVALID_ARGUMENT:
        return Reason.UPSTREAM_INVALID_REQUEST
    return Reason.UPSTREAM_UNAVAILABLE if code == Code.UNAVAILABLE else Reason.UPSTREAM_ERROR


# --------------------------------------------------------------------------------------- error replies


def error_from_http_response(
    status: int, headers: Mapping[str, str], body: bytes, *, host: str
) -> UpstreamHTTPError:
    """The error for a non-2xx reply of the upstream at `host`."""
    parsed = parse_error_body(body)
    lowered = {key.lower(): value for key, value in headers.items()}
    request_id = correlation_id(lowered)
    retry_after = retry_delay(lowered)
    code, reason = classify(parsed, status)
    metadata = {Key.HTTP_STATUS: str(status), **_metadata(parsed, host, request_id)}
    details: list[Message] = []
    if retry_after is not None:
        details.append(retry_info(retry_after))
    violations = _http_violations(parsed) if status in _BAD_REQUEST_STATUSES else ()
    violations = violations or _refused_field(parsed, code)
    if violations:
        details.append(bad_request(violations))
    message = f"upstream HTTP {status}: {parsed.message}" if parsed.message else None
    if not 200 <= status < 600:
        message = f"upstream answered HTTP {status}, which is no final HTTP status" + (
            f": {parsed.message}" if parsed.message else ""
        )
    return UpstreamHTTPError(
        message or f"upstream returned HTTP {status}",
        code,
        reason=reason,
        metadata=metadata,
        details=details,
        correlation_id=request_id,
        http_status=status,
        retry_after=retry_after,
    )


def _http_violations(body: UpstreamErrorBody) -> tuple[tuple[str, str], ...]:
    if body.violations:
        return body.violations
    if body.param:
        return ((body.param, body.message or "is invalid"),)
    return ()


def _refused_field(body: UpstreamErrorBody, code: grpc.StatusCode) -> tuple[tuple[str, str], ...]:
    # INVALID_DIMENSIONS blames `dimensions` whatever status carries it, unless a 429 made it a wait.
    field = _REFUSED_FIELDS.get((body.code or "").lower())
    if field is None or code != Code.INVALID_ARGUMENT:
        return ()
    return ((field, body.message or "is invalid"),)


# ------------------------------------------------------------------------------------ in-stream errors


def error_from_stream_event(
    data: str, *, event: str, host: str, correlation_id: str | None
) -> UpstreamStreamError | None:
    """The error an SSE event carries, or None for an ordinary chunk.

    An error is an ``event: error`` (any data) or a JSON object with a non-null top-level "error".
    """
    if event == "error":
        return _stream_error(parse_error_body(data.encode()), host, correlation_id)
    # Cheap test first: this runs on every chunk, and almost none is an error.
    if '"error"' not in data:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None  # not ours to judge: the caller reports undecodable chunks
    return error_from_document(doc, host=host, correlation_id=correlation_id)


def error_from_document(doc: Any, *, host: str, correlation_id: str | None) -> UpstreamStreamError | None:
    """The error a parsed JSON document (a 200 reply, or a chunk) reports, or None if it is no error."""
    if not reports_error(doc):
        return None
    return _stream_error(parse_error_document(doc), host, correlation_id)


def reports_error(doc: Any) -> bool:
    """Whether a parsed JSON document (a 200 reply, or a chunk) reports an error instead of a result."""
    return isinstance(doc, dict) and doc.get("error") not in (None, False, "")


def _stream_error(parsed: UpstreamErrorBody, host: str, request_id: str | None) -> UpstreamStreamError:
    request_id = header_value(request_id)
    code, reason = classify(parsed, None)
    message = "upstream stream error" + (f": {parsed.message}" if parsed.message else "")
    return UpstreamStreamError(
        message, code, reason=reason, metadata=_metadata(parsed, host, request_id), correlation_id=request_id
    )


def _metadata(body: UpstreamErrorBody, host: str, request_id: str | None) -> dict[Key, str | None]:
    return {
        Key.UPSTREAM_HOST: host,
        Key.CORRELATION_ID: request_id,
        Key.UPSTREAM_CODE: body.code,
        Key.UPSTREAM_TYPE: body.type,
        Key.UPSTREAM_PARAM: body.param,
        Key.UPSTREAM_DETAILS: body.details,
    }


# --------------------------------------------------------------------------------------------- policy


class OpenAICompatibleErrors:
    """The error policy of `bridge.http.HttpClient` for OpenAI-compatible upstreams."""

    @staticmethod
    def correlation_id(headers: Mapping[str, str]) -> str | None:
        return correlation_id(headers)

    @staticmethod
    def from_reply(status: int, headers: Mapping[str, str], body: bytes, *, host: str) -> UpstreamHTTPError:
        return error_from_http_response(status, headers, body, host=host)

    @staticmethod
    def from_document(doc: Any, headers: Mapping[str, str], *, host: str) -> UpstreamStreamError | None:
        if not reports_error(doc):
            return None  # the usual reply: no correlation id worked out for nothing
        return error_from_document(doc, host=host, correlation_id=correlation_id(headers))


OPENAI_COMPATIBLE: Final = OpenAICompatibleErrors()
