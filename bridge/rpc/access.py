"""The access log: one line per call when it ends (`AccessLog`), its facts (`access_fields`) and a failed
call's reason and cause in the bridge's words (`failure_of`).

With the process's own handler and format (bridge.logs.setup_logging) the lines are written straight to
the handler, as records would have made them, without the record machinery: on the call's path the call
only joins the lines waiting in the handler's batch; they are made together when the handler writes it,
after the replies are sent. With any other handler (a test capturing records, an embedding application's)
each line is a record.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, Protocol, cast

import grpc

from bridge.errors import BridgeError, Key, Reason, UpstreamHTTPError, UpstreamStreamError
from bridge.redaction import MAX_METADATA_BYTES, clean, header_value
from bridge.rpc.call import PLUMBING_SERVICES, RpcCall
from bridge.rpc.interceptors import Interceptor

__all__ = ["TAIL_FIELDS", "AccessLog", "access_fields", "failure_of"]

access_log = logging.getLogger("bridge.access")


class _LineFormatter(Protocol):
    """bridge.logs' formatters (a layer above this one): a line made as a record would be, from a head
    made once (their `LineHead`, kept here as it is)."""

    def head(self, level: str, logger: str, message: str, fields: Mapping[str, object]) -> object: ...

    def line_after(self, created: float, head: Any, fields: Mapping[str, object]) -> str: ...

    def after(self, created: float, text: str, fields: Mapping[str, object]) -> str | None: ...


def _writes_lines(handler: logging.Handler) -> bool:
    """bridge.logs.LineHandler's: lines given to `write_line`, `made` to tell a line that failed."""
    return hasattr(handler, "write_line") and hasattr(handler, "made")


def _line_writer(logger: logging.Logger, level: int) -> tuple[Any, _LineFormatter] | None:
    """The one handler a record of `logger` at `level` would reach, and its formatter, if writing a line
    straight to it gives what the logging machinery would: no filter on the way, and a handler with
    `write_line` and `made` whose formatter has `head`, `after` and `line_after` (bridge.logs.setup_logging).
    None otherwise (tests capturing records, an embedding application's handlers): then a record is made."""
    if logger.filters or logger.manager.disable >= level:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level < handler.level:
                continue
            if found is not None or handler.filters or not _writes_lines(handler):
                return None
            found = handler
        current = current.parent if current.propagate else None
    formatter = found.formatter if found is not None else None
    if formatter is None or not all(hasattr(formatter, name) for name in ("head", "after", "line_after")):
        return None
    return found, cast(_LineFormatter, formatter)


class AccessLog(Interceptor):
    """One line per call when it ends, on the `bridge.access` logger: the method and its code as the
    message; the call's facts as the record's `fields` (bridge.logs renders them as key=value or JSON keys):
    duration, the caller's identity (bridge.rpc.callers: its certificate's allowed SAN, else "anonymous"),
    model, upstream status and correlation id, upstream attempts when a request was retried, chunks sent,
    the reason and cause of a call that did not end OK (`failure_of`), token counts and cost, trace id.

    OK and CANCELLED are INFO, other codes WARNING. Health checks and reflection are not logged. Only
    facts are logged, never metadata or message content; caller and upstream strings are redacted and
    bounded (bridge.redaction).
    """

    def __init__(
        self, logger: logging.Logger | None = None, *, skip_services: Collection[str] = PLUMBING_SERVICES
    ) -> None:
        self._log = logger or access_log
        self.skip_services = frozenset(skip_services)
        # What makes the lines per formatter, method and code (which gives the level), around the start of
        # the line (level, logger, message, service, method, code) made once: the same for every call of a
        # method ending with one code. Keyed by the code's id: a StatusCode's own hash is Enum's, a call
        # into Python.
        self._makers: dict[tuple[object, str, int], _MakeLine] = {}
        # The calls whose lines wait in the batch of the process's own handler (below), if any.
        self._waiting: _WaitingLines | None = None

    def call_ended(self, call: RpcCall, started: object) -> None:
        self._write(call)

    def _write(self, call: RpcCall) -> None:
        code = call.code
        level = logging.INFO if code is _OK or code is _CANCELLED else logging.WARNING
        if not self._log.isEnabledFor(level):
            return
        _ = call.overhead_seconds  # fixed now, by its first read, before the duration is read
        ended = (call, time.time(), call.elapsed_ms)
        # On the call's path, only this: the call joins the lines waiting in the handler's batch; they are
        # made together when the handler writes it (after the replies are sent), from the facts as they
        # are now.
        waiting = self._waiting
        if waiting is None or not waiting.waiting or level not in waiting.levels:
            waiting = self._join(level)
            if waiting is None:  # a handler of another kind (a test capturing records, an application's)
                self._record(call, level)
                return
        calls = waiting.calls
        calls.append(ended)
        if len(calls) == 1:  # the batch's first: handed to the handler now that it holds the call (with no
            waiting.handler.write_line(waiting)  # event loop running, the handler writes it at once)
        elif len(calls) >= _MAX_WAITING_CALLS:
            waiting.handler.flush()

    def _join(self, level: int) -> _WaitingLines | None:
        """The lines a line of `level` joins: where it goes found by walking the logger tree (once per batch
        and level: a handler added meanwhile gets the lines of the next batch on), the waiting lines kept if
        they go there too, else new ones; None for a handler of another kind, whose lines are records."""
        direct = _line_writer(self._log, level)
        if direct is None:
            return None
        handler, formatter = direct
        waiting = self._waiting
        if (
            waiting is None
            or not waiting.waiting
            or waiting.handler is not handler
            or waiting.formatter is not formatter
        ):
            # The process's own handler and format (bridge.logs.setup_logging): the lines written straight
            # to it, as records would have made them, without the record machinery (a line per call).
            waiting = self._waiting = _WaitingLines(self, handler, formatter)
        waiting.levels.add(level)
        return waiting

    def line(self, formatter: _LineFormatter, ended: _Ended) -> str:
        """The access line of a call that ended (`_write`'s `ended`), in `formatter`'s format."""
        call, created, elapsed_ms = ended
        make = self._makers.get((formatter, call.method, id(call.code)))
        return (make or self._maker(formatter, call))(created, call, elapsed_ms)

    def _record(self, call: RpcCall, level: int) -> None:
        """The line as a record, through the logging machinery (handlers other than setup_logging's)."""
        fields = access_fields(call)
        # Made here rather than by Logger.log, which would walk the stack for the caller's file and line.
        args = (call.name, call.code.name)
        self._log.handle(
            self._log.makeRecord(
                self._log.name, level, _SOURCE, 0, "%s %s", args, None, extra={"fields": fields}
            )
        )

    def _maker(self, formatter: _LineFormatter, call: RpcCall) -> _MakeLine:
        """What makes the lines for this formatter, method and code (which gives the level), made from the
        line's head and kept."""
        if len(self._makers) >= _MAX_HEADS:  # a bound, whatever methods and formatters come and go
            self._makers.clear()
        level = logging.INFO if call.code is _OK or call.code is _CANCELLED else logging.WARNING
        message = f"{call.name} {call.code.name}"
        head = formatter.head(_LEVEL_NAMES[level], self._log.name, message, _head_fields(call))
        make = _line_maker(formatter, head)
        self._makers[(formatter, call.method, id(call.code))] = make
        return make


# What makes an access line when the handler writes it: (the time the call ended, the call, its duration).
_MakeLine = Callable[[float, RpcCall, float], str]
# A call that ended, as its line waits: (the call, the time it ended, its duration in ms).
_Ended = tuple[RpcCall, float, float]


class _WaitingLines:
    """The access lines waiting in one batch of the process's LineHandler: one entry of its batch for all
    the calls that ended meanwhile, their lines made together when it writes the batch (where the first of
    them joined it: a record, or the batch's end, writes them all, so lines keep their order)."""

    __slots__ = ("calls", "formatter", "handler", "levels", "log", "waiting")

    def __init__(self, log: AccessLog, handler: Any, formatter: _LineFormatter) -> None:
        self.log, self.handler, self.formatter = log, handler, formatter
        self.levels: set[int] = set()  # the levels whose lines the logger tree sends there, in this batch
        self.calls: list[_Ended] = []
        self.waiting = True  # False once made: later calls join the next batch

    def __call__(self) -> str:
        calls, self.calls, self.waiting = self.calls, [], False
        line, formatter = self.log.line, self.formatter
        try:  # in one pass; a failure made again line by line, so it costs its own line only
            lines = [line(formatter, ended) for ended in calls]
        except Exception:
            made = self.handler.made
            lines = [made(functools.partial(line, formatter, ended)) for ended in calls]
        return self.handler.terminator.join(lines)  # type: ignore[no-any-return]


def _line_maker(formatter: _LineFormatter, head: Any) -> _MakeLine:
    """The lines of one head: the head's text followed by the call's facts (`_tail_fields`), whose names
    are checked against the head's once here rather than per line."""
    line_after = formatter.line_after
    text: str | None = getattr(head, "text", None)
    keys = getattr(head, "keys", None)
    if text is None or not isinstance(keys, frozenset) or not keys.isdisjoint(TAIL_FIELDS):

        def slow(created: float, call: RpcCall, elapsed_ms: float) -> str:
            return line_after(created, head, _tail_fields(call, elapsed_ms))

        return slow
    after = formatter.after

    def make(created: float, call: RpcCall, elapsed_ms: float) -> str:
        fields = _tail_fields(call, elapsed_ms)
        made = after(created, text, fields)
        return made if made is not None else line_after(created, head, fields)

    return make


def access_fields(call: RpcCall, elapsed_ms: float | None = None) -> dict[str, object]:
    """The facts of a finished call worth a log line, those it has (None left out), in a stable order;
    `elapsed_ms`: its duration, if it ended before now."""
    return {**_head_fields(call), **_tail_fields(call, elapsed_ms)}


def _head_fields(call: RpcCall) -> dict[str, object]:
    """The facts every call of one method that ends with one code shares (the access line's head)."""
    return {"service": call.service, "method": call.name, "code": call.code.name}


# Every fact `_tail_fields` may give (a test holds them equal): none may be one of the head's keys.
TAIL_FIELDS: Final = frozenset(
    {
        "ms", "caller", "model", "upstream", "upstream_status", "upstream_attempts", "overhead_ms", "chunks",
        "correlation_id", "reason", "cause", "prompt_tokens", "completion_tokens", "cost", "trace_id",
    }
)  # fmt: skip


def _tail_fields(call: RpcCall, elapsed_ms: float | None) -> dict[str, object]:
    """access_fields after the head's."""
    overhead = call.overhead_seconds  # before the duration: overhead + upstream time <= duration
    fields: dict[str, object] = {
        # To 0.1 ms (0.01 for the overhead) by an integer round: `round(x, 1)` goes through a decimal
        # string, three times the cost; the two differ only for an x a hair from a half.
        "ms": round((call.elapsed_ms if elapsed_ms is None else elapsed_ms) * 10) / 10,
        "caller": call.caller.identity,  # printable ASCII and bounded where it was read (bridge.auth)
    }
    # One test per optional fact, in the order of the line (this runs once per call, on the event loop).
    if call.model:
        fields["model"] = _logged_model(call.model)
    if call.upstream is not None:
        fields["upstream"] = call.upstream
    if call.upstream_status is not None:
        fields["upstream_status"] = call.upstream_status
    if call.upstream_attempts > 1:
        fields["upstream_attempts"] = call.upstream_attempts
    if overhead is not None:
        fields["overhead_ms"] = round(overhead * 100_000) / 100
    if call.response_streaming:
        fields["chunks"] = call.messages_sent
    if call.correlation_id:
        # Sanitised where it was read (bridge.upstream.headers); again here, as everything a line carries.
        correlation_id = header_value(call.correlation_id)
        if correlation_id is not None:
            fields["correlation_id"] = correlation_id
    if call.code is not _OK:
        fields["reason"], fields["cause"] = failure_of(call)
    # The usage and the trace, each tested by name: a loop of getattr over their names costs more.
    if call.prompt_tokens is not None:
        fields["prompt_tokens"] = call.prompt_tokens
    if call.completion_tokens is not None:
        fields["completion_tokens"] = call.completion_tokens
    if call.cost is not None:
        fields["cost"] = call.cost
    if call.trace_id is not None:
        fields["trace_id"] = call.trace_id
    return fields


def failure_of(call: RpcCall) -> tuple[str, str]:
    """(reason, cause) of a call that did not end OK, for an operator reading the access log: the
    ErrorInfo reason its status carried, and the cause in the bridge's words (the status message: what
    failed, where, and what the network said; for a redirect, where it pointed). The upstream's own words
    may quote a request, so an error it answered is told by its HTTP status and error code only. A call
    that ended without a status of the bridge's (the client cancelled, its deadline passed) has the code's
    name as its reason."""
    error = call.error
    if not isinstance(error, BridgeError):
        return call.code.name, _ENDED.get(call.code, "the handler set the status")
    reason = error.reason
    cause = error.message
    if isinstance(error, UpstreamHTTPError | UpstreamStreamError) and reason != Reason.UPSTREAM_REDIRECTED:
        status = error.http_status
        cause = f"upstream HTTP {status}" if status else "upstream error event in its stream"
        code = error.metadata.get(Key.UPSTREAM_CODE)
        cause += f" ({clean(code, MAX_METADATA_BYTES)})" if code else ""
    return reason, clean(cause, _MAX_LOGGED_CAUSE_BYTES)


# How a call ends when no status of the bridge's is sent.
_ENDED: Final = {
    grpc.StatusCode.CANCELLED: "the client cancelled the call",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the call's deadline passed",
}
_MAX_LOGGED_CAUSE_BYTES: Final = 512
_SOURCE: Final = __file__  # the access line's pathname
_LEVEL_NAMES: Final = {logging.INFO: "INFO", logging.WARNING: "WARNING"}
_MAX_HEADS: Final = 1024
_MAX_WAITING_CALLS: Final = 256  # lines waiting in one batch (bridge.logs.LineHandler.MAX_WAITING's)
_OK: Final = grpc.StatusCode.OK
_CANCELLED: Final = grpc.StatusCode.CANCELLED


_MAX_LOGGED_MODEL_BYTES: Final = 256  # the contract's limit on `model`


@functools.lru_cache(maxsize=1024)
def _logged_model(model: str) -> str:
    # Callers send a few model names again and again: redact each once.
    return clean(model, _MAX_LOGGED_MODEL_BYTES)
