"""The bridge's errors and how each becomes a gRPC status (pure: no network IO).

Hierarchy::

    BridgeError                         code + message + rich details, ``to_status()``
    ├── InvalidRequestError             INVALID_ARGUMENT; google.rpc.BadRequest (caller input)
    └── UpstreamError                   talking to the upstream went wrong
        ├── UpstreamHTTPError           non-2xx reply; code from bridge.http.status
        ├── UpstreamStreamError         an error event inside an SSE stream
        ├── UpstreamProtocolError       malformed reply: truncated stream, bad JSON chunk, content type
        ├── UpstreamUnavailableError    connect refused/reset, DNS, TLS, proxy, pool exhausted: UNAVAILABLE
        └── UpstreamTimeoutError        upstream went silent (read/write timeout): DEADLINE_EXCEEDED

An error owns its whole status: code, message, details (``grpc-status-details-bin``) and trailers (the
upstream's correlation id). Who builds errors from upstream replies: ``bridge.upstream.errors`` (error
documents, in-stream events) and the transport's exception map (``bridge.http.transport_errors``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from bridge.redaction import MAX_METADATA_BYTES, clean, clean_optional, truncate

__all__ = [
    "BridgeError",
    "FieldViolation",
    "InvalidRequestError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "bad_request",
    "deadline_exceeded",
    "error_info",
    "invalid_request",
    "protocol_error",
    "reason_from",
    "retry_info",
    "summarise",
]

Code = grpc.StatusCode
FieldViolation = tuple[str, str]  # (field path, what is wrong and how to fix it)

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
    """Base of every error the bridge turns into a gRPC status."""

    default_code: ClassVar[grpc.StatusCode] = Code.INTERNAL

    def __init__(
        self, message: str, *, code: grpc.StatusCode | None = None, details: Sequence[Message] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: tuple[Message, ...] = tuple(details)

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """Plain trailing metadata sent with the status (besides the details)."""
        return ()

    def to_status(self) -> grpc.Status:
        """The status for ``context.abort_with_status``: details travel in ``grpc-status-details-bin``."""
        proto = status_pb2.Status(
            code=self.code.value[0], message=truncate(self.message, _MAX_STATUS_MESSAGE_BYTES)
        )
        for detail in self.details:
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

    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        self.violations = tuple(violations)
        super().__init__(message, details=[bad_request(self.violations)] if self.violations else [])


class UpstreamError(BridgeError):
    """Base of the errors that come from, or happen while talking to, the upstream.

    ``correlation_id``: the upstream's id of the request, returned as the ``x-correlation-id`` trailer;
    ``http_status``: the upstream's reply status when there was one; ``retry_after``: seconds the upstream
    asked callers to wait.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
        correlation_id: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.correlation_id = correlation_id
        self.http_status = http_status
        self.retry_after = retry_after

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((_CORRELATION_TRAILER, self.correlation_id),) if self.correlation_id else ()


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
    domain: str,
    reason: str,
    correlation_id: str | None = None,
    code: grpc.StatusCode = Code.INTERNAL,
) -> UpstreamProtocolError:
    """An UpstreamProtocolError with its ErrorInfo; ``reason`` like "TRUNCATED_STREAM", "INVALID_JSON"."""
    correlation_id = clean_optional(correlation_id)
    info = error_info(reason_from(reason) or "PROTOCOL_ERROR", domain, {"correlation_id": correlation_id})
    return UpstreamProtocolError(
        f"upstream protocol error: {clean(message)}", code=code, details=[info], correlation_id=correlation_id
    )


def deadline_exceeded(correlation_id: str | None = None) -> UpstreamTimeoutError:
    """The call's deadline passed while the bridge waited for the upstream."""
    return UpstreamTimeoutError(
        "upstream did not answer within the call's deadline",
        code=Code.DEADLINE_EXCEEDED,
        correlation_id=correlation_id,
    )


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
                field=truncate(field, MAX_METADATA_BYTES),
                description=truncate(description, MAX_METADATA_BYTES),
            )
            for field, description in violations[:_MAX_VIOLATIONS]
        ]
    )


def error_info(reason: str, domain: str, metadata: Mapping[str, str | None]) -> error_details_pb2.ErrorInfo:
    """An ErrorInfo; metadata entries without a value are left out."""
    kept = {key: value for key, value in metadata.items() if value}
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=kept)


def retry_info(delay_s: float) -> error_details_pb2.RetryInfo:
    """A RetryInfo asking callers to wait `delay_s` seconds (rounded up to the millisecond)."""
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(math.ceil(min(delay_s, _MAX_RETRY_DELAY_S) * 1000))
    return error_details_pb2.RetryInfo(retry_delay=delay)


_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM: Final = re.compile(r"[^A-Za-z0-9]+")
_REASON: Final = re.compile(r"[A-Z][A-Z0-9_]+[A-Z0-9]")  # what ErrorInfo.reason must match


def reason_from(value: str | None) -> str | None:
    """`value` as an ErrorInfo reason ("BadRequestError" -> "BAD_REQUEST_ERROR"), or None if it can't be."""
    if not value:
        return None
    snake = _NON_ALNUM.sub("_", _CAMEL_BOUNDARY.sub("_", value)).strip("_").upper()
    snake = snake[:63].rstrip("_")
    return snake if _REASON.fullmatch(snake) else None
