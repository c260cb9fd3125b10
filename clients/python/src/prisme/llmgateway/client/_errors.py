"""The google.rpc error details of a failed call (the `grpc-status-details-bin` trailer), decoded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

__all__ = ["DETAILS_KEY", "ErrorDetails", "error_details"]

DETAILS_KEY: Final = "grpc-status-details-bin"

_M = TypeVar("_M", bound=Message)

_KNOWN: Final[tuple[type[Message], ...]] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


@dataclass(frozen=True)
class ErrorDetails:
    """Status and details of a failed call. Unknown detail types stay packed in `details` as Any."""

    code: grpc.StatusCode
    message: str
    details: tuple[Message, ...] = ()

    def _first(self, kind: type[_M]) -> _M | None:
        return next((d for d in self.details if isinstance(d, kind)), None)

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        """The ErrorInfo detail: `reason` (e.g. UPSTREAM_RATE_LIMITED), `domain`, `metadata`."""
        return self._first(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str:
        """ErrorInfo.reason, or "" without an ErrorInfo."""
        info = self.error_info
        return info.reason if info is not None else ""

    @property
    def retry_delay(self) -> timedelta | None:
        """RetryInfo.retry_delay: how long to wait before retrying, when the server said so."""
        info = self._first(error_details_pb2.RetryInfo)
        return info.retry_delay.ToTimedelta() if info is not None else None

    @property
    def field_violations(self) -> list[error_details_pb2.BadRequest.FieldViolation]:
        """BadRequest field violations (field path and description), empty without a BadRequest."""
        bad = self._first(error_details_pb2.BadRequest)
        return list(bad.field_violations) if bad is not None else []


def _unpack(packed: any_pb2.Any) -> Message:
    for kind in _KNOWN:
        if packed.TypeName() == kind.DESCRIPTOR.full_name:
            detail = kind()
            packed.Unpack(detail)
            return detail
    return packed


def _trailer(error: grpc.RpcError) -> bytes | None:
    # Sync and asyncio errors both iterate their trailers as (key, value) pairs; grpc-stubs types them
    # differently (and the sync one wrongly), hence the cast.
    for key, value in cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ()):
        if key == DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Code, message and decoded google.rpc details of a failed call (sync `grpc.RpcError` or asyncio
    `grpc.aio.AioRpcError`). Without a details trailer, or with one that does not decode, `details` is
    empty; the code and message still come from the call."""
    if not callable(getattr(error, "code", None)):  # a bare RpcError raised outside a call
        return ErrorDetails(grpc.StatusCode.UNKNOWN, str(error))
    code, message = error.code(), error.details() or ""
    raw = _trailer(error)
    if raw is None:
        return ErrorDetails(code, message)
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except DecodeError:
        return ErrorDetails(code, message)
    return ErrorDetails(code, message, tuple(_unpack(d) for d in status.details))
