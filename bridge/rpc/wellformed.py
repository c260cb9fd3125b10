"""Calls that are not well-formed gRPC: a request message that does not decode, metadata that is not text.

grpc's own handling of both is wrong for a server facing untrusted callers. An undecodable message ends the
call UNKNOWN and logs an ERROR with a traceback per request; a metadata value that is not UTF-8 is logged
as an ERROR with a traceback and the value itself (which may be a credential), twice, and handed on decoded
as Latin-1. Here both end the call INVALID_ARGUMENT (reason INVALID_REQUEST) through the interceptor chain,
like any other invalid request (one access line, no traceback), and grpc's log line about the metadata is
replaced by a warning without the value, at most one per `REPORT_INTERVAL_S`.

gRPC metadata values (keys not ending in "-bin") are printable ASCII by the protocol's definition; grpc's
C-core and Java clients cannot send anything else, so only a raw HTTP/2 client or a broken proxy does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

from bridge.errors import InvalidRequestError, invalid_request

__all__ = ["REPORT_INTERVAL_S", "Undecodable", "checked_request", "install_log_filter", "lenient"]

REPORT_INTERVAL_S: Final = 60.0
_GRPC_DECODE_LOGGER: Final = "grpc._cython.cygrpc"
_GRPC_DECODE_MESSAGE: Final = "Invalid encoding on %s"  # grpc/_cython/_cygrpc/grpc_string.pyx.pxi


class Undecodable:
    """What the lenient deserializer hands the chain instead of a request message that did not decode."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidRequestError:
        return invalid_request(
            [],
            f"the request is not a valid {self.type_name} message: its protobuf encoding could not be "
            "decoded (is the client using this service's .proto?)",
        )


Deserializer = Callable[[bytes], Any]


def lenient(deserializer: Deserializer | None) -> Deserializer | None:
    """`deserializer`, returning an `Undecodable` instead of raising (grpc would log a traceback)."""
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)  # SomeRequest.FromString
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    undecodable = Undecodable(getattr(descriptor, "full_name", "request"))

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # protobuf's DecodeError, or whatever another deserializer raises
            return undecodable

    return deserialize


def checked_request(request: Any, metadata: Iterable[tuple[str, Any]] | None, *, streams_in: bool) -> Any:
    """`request` if the call is well-formed, else raises InvalidRequestError; a request stream (`streams_in`)
    is returned wrapped, raising when the handler reaches a message that did not decode."""
    for key, value in metadata or ():
        if isinstance(value, str) and not (value.isascii() and value.isprintable()):
            raise invalid_request(
                [],
                f"metadata {key!r} is not printable ASCII: gRPC metadata values are ASCII text "
                "(binary values go under a key ending in -bin)",
            )
    if streams_in:
        return _checked_stream(request)
    if isinstance(request, Undecodable):
        raise request.error()
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request.error()
        yield request


class _InvalidMetadataReport(logging.Filter):
    """Turns grpc's ERROR records about metadata that is not UTF-8 (traceback and value included) into at
    most one WARNING per interval, without either."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._last = -math.inf
        self._skipped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _GRPC_DECODE_MESSAGE:
            return True
        now = self._clock()
        if now - self._last < self._interval_s:
            self._skipped += 1
            return False
        self._last, skipped, self._skipped = now, self._skipped, 0
        record.msg = "caller metadata that is not valid UTF-8 was refused (INVALID_ARGUMENT)%s"
        record.args = (f"; {skipped} more such values since the last report" if skipped else "",)
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install_log_filter(
    interval_s: float = REPORT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
) -> logging.Filter:
    """Installs the report on grpc's logger, replacing one installed before; returns it."""
    logger = logging.getLogger(_GRPC_DECODE_LOGGER)
    for existing in [f for f in logger.filters if isinstance(f, _InvalidMetadataReport)]:
        logger.removeFilter(existing)
    report = _InvalidMetadataReport(interval_s, clock)
    logger.addFilter(report)
    return report
