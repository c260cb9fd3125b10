"""The bridge's errors and how each becomes a gRPC status (pure: no network IO).

Hierarchy::

    BridgeError                         code, message, reason (+ ErrorInfo metadata, details); ``to_status()``
    ├── InvalidRequestError             INVALID_ARGUMENT; google.rpc.BadRequest (caller input)
    └── UpstreamError                   talking to the upstream went wrong
        ├── UpstreamHTTPError           non-2xx reply; code from bridge.http.status
        ├── UpstreamStreamError         an error event inside an SSE stream
        ├── UpstreamProtocolError       malformed reply: truncated stream, bad JSON chunk, content type
        ├── UpstreamUnavailableError    connect refused/reset, DNS, TLS, proxy, pool exhausted: UNAVAILABLE
        └── UpstreamTimeoutError        upstream went silent (read/write timeout): DEADLINE_EXCEEDED

An error owns its whole status: code, message, details (``grpc-status-details-bin``) and trailers (the
upstream's correlation id). Who builds errors from upstream replies: ``bridge.upstream.errors`` (error
documents, in-stream events) and each transport's exception map (``bridge.http.transports``).

The error contract callers match on (AIP-193; docs/errors.md, pinned by tests): every status carries an
``ErrorInfo`` whose ``domain`` is `DOMAIN`, whose ``reason`` is one of `Reason`, and whose metadata keys are
among `Key` (lowerCamelCase); the upstream's own words (its error code, type, host) are metadata values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, Final, NotRequired, Self, TypedDict, Unpack

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from bridge.redaction import MAX_METADATA_BYTES, clean, header_value, printable, truncate

__all__ = [
    "DOMAIN",
    "BridgeError",
    "FieldViolation",
    "InvalidRequestError",
    "Key",
    "Reason",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "bad_request",
    "deadline_exceeded",
    "error_info",
    "internal_error",
    "invalid_request",
    "protocol_error",
    "retry_info",
    "summarise",
]

Code = grpc.StatusCode
FieldViolation = tuple[str, str]  # (field path, what is wrong and how to fix it)

# ErrorInfo.domain of every error: the bridge's API, whatever upstream is behind it (that is `upstreamHost`).
DOMAIN: Final = "grpc-bridge.prisme.ai"


class Reason(StrEnum):
    """Every ErrorInfo.reason the bridge sends. Stable: add, never rename (docs/errors.md says when each)."""

    INVALID_REQUEST = "INVALID_REQUEST"
    INTERNAL = "INTERNAL"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    OVERLOADED = "OVERLOADED"
    UPSTREAM_INVALID_REQUEST = "UPSTREAM_INVALID_REQUEST"
    UPSTREAM_UNAUTHENTICATED = "UPSTREAM_UNAUTHENTICATED"
    UPSTREAM_PERMISSION_DENIED = "UPSTREAM_PERMISSION_DENIED"
    UPSTREAM_NOT_FOUND = "UPSTREAM_NOT_FOUND"
    UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED"
    UPSTREAM_QUOTA_EXCEEDED = "UPSTREAM_QUOTA_EXCEEDED"
    UPSTREAM_CONTEXT_LENGTH_EXCEEDED = "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"
    UPSTREAM_CONTENT_FILTERED = "UPSTREAM_CONTENT_FILTERED"
    UPSTREAM_PAYLOAD_TOO_LARGE = "UPSTREAM_PAYLOAD_TOO_LARGE"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    UPSTREAM_INVALID_RESPONSE = "UPSTREAM_INVALID_RESPONSE"
    UPSTREAM_RESPONSE_TOO_LARGE = "UPSTREAM_RESPONSE_TOO_LARGE"
    UPSTREAM_STREAM_TRUNCATED = "UPSTREAM_STREAM_TRUNCATED"
    UPSTREAM_STREAM_INCOMPLETE = "UPSTREAM_STREAM_INCOMPLETE"
    UPSTREAM_UNREACHABLE = "UPSTREAM_UNREACHABLE"
    UPSTREAM_CONNECTION_LOST = "UPSTREAM_CONNECTION_LOST"
    UPSTREAM_POOL_EXHAUSTED = "UPSTREAM_POOL_EXHAUSTED"
    UPSTREAM_FILTER_UNSUPPORTED = "UPSTREAM_FILTER_UNSUPPORTED"
    UPSTREAM_REDIRECTED = "UPSTREAM_REDIRECTED"
    CALLER_NOT_ALLOWED = "CALLER_NOT_ALLOWED"
    CALLER_CREDENTIALS_REQUIRED = "CALLER_CREDENTIALS_REQUIRED"


class Key(StrEnum):
    """Every ErrorInfo.metadata key the bridge sends (lowerCamelCase, AIP-193). Stable: add, never rename."""

    HTTP_STATUS = "httpStatus"  # the upstream's HTTP status, when it answered with one
    CORRELATION_ID = "correlationId"  # the upstream's id of the request (also the x-correlation-id trailer)
    UPSTREAM_HOST = "upstreamHost"  # the host the bridge called
    UPSTREAM_CODE = "upstreamCode"  # the upstream's own error code, verbatim ("rate_limit_exceeded", "400")
    UPSTREAM_TYPE = "upstreamType"  # the upstream's error type ("invalid_request_error", "BadRequestError")
    UPSTREAM_PARAM = "upstreamParam"  # the request parameter the upstream blamed
    UPSTREAM_DETAILS = "upstreamDetails"  # the upstream's details object, compact JSON
    CAUSE = "cause"  # what the network said: "connection refused", "name resolution failed", ...
    LOCATION = "location"  # where a redirect (never followed) pointed, without its query
    CALLER_IDENTITY = "callerIdentity"  # the identities a refused client certificate presented


# The status message: upstream text (redaction.MAX_TEXT_BYTES) plus the bridge's "upstream HTTP 429: ".
_MAX_STATUS_MESSAGE_BYTES: Final = 1280
_MAX_VIOLATIONS: Final = 10
# Java and C-core clients refuse trailers over 8 KiB by default (grpc.max_metadata_size): a status
# over this budget sheds details rather than reach the caller as an opaque metadata-size error.
_TRAILER_BUDGET: Final = 7 * 1024
# Only bounds a hostile or broken header (Duration has a range); real hints are seconds to hours.
_MAX_RETRY_DELAY_S: Final = 86_400.0
_CORRELATION_TRAILER: Final = "x-correlation-id"


# --------------------------------------------------------------------------------------------- hierarchy


class BridgeError(Exception):
    """Base of every error the bridge turns into a gRPC status.

    Its fields: the status `code` and `message`; the `reason` callers match on (the status's ErrorInfo
    reason, and what decides a retry) and that ErrorInfo's `metadata`; further `details` (RetryInfo,
    BadRequest, ...) after it. The ErrorInfo is built by `to_status`. An error is never changed once made:
    `evolve` makes a copy that says more (the attempts a retried request took, a failure before any reply).
    """

    default_code: ClassVar[grpc.StatusCode] = Code.INTERNAL

    message: str
    code: grpc.StatusCode
    reason: Reason
    metadata: Mapping[Key, str]  # entries with a value; cleaned and bounded by `to_status`
    details: tuple[Message, ...]

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        *,
        reason: Reason,
        metadata: Mapping[Key, str | None] | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        kept = {key: value for key, value in (metadata or {}).items() if value}
        self._init(
            message=message,
            code=code or self.default_code,
            reason=reason,
            metadata=MappingProxyType(kept),
            details=tuple(details),
        )

    def _init(self, **fields: object) -> None:
        """Sets fields while the error is being made (see `__setattr__`)."""
        self.__dict__.update(fields)

    def __setattr__(self, name: str, value: object) -> None:
        if name.startswith("__"):  # the exception machinery's own: __traceback__, __notes__, ...
            super().__setattr__(name, value)
            return
        raise AttributeError(f"{type(self).__name__} is not changed once made: evolve() makes a copy")

    def evolve(self, **changes: Any) -> Self:
        """A copy of this error with `changes` to its fields; this one stays as it was raised."""
        unknown = sorted(changes.keys() - self.__dict__.keys())
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(unknown)}")
        copy = type(self).__new__(type(self), changes.get("message", self.message))
        copy._init(**{**self.__dict__, **changes})
        return copy

    def error_info(self) -> error_details_pb2.ErrorInfo:
        """The ErrorInfo of the contract for `reason` and `metadata`."""
        return error_info(self.reason, self.metadata)

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """Plain trailing metadata sent with the status (besides the details)."""
        return ()

    def to_status(self) -> grpc.Status:
        """The status for ``context.abort_with_status``: details travel in ``grpc-status-details-bin``."""
        # printable: the message quotes upstream text, cleaned where it was quoted; this is the last net.
        message = truncate(printable(self.message), _MAX_STATUS_MESSAGE_BYTES)
        proto = status_pb2.Status(code=self.code.value[0], message=message)
        for detail in (self.error_info(), *self.details):
            proto.details.add().Pack(detail)
        # Details are ordered most useful first (ErrorInfo, RetryInfo, then BadRequest): shed from the end.
        while proto.details and _trailer_bytes(proto) > _TRAILER_BUDGET:
            del proto.details[-1]
        status = rpc_status.to_status(proto)
        extra = self.trailers()
        return _Status(status.code, status.details, (*status.trailing_metadata, *extra)) if extra else status


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


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
    violations: tuple[FieldViolation, ...]

    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        details = [bad_request(violations)] if violations else []
        super().__init__(message, reason=Reason.INVALID_REQUEST, details=details)
        self._init(violations=tuple(violations))


class _ErrorFields(TypedDict):
    """BridgeError's own keyword fields, as a subclass passes them on."""

    reason: Reason
    metadata: NotRequired[Mapping[Key, str | None] | None]
    details: NotRequired[Sequence[Message]]


class UpstreamError(BridgeError):
    """Base of the errors that come from, or happen while talking to, the upstream.

    ``correlation_id``: the upstream's id of the request, returned as the ``x-correlation-id`` trailer;
    ``http_status``: the upstream's reply status when there was one; ``retry_after``: seconds the upstream
    asked callers to wait; ``before_reply``: the request failed before any reply began (nothing the
    upstream answered was received: bridge.http.retry may send it again); ``attempts``: how many times the
    request was sent (`after_attempts`).
    """

    correlation_id: str | None
    http_status: int | None
    retry_after: float | None
    before_reply: bool
    attempts: int

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        *,
        correlation_id: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        before_reply: bool = False,
        **fields: Unpack[_ErrorFields],
    ) -> None:
        super().__init__(message, code, **fields)
        self._init(
            correlation_id=correlation_id,
            http_status=http_status,
            retry_after=retry_after,
            before_reply=before_reply,
            attempts=1,
        )

    def after_attempts(self, attempts: int) -> Self:
        """This error as the end of a request sent `attempts` times: its message says so."""
        return self.evolve(message=f"{self.message} (after {attempts} attempts)", attempts=attempts)

    def trailers(self) -> tuple[tuple[str, str], ...]:
        # Metadata values are printable ASCII, or grpc core fails the call: sanitised where it was read,
        # and checked here again.
        correlation_id = header_value(self.correlation_id)
        return ((_CORRELATION_TRAILER, correlation_id),) if correlation_id else ()


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status."""


class UpstreamStreamError(UpstreamError):
    """The upstream reported an error inside an event stream (after its 200)."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's reply could not be understood."""


class UpstreamUnavailableError(UpstreamError):
    """The upstream could not be reached or dropped the connection."""

    default_code = Code.UNAVAILABLE


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer, or stopped sending, within the bridge's timeouts."""

    default_code = Code.DEADLINE_EXCEEDED


# -------------------------------------------------------------------------------------- constructors


def protocol_error(
    message: str,
    *,
    host: str,
    reason: Reason,
    correlation_id: str | None = None,
    code: grpc.StatusCode = Code.INTERNAL,
) -> UpstreamProtocolError:
    """An UpstreamProtocolError: the upstream's reply could not be understood."""
    correlation_id = header_value(correlation_id)
    return UpstreamProtocolError(
        f"upstream protocol error: {clean(message)}",
        code,
        reason=reason,
        metadata={Key.UPSTREAM_HOST: host, Key.CORRELATION_ID: correlation_id},
        correlation_id=correlation_id,
    )


def deadline_exceeded(host: str, correlation_id: str | None = None) -> UpstreamTimeoutError:
    """The call's deadline passed while the bridge waited for the upstream."""
    correlation_id = header_value(correlation_id)
    return UpstreamTimeoutError(
        "upstream did not answer within the call's deadline",
        Code.DEADLINE_EXCEEDED,
        reason=Reason.DEADLINE_EXCEEDED,
        metadata={Key.UPSTREAM_HOST: host, Key.CORRELATION_ID: correlation_id},
        correlation_id=correlation_id,
    )


def internal_error(message: str = "internal error in the bridge; see its logs") -> BridgeError:
    """INTERNAL, for what is the bridge's own fault; the message says nothing of the cause."""
    return BridgeError(message, reason=Reason.INTERNAL)


def invalid_request(violations: Sequence[FieldViolation], message: str | None = None) -> InvalidRequestError:
    """INVALID_ARGUMENT with a BadRequest; the default message names the first violation."""
    if message is None:
        message = f"invalid request: {summarise(violations)}" if violations else "invalid request"
    return InvalidRequestError(message, violations)


def summarise(violations: Sequence[FieldViolation]) -> str:
    """ "field: description (and N more)" of the first violation."""
    field, description = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{field}: {description}{more}"


# ----------------------------------------------------------------------------------- rich detail protos


def bad_request(violations: Sequence[FieldViolation]) -> error_details_pb2.BadRequest:
    """A BadRequest of the first few violations (enough to act on; all of them could pass 8 KiB)."""
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=truncate(printable(field), MAX_METADATA_BYTES),
                description=truncate(printable(description), MAX_METADATA_BYTES),
            )
            for field, description in violations[:_MAX_VIOLATIONS]
        ]
    )


def error_info(reason: Reason, metadata: Mapping[Key, str | None]) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of the contract; metadata entries without a value are left out, the others escaped
    and bounded (bridge.redaction: cleaned where they were read; this is the last net)."""
    kept = {
        str(key): truncate(printable(value), MAX_METADATA_BYTES) for key, value in metadata.items() if value
    }
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=kept)


def retry_info(delay_s: float) -> error_details_pb2.RetryInfo:
    """A RetryInfo asking callers to wait `delay_s` seconds (rounded up to the millisecond)."""
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(math.ceil(min(delay_s, _MAX_RETRY_DELAY_S) * 1000))
    return error_details_pb2.RetryInfo(retry_delay=delay)
