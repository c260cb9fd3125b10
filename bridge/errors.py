"""Errors of the bridge and their gRPC statuses (pure: no network IO).

Hierarchy::

    BridgeError                         code + message + rich details, ``to_status()``
    ├── InvalidRequestError             INVALID_ARGUMENT; google.rpc.BadRequest (caller input)
    └── UpstreamError                   talking to the upstream went wrong
        ├── UpstreamHTTPError           non-2xx reply; code from HTTP_STATUS_TO_GRPC
        ├── UpstreamStreamError         an error event inside an SSE stream
        ├── UpstreamProtocolError       malformed reply: truncated stream, bad JSON chunk, content type
        ├── UpstreamUnavailableError    connect refused/reset, DNS, TLS, proxy, pool exhausted: UNAVAILABLE
        └── UpstreamTimeoutError        upstream went silent (read/write timeout): DEADLINE_EXCEEDED

Every upstream error carries a ``google.rpc.ErrorInfo`` whose domain is the upstream host. Everything taken
from the upstream (bodies, headers, exception texts) goes through ``_clean``: secrets redacted, whitespace
collapsed, length capped, so neither a key echoed back nor a 2 MB HTML page reaches a gRPC status.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import ClassVar, Final

import aiohttp
import grpc
import httpx
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "HTTP_STATUS_TO_GRPC",
    "MAX_MESSAGE_BYTES",
    "TRANSPORT_ERRORS",
    "BridgeError",
    "InvalidRequestError",
    "UpstreamError",
    "UpstreamErrorBody",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "error_from_http_response",
    "error_from_stream_event",
    "error_from_transport_exception",
    "grpc_code_for_http_status",
    "invalid_request",
    "parse_error_body",
    "parse_retry_after",
    "protocol_error",
    "redact",
]

Code = grpc.StatusCode

# Lengths are UTF-8 bytes: trailers are limited in bytes, and grpc-message percent-encodes non-ASCII.
MAX_MESSAGE_BYTES: Final = 1024  # upstream text in a status message
_MAX_STATUS_MESSAGE_BYTES: Final = 1280  # the above plus the bridge's "upstream HTTP 429: " prefix
_MAX_METADATA_BYTES: Final = 256
_MAX_VIOLATIONS: Final = 10
# Java and C-core clients refuse trailers over 8 KiB by default (grpc.max_metadata_size): a status
# over this budget sheds details rather than reach the caller as an opaque metadata-size error.
_TRAILER_BUDGET: Final = 7 * 1024
# Error documents are small; past this a body is some page or dump and only its head is kept, as text.
_MAX_BODY_BYTES: Final = 64 * 1024
# Only bounds a hostile or broken header (Duration has a range); real hints are seconds to hours.
_MAX_RETRY_DELAY_S: Final = 86_400.0


# --------------------------------------------------------------------------------------------- hierarchy


class BridgeError(Exception):
    """Base of every error the bridge turns into a gRPC status."""

    default_code: ClassVar[grpc.StatusCode] = Code.INTERNAL

    def __init__(
        self, message: str, *, code: grpc.StatusCode | None = None, details: Sequence[Message] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: tuple[Message, ...] = tuple(details)

    def to_status(self) -> grpc.Status:
        """The status for ``context.abort_with_status``: details travel in ``grpc-status-details-bin``."""
        proto = status_pb2.Status(
            code=self.code.value[0], message=_truncate(self.message, _MAX_STATUS_MESSAGE_BYTES)
        )
        for detail in self.details:
            proto.details.add().Pack(detail)
        # Details are ordered most useful first (ErrorInfo, RetryInfo, then BadRequest): shed from the end.
        while proto.details and _trailer_bytes(proto) > _TRAILER_BUDGET:
            del proto.details[-1]
        return rpc_status.to_status(proto)


def _trailer_bytes(proto: status_pb2.Status) -> int:
    # grpc-message is percent-encoded outside printable ASCII; grpc-status-details-bin is base64.
    text: str = proto.message
    size: int = proto.ByteSize()
    return sum(1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3 for byte in text.encode()) + 4 * math.ceil(
        size / 3
    )


class InvalidRequestError(BridgeError):
    """The caller's request is wrong; ``violations`` are (field path, description) pairs."""

    default_code = Code.INVALID_ARGUMENT

    def __init__(self, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        self.violations = tuple(violations)
        super().__init__(message, details=[_bad_request(self.violations)] if self.violations else [])


class UpstreamError(BridgeError):
    """Base of the errors that come from, or happen while talking to, the upstream."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.correlation_id = correlation_id


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
        correlation_id: str | None = None,
        http_status: int = 0,
        body: UpstreamErrorBody | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details, correlation_id=correlation_id)
        self.http_status = http_status
        self.body = body or UpstreamErrorBody()
        self.retry_after = retry_after


class UpstreamStreamError(UpstreamError):
    """The upstream reported an error inside an event stream (after its 200)."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
        correlation_id: str | None = None,
        body: UpstreamErrorBody | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details, correlation_id=correlation_id)
        self.body = body or UpstreamErrorBody()


class UpstreamProtocolError(UpstreamError):
    """The upstream's reply could not be understood."""


class UpstreamUnavailableError(UpstreamError):
    """The upstream could not be reached or dropped the connection."""

    default_code = Code.UNAVAILABLE


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer, or stopped sending, within the bridge's timeouts."""

    default_code = Code.DEADLINE_EXCEEDED


# ---------------------------------------------------------------------------------- HTTP -> gRPC codes

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
    # 1xx/3xx are not errors the bridge understands (a redirect means a misconfigured URL); never OK.
    return Code.UNKNOWN


# ------------------------------------------------------------------------------------------ redaction

_REDACTED: Final = "[REDACTED]"
_SECRET_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # Authorization values: keep the scheme so a reader knows what was there.
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+"), rf"\1 {_REDACTED}"),
    # Prisme instance keys iak_{org}_{uuid}; OpenAI/LiteLLM/Anthropic keys sk-..., sk-proj-..., sk-ant-...
    (re.compile(r"\biak_[A-Za-z0-9_-]+"), _REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{4,}"), _REDACTED),
    # JWTs: a base64url JSON header always starts with "eyJ" ('{"'); unsigned tokens end with a dot.
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), _REDACTED),
    # key=value / "key": "value" with a secret-looking key name (query strings, headers, JSON, also
    # JSON escaped inside a JSON string, hence the optional backslashes).
    (
        re.compile(
            r"(?i)\b((?:[a-z0-9]+[_-])*(?:api[_-]?key|access[_-]?token|secret|password))"
            r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\s\"'&,;}\\]+"
        ),
        rf"\1\2{_REDACTED}",
    ),
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, iak_/sk- keys, JWTs and ``api_key=...``-style values replaced."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_ELLIPSIS: Final = "…"


def _truncate(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    # "ignore" drops a character cut in half at the limit.
    return raw[: limit - len(_ELLIPSIS.encode())].decode("utf-8", "ignore") + _ELLIPSIS


def _clean(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    # Redact before truncating: a cut could leave a secret's head too short for its pattern.
    return _truncate(redact(" ".join(text.split())), limit)


def _clean_opt(text: str | None, limit: int = _MAX_METADATA_BYTES) -> str | None:
    return (_clean(text, limit) or None) if text is not None else None


# -------------------------------------------------------------------------------------- error bodies


@dataclass(frozen=True, slots=True)
class UpstreamErrorBody:
    """What an upstream error document says, already redacted and truncated.

    ``code`` keeps the upstream's spelling ("rate_limit_exceeded", "400" for vLLM's integer).
    ``violations`` come from FastAPI/pydantic ``detail`` lists: (field path, description).
    """

    message: str | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    details: str | None = None
    violations: tuple[tuple[str, str], ...] = ()


def parse_error_body(body: bytes) -> UpstreamErrorBody:
    """Read an upstream error body: OpenAI, vLLM, LiteLLM, Prisme, FastAPI, HTML or plain text."""
    if len(body) > _MAX_BODY_BYTES:
        return _from_text(body[:_MAX_BODY_BYTES].decode("utf-8", "replace"))
    text = body.decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not text:
        return UpstreamErrorBody()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's depth
        return _from_text(text)
    return _from_json(doc)


_HTML_START: Final = re.compile(r"<(?:!doctype|html|head|body|title)\b", re.IGNORECASE)
_HTML_TITLE: Final = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG: Final = re.compile(r"<[^>]*>")


def _from_text(text: str) -> UpstreamErrorBody:
    if _HTML_START.match(text.lstrip()):
        # Proxies answer with pages ("502 Bad Gateway"): the title says it all, the markup says nothing.
        title = _HTML_TITLE.search(text)
        text = html.unescape(title.group(1) if title else _HTML_TAG.sub(" ", text))
    return UpstreamErrorBody(message=_clean(text) or None)


def _from_json(doc: object) -> UpstreamErrorBody:
    if isinstance(doc, str):
        return _from_text(doc)
    if not isinstance(doc, dict):
        return UpstreamErrorBody(message=_clean(_compact(doc)) or None)
    error = doc.get("error")
    if isinstance(error, dict):
        return _from_error_object(error, doc)
    if isinstance(error, str) and error.strip():
        return _from_prisme(error, doc)
    return _from_flat(doc)


def _from_error_object(error: dict[str, object], doc: dict[str, object]) -> UpstreamErrorBody:
    # OpenAI/vLLM/LiteLLM {"error": {message, type, param, code}}; Google-style puts the name in "status".
    message = _text(error.get("message")) or _text(doc.get("message"))
    return UpstreamErrorBody(
        message=_clean_opt(message, MAX_MESSAGE_BYTES),
        code=_clean_opt(_scalar(error.get("code"))),
        type=_clean_opt(_scalar(error.get("type")) or _scalar(error.get("status"))),
        param=_clean_opt(_scalar(error.get("param"))),
    )


_IDENTIFIER: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*")


def _from_prisme(error: str, doc: dict[str, object]) -> UpstreamErrorBody:
    # Prisme {"error": "<code>", "message", "details"}; a sentence in "error" is a message, not a code.
    is_code = _IDENTIFIER.fullmatch(error.strip()) is not None
    message = _text(doc.get("message")) or (None if is_code else error)
    details = doc.get("details")
    return UpstreamErrorBody(
        message=_clean_opt(message, MAX_MESSAGE_BYTES),
        code=_clean_opt(error if is_code else _scalar(doc.get("code"))),
        type=_clean_opt(_scalar(doc.get("type"))),
        param=_clean_opt(_scalar(doc.get("param"))),
        details=_clean_opt(_compact(details)) if details not in (None, "", {}, []) else None,
    )


def _from_flat(doc: dict[str, object]) -> UpstreamErrorBody:
    # {"message": ...}, old vLLM {"object": "error", ...}, FastAPI {"detail": str | list | dict}.
    detail = doc.get("detail")
    violations = _violations(detail) if isinstance(detail, list) else ()
    message = _text(doc.get("message")) or _detail_message(detail, violations)
    if message is None and any(value not in (None, "", [], {}) for value in doc.values()):
        message = _compact(doc)  # unknown shape: better raw than nothing
    return UpstreamErrorBody(
        message=_clean_opt(message, MAX_MESSAGE_BYTES),
        code=_clean_opt(_scalar(doc.get("code"))),
        type=_clean_opt(_scalar(doc.get("type"))),
        param=_clean_opt(_scalar(doc.get("param"))),
        violations=violations,
    )


def _detail_message(detail: object, violations: tuple[tuple[str, str], ...]) -> str | None:
    if violations:
        return _summarise(violations)
    if isinstance(detail, dict):
        return _text(detail.get("message")) or _compact(detail)
    return _text(detail)


def _violations(items: list[object]) -> tuple[tuple[str, str], ...]:
    found = []
    for item in items[:_MAX_VIOLATIONS]:
        if isinstance(item, dict):
            field = _loc_path(item.get("loc"))
            description = _text(item.get("msg")) or _text(item.get("message"))
            if field and description:
                found.append((_clean(field, _MAX_METADATA_BYTES), _clean(description, _MAX_METADATA_BYTES)))
    return tuple(found)


_LOC_SOURCES: Final = frozenset({"body", "query", "path", "header", "cookie"})


def _loc_path(loc: object) -> str | None:
    # pydantic ["body", "messages", 0, "role"] -> AIP-193 style "messages[0].role".
    if not isinstance(loc, list):
        return _scalar(loc)
    parts = loc[1:] if loc and loc[0] in _LOC_SOURCES else loc
    path = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or None


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else _compact(value)


def _scalar(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str | int | float):
        return str(value).strip() or None
    return None


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


# ----------------------------------------------------------------------------------- rich detail protos


def _summarise(violations: Sequence[tuple[str, str]]) -> str:
    field, description = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{field}: {description}{more}"


def _bad_request(violations: Sequence[tuple[str, str]]) -> error_details_pb2.BadRequest:
    # The first few are enough to act on (the message counts the rest); all of them could pass 8 KiB.
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=_truncate(field, _MAX_METADATA_BYTES),
                description=_truncate(description, _MAX_METADATA_BYTES),
            )
            for field, description in violations[:_MAX_VIOLATIONS]
        ]
    )


def _error_info(reason: str, domain: str, metadata: Mapping[str, str | None]) -> error_details_pb2.ErrorInfo:
    kept = {key: value for key, value in metadata.items() if value}
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=kept)


def _retry_info(delay_s: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(math.ceil(min(delay_s, _MAX_RETRY_DELAY_S) * 1000))
    return error_details_pb2.RetryInfo(retry_delay=delay)


_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM: Final = re.compile(r"[^A-Za-z0-9]+")
_REASON: Final = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")  # what ErrorInfo.reason must match


def _upper_snake(value: str | None) -> str | None:
    """``value`` as an ErrorInfo reason ("BadRequestError" -> "BAD_REQUEST_ERROR"), or None if it can't be."""
    if not value:
        return None
    snake = _NON_ALNUM.sub("_", _CAMEL_BOUNDARY.sub("_", value)).strip("_").upper()
    snake = snake[:63].rstrip("_")
    return snake if _REASON.fullmatch(snake) else None


def _reason(body: UpstreamErrorBody, fallback: str) -> str:
    # The code is the most specific ("context_length_exceeded" beats type "invalid_request_error"), but
    # vLLM/LiteLLM codes are HTTP numbers, which can't be reasons: then the type names the error.
    return _upper_snake(body.code) or _upper_snake(body.type) or fallback


def _body_metadata(body: UpstreamErrorBody) -> dict[str, str | None]:
    return {
        "upstream_code": body.code,
        "upstream_type": body.type,
        "param": body.param,
        "upstream_details": body.details,
    }


# ---------------------------------------------------------------------------------- HTTP error replies

_BAD_REQUEST_STATUSES: Final = frozenset({400, 422})


def error_from_http_response(
    status: int, headers: Mapping[str, str], body: bytes, *, domain: str
) -> UpstreamHTTPError:
    """The error for a non-2xx upstream reply; ``domain`` (the upstream host) goes into ErrorInfo."""
    parsed = parse_error_body(body)
    lowered = {key.lower(): value for key, value in headers.items()}
    correlation_id = _clean_opt(lowered.get("x-correlation-id") or lowered.get("x-request-id"))
    retry_after = _retry_delay(lowered)
    metadata = {"http_status": str(status), "correlation_id": correlation_id, **_body_metadata(parsed)}
    details: list[Message] = [_error_info(_reason(parsed, f"HTTP_{status}"), domain, metadata)]
    if retry_after is not None:
        details.append(_retry_info(retry_after))
    violations = _http_violations(parsed) if status in _BAD_REQUEST_STATUSES else ()
    if violations:
        details.append(_bad_request(violations))
    message = f"upstream HTTP {status}: {parsed.message}" if parsed.message else None
    return UpstreamHTTPError(
        message or f"upstream returned HTTP {status}",
        code=grpc_code_for_http_status(status),
        details=details,
        correlation_id=correlation_id,
        http_status=status,
        body=parsed,
        retry_after=retry_after,
    )


def _http_violations(body: UpstreamErrorBody) -> tuple[tuple[str, str], ...]:
    if body.violations:
        return body.violations
    if body.param:
        return ((body.param, body.message or "is invalid"),)
    return ()


def _retry_delay(lowered_headers: Mapping[str, str]) -> float | None:
    # OpenAI sends retry-after-ms alongside Retry-After; it is the more precise of the two.
    millis = lowered_headers.get("retry-after-ms", "").strip()
    if _DECIMAL.fullmatch(millis):
        return float(millis) / 1000
    value = lowered_headers.get("retry-after")
    return parse_retry_after(value) if value is not None else None


_DELAY_SECONDS: Final = re.compile(r"\d+")  # RFC 9110 10.2.3: delay-seconds = 1*DIGIT
_DECIMAL: Final = re.compile(r"\d+(?:\.\d+)?")


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
        parsed = parse_error_body(data.encode())
    else:
        # Cheap test first: this runs on every chunk, and almost none is an error.
        if '"error"' not in data:
            return None
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return None  # not ours to judge: the caller reports undecodable chunks
        if not isinstance(doc, dict) or doc.get("error") in (None, False, ""):
            return None
        parsed = _from_json(doc)
    correlation_id = _clean_opt(correlation_id)
    metadata = {"correlation_id": correlation_id, **_body_metadata(parsed)}
    message = "upstream stream error" + (f": {parsed.message}" if parsed.message else "")
    return UpstreamStreamError(
        message,
        code=_stream_code(parsed),
        details=[_error_info(_reason(parsed, "STREAM_ERROR"), domain, metadata)],
        correlation_id=correlation_id,
        body=parsed,
    )


def _stream_code(body: UpstreamErrorBody) -> grpc.StatusCode:
    # vLLM's 400, LiteLLM's "500": an HTTP status in the code means what it would mean on the reply.
    if body.code is not None and body.code.isdigit() and 400 <= int(body.code) <= 599:
        return grpc_code_for_http_status(int(body.code))
    label = " ".join(filter(None, (_upper_snake(body.code), _upper_snake(body.type)))).lower()
    if any(marker in label for marker in _QUOTA_MARKERS):
        return Code.RESOURCE_EXHAUSTED
    if any(marker in label for marker in _TRANSIENT_MARKERS):
        return Code.UNAVAILABLE
    return Code.INTERNAL


# ------------------------------------------------------------------------------------ protocol errors


def protocol_error(
    message: str,
    *,
    domain: str,
    reason: str,
    correlation_id: str | None = None,
    code: grpc.StatusCode = Code.INTERNAL,
) -> UpstreamProtocolError:
    """An UpstreamProtocolError with its ErrorInfo; ``reason`` like "TRUNCATED_STREAM", "INVALID_JSON"."""
    correlation_id = _clean_opt(correlation_id)
    info = _error_info(_upper_snake(reason) or "PROTOCOL_ERROR", domain, {"correlation_id": correlation_id})
    return UpstreamProtocolError(
        f"upstream protocol error: {_clean(message)}",
        code=code,
        details=[info],
        correlation_id=correlation_id,
    )


# ---------------------------------------------------------------------------------- transport errors

_Target = tuple[type[BridgeError], grpc.StatusCode, str]
_UNAVAILABLE: Final = UpstreamUnavailableError
_TIMEOUT: Final = UpstreamTimeoutError

# Exception type -> (error class, code, what happened). The most specific type in the exception's MRO wins.
# Timeouts: connect/pool timeouts never reached the upstream, so UNAVAILABLE (safe to retry). A read or write
# timeout is the upstream going silent mid-request (for SSE: the gap between chunks): the bridge acts as a
# gateway whose upstream timed out, which is HTTP 504 -> DEADLINE_EXCEEDED; unlike UNAVAILABLE it does not
# make retry policies re-run a generation the upstream may still be producing (and billing).
TRANSPORT_ERRORS: Final[Mapping[type[BaseException], _Target]] = MappingProxyType(
    {
        # --- httpx: every exception class it exports (tests/test_errors.py checks that none is missing)
        httpx.HTTPError: (BridgeError, Code.INTERNAL, "upstream request failed"),
        httpx.RequestError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream request failed"),
        httpx.TransportError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream transport error"),
        httpx.TimeoutException: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "upstream timed out"),
        httpx.ConnectTimeout: (_UNAVAILABLE, Code.UNAVAILABLE, "timed out connecting to upstream"),
        httpx.ReadTimeout: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out waiting for upstream data"),
        httpx.WriteTimeout: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out sending the request upstream"),
        httpx.PoolTimeout: (_UNAVAILABLE, Code.UNAVAILABLE, "no upstream connection free in the pool"),
        httpx.NetworkError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream network error"),
        httpx.ConnectError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not connect to upstream"),
        httpx.ReadError: (_UNAVAILABLE, Code.UNAVAILABLE, "error reading from upstream"),
        httpx.WriteError: (_UNAVAILABLE, Code.UNAVAILABLE, "error sending the request upstream"),
        httpx.CloseError: (_UNAVAILABLE, Code.UNAVAILABLE, "error closing the upstream connection"),
        httpx.ProtocolError: (_UNAVAILABLE, Code.UNAVAILABLE, "HTTP protocol error with upstream"),
        httpx.LocalProtocolError: (BridgeError, Code.INTERNAL, "the bridge built an invalid HTTP request"),
        # Mostly "server disconnected" / "incomplete chunked read": a dropped connection.
        httpx.RemoteProtocolError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream broke the connection"),
        httpx.ProxyError: (_UNAVAILABLE, Code.UNAVAILABLE, "proxy error reaching upstream"),
        httpx.UnsupportedProtocol: (BridgeError, Code.INTERNAL, "unsupported upstream URL scheme"),
        httpx.DecodingError: (UpstreamProtocolError, Code.INTERNAL, "could not decode upstream response"),
        httpx.TooManyRedirects: (UpstreamProtocolError, Code.INTERNAL, "upstream redirected too often"),
        # Only used without a response; with one, error_from_http_response reads it.
        httpx.HTTPStatusError: (UpstreamHTTPError, Code.UNKNOWN, "upstream returned an error status"),
        httpx.InvalidURL: (BridgeError, Code.INTERNAL, "invalid upstream URL"),
        httpx.CookieConflict: (BridgeError, Code.INTERNAL, "conflicting upstream cookies"),
        httpx.StreamError: (BridgeError, Code.INTERNAL, "upstream response stream misused"),
        httpx.StreamConsumed: (BridgeError, Code.INTERNAL, "upstream request stream already consumed"),
        httpx.StreamClosed: (BridgeError, Code.INTERNAL, "upstream response stream already closed"),
        httpx.ResponseNotRead: (BridgeError, Code.INTERNAL, "upstream response not read"),
        httpx.RequestNotRead: (BridgeError, Code.INTERNAL, "upstream request not read"),
        # --- aiohttp, under httpx-aiohttp: its map re-raises unmapped ClientErrors as they are, and maps
        # every ClientConnectionError (DNS, refused, server disconnected) to httpx.ConnectTimeout, so the
        # aiohttp cause of an httpx error is the better witness (see _witness).
        aiohttp.ClientError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream client error"),
        aiohttp.ClientConnectionError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream connection error"),
        aiohttp.ClientConnectorError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not connect to upstream"),
        aiohttp.ClientConnectorDNSError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not resolve upstream host"),
        aiohttp.ClientSSLError: (_UNAVAILABLE, Code.UNAVAILABLE, "TLS error with upstream"),
        aiohttp.ClientProxyConnectionError: (_UNAVAILABLE, Code.UNAVAILABLE, "could not connect to proxy"),
        aiohttp.ClientHttpProxyError: (_UNAVAILABLE, Code.UNAVAILABLE, "proxy refused the request"),
        aiohttp.ServerDisconnectedError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream closed the connection"),
        aiohttp.ServerTimeoutError: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out waiting for upstream data"),
        aiohttp.SocketTimeoutError: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "timed out waiting for upstream data"),
        aiohttp.ConnectionTimeoutError: (_UNAVAILABLE, Code.UNAVAILABLE, "timed out connecting to upstream"),
        aiohttp.ClientPayloadError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream response body cut short"),
        aiohttp.ClientResponseError: (UpstreamProtocolError, Code.INTERNAL, "invalid upstream response"),
        aiohttp.InvalidURL: (BridgeError, Code.INTERNAL, "invalid upstream URL"),
        aiohttp.NonHttpUrlClientError: (BridgeError, Code.INTERNAL, "unsupported upstream URL scheme"),
        # --- bare OS errors that slip past both libraries
        ConnectionError: (_UNAVAILABLE, Code.UNAVAILABLE, "upstream connection error"),
        TimeoutError: (_TIMEOUT, Code.DEADLINE_EXCEEDED, "upstream timed out"),
    }
)


def error_from_transport_exception(
    exc: BaseException, *, domain: str, correlation_id: str | None = None
) -> BridgeError:
    """The error for an exception raised while talking to the upstream (httpx, or aiohttp leaking through).

    ``correlation_id``: the upstream's, when its response had begun before the failure (a body cut
    short). Exceptions no table entry covers are bugs of the bridge: INTERNAL, without their text.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return error_from_http_response(
            response.status_code, response.headers, _read_body(response), domain=domain
        )
    witness = _witness(exc)
    target = _lookup(type(witness))
    if target is None:
        return BridgeError(f"internal error ({type(exc).__name__})", details=[_exception_info(exc, domain)])
    error_class, code, what = target
    text = _clean(_safe_str(witness))
    correlation_id = _clean_opt(correlation_id)
    info = _exception_info(witness, domain, original=exc, correlation_id=correlation_id)
    error = error_class(f"{what}: {text}" if text else what, code=code, details=[info])
    if isinstance(error, UpstreamError):
        error.correlation_id = correlation_id
    return error


def _witness(exc: BaseException) -> BaseException:
    cause = exc.__cause__
    return cause if isinstance(exc, httpx.HTTPError) and isinstance(cause, aiohttp.ClientError) else exc


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # aiohttp's ClientResponseError.__str__ fails without request_info
        return ""


def _lookup(exc_type: type[BaseException]) -> _Target | None:
    for cls in exc_type.__mro__:
        if cls in TRANSPORT_ERRORS:
            return TRANSPORT_ERRORS[cls]
    return None


def _read_body(response: httpx.Response) -> bytes:
    try:
        return response.content
    except httpx.ResponseNotRead:  # a streamed reply nobody read: the status alone has to do
        return b""


def _exception_info(
    exc: BaseException,
    domain: str,
    original: BaseException | None = None,
    correlation_id: str | None = None,
) -> error_details_pb2.ErrorInfo:
    reason = _upper_snake(type(exc).__name__) or "TRANSPORT_ERROR"
    metadata: dict[str, str | None] = {"exception": _qualified(exc), "correlation_id": correlation_id}
    if original is not None and original is not exc:
        metadata["raised_as"] = _qualified(original)
    return _error_info(reason, domain, metadata)


def _qualified(exc: BaseException) -> str:
    # "httpx.ConnectError", not "httpx._exceptions.ConnectError": the public spelling.
    return f"{type(exc).__module__.partition('.')[0]}.{type(exc).__name__}"


# ------------------------------------------------------------------------------------ caller's mistakes


def invalid_request(violations: Sequence[tuple[str, str]], message: str | None = None) -> InvalidRequestError:
    """INVALID_ARGUMENT with a BadRequest; the default message names the first violation."""
    if message is None:
        message = f"invalid request: {_summarise(violations)}" if violations else "invalid request"
    return InvalidRequestError(message, violations)
