"""Interceptors: one concern per `Interceptor`, run around every RPC, unary or streaming alike (the chain
that runs them: bridge.rpc.chain), and the two every server has, error mapping and the access log.

An interceptor either overrides `around` (an async context manager around the whole call) or the plain
hooks `call_started`/`call_ended` (nothing to await or catch: the cheaper form, run in one try/finally).

`ErrorMapping` is pinned innermost by `bridge.rpc.server.build_server`: it turns what a handler raised
into the call's status, so every interceptor outside it sees `call.code` final when its `around` exits.
A call that is not well-formed gRPC (an undecodable message, metadata that is not text) reaches no
handler: it ends INVALID_ARGUMENT inside the interceptors (bridge.rpc.wellformed).

Per-message hooks: an interceptor that overrides `message_sent` or `message_received` is called for each
message of the calls it applies to (live counters); the others cost nothing per message. One that
overrides `trailers` adds trailing metadata to every status of those calls: after a handler returned or
its stream ended, and on every error (`abort`, which grpc sends at once, so nothing set later counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, NoReturn, Protocol, cast

import grpc

from bridge.errors import (
    BridgeError,
    Key,
    Reason,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamStreamError,
    internal_error,
)
from bridge.redaction import MAX_METADATA_BYTES, clean, header_value
from bridge.rpc.call import PLUMBING_SERVICES, Context, RpcCall, Trailers, split_method

__all__ = [
    "AccessLog",
    "ErrorMapping",
    "Hook",
    "Interceptor",
    "abort",
    "access_fields",
    "failure_of",
]

log = logging.getLogger(__name__)
access_log = logging.getLogger("bridge.access")
_NOTHING: Final = contextlib.nullcontext()


class Interceptor:
    """One concern around the RPCs it applies to. Subclasses override `around`, and leave services out
    with `skip_services` (health and reflection: `PLUMBING_SERVICES`) or override `applies_to`.

    `around(call, context)` wraps the whole RPC (for a stream: until its last message is sent). What the RPC
    raised passes through it: outside `ErrorMapping` that is `grpc.aio.AbortError` (the status is set) or
    `asyncio.CancelledError`, and `call.code` is final on the way out. Re-raise what you catch.
    """

    skip_services: frozenset[str] = frozenset()  # services it never runs for

    def applies_to(self, method: str) -> bool:
        """Whether this interceptor runs for `method` ("/pkg.Service/Method"); decided once per method."""
        return split_method(method)[0] not in self.skip_services

    def around(self, call: RpcCall, context: Context) -> AbstractAsyncContextManager[object]:
        """By default the plain hooks (if this interceptor has them) as a context manager: how a chain
        that nests context managers, or a test, runs them. A `BridgeError` raised by `call_started` (a
        refusal) ends the call with its status there, since ErrorMapping is inside."""
        return _HookScope(self, call, context) if _hooks(self) else _NOTHING

    def call_started(self, call: RpcCall, context: Context) -> object:
        """A plain hook, for an interceptor that needs no `around` (nothing to await, nothing to catch): run
        as the call starts, in chain order; what it returns is given to `call_ended`."""
        return None

    def call_ended(self, call: RpcCall, started: object) -> None:
        """The plain hook run as the call ends, whatever ended it (a `finally`, in reverse chain order):
        `call.code` is final. `started`: what `call_started` returned."""

    def message_sent(self, call: RpcCall) -> None:
        """After each response message the chain writes (`call.messages_sent` already counts it); for a
        unary call, once its handler returned a reply. Messages a handler writes with `context.write`
        itself (health's Watch) are not seen."""

    def message_received(self, call: RpcCall) -> None:
        """For each request message handed to the handler (`call.messages_received` counts it): once for
        a unary request, as the handler starts; per message for a request stream, as the handler reads."""

    def trailers(self, call: RpcCall) -> Trailers:
        """Trailing metadata to add to the call's status, asked once just before it is sent (inside every
        `around`), whichever status it is; not asked for a call that was cancelled or whose deadline
        passed (no status is sent). Interceptors that do not override it cost nothing."""
        return ()


Hook = Callable[[RpcCall], None]


def _overrides(interceptor: Interceptor, name: str) -> bool:
    """Whether `interceptor` (its class, or the instance itself) replaces Interceptor's method `name`."""
    method = getattr(interceptor, name)
    return getattr(method, "__func__", method) is not getattr(Interceptor, name)


def _hooks(interceptor: Interceptor) -> bool:
    return _overrides(interceptor, "call_started") or _overrides(interceptor, "call_ended")


class _HookScope(AbstractAsyncContextManager[None]):
    """An interceptor's plain hooks as an async context manager (Interceptor.around's default)."""

    __slots__ = ("_call", "_context", "_interceptor", "_started")

    def __init__(self, interceptor: Interceptor, call: RpcCall, context: Context) -> None:
        self._interceptor, self._call, self._context = interceptor, call, context
        self._started: object = None

    async def __aenter__(self) -> None:
        try:
            self._started = self._interceptor.call_started(self._call, self._context)
        except BridgeError as refusal:  # a hook that refuses the call (who may call, the limit): ErrorMapping
            await _abort(self._call, self._context, refusal)  # is inside this scope, so it is ended here

    async def __aexit__(self, *exc_info: object) -> None:
        self._interceptor.call_ended(self._call, self._started)


class _LineFormatter(Protocol):
    """bridge.logs' formatters (a layer above this one): a line made as a record would be, from a head
    made once (their `LineHead`, kept here as it is)."""

    def head(self, level: str, logger: str, message: str, fields: Mapping[str, object]) -> object: ...

    def line_after(self, created: float, head: Any, fields: Mapping[str, object]) -> str: ...

    def after(self, created: float, text: str, fields: Mapping[str, object]) -> str | None: ...


def _line_writer(logger: logging.Logger, level: int) -> tuple[Any, _LineFormatter] | None:
    """The one handler a record of `logger` at `level` would reach, and its formatter, if writing a line
    straight to it gives what the logging machinery would: no filter on the way, and a handler with
    `write_line` whose formatter has `head` and `line_after` (bridge.logs.setup_logging's). None otherwise
    (tests capturing records, handlers of an embedding application): then the caller makes a record."""
    if logger.filters or logger.manager.disable >= level:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level < handler.level:
                continue
            if found is not None or handler.filters or not hasattr(handler, "write_line"):
                return None
            found = handler
        current = current.parent if current.propagate else None
    formatter = found.formatter if found is not None else None
    if formatter is None or not (hasattr(formatter, "head") and hasattr(formatter, "line_after")):
        return None
    return found, cast(_LineFormatter, formatter)


# Request fields naming the one model a call is about: `model` (chat, embeddings), `model_id` (GetModel).
# ---------------------------------------------------------------------------------------- error mapping


class ErrorMapping(Interceptor):
    """A raised `BridgeError` ends the call with its own status (details and trailers included); any other
    exception is logged with its traceback and ends the call as INTERNAL, without its text. Cancellation
    (the client left, or the deadline passed) is recorded and re-raised, never answered: nobody listens.
    """

    @contextlib.asynccontextmanager
    async def around(self, call: RpcCall, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except BaseException as exc:
            await self.map(exc, call, context)
            raise

    async def map(self, exc: BaseException, call: RpcCall, context: Context) -> None:
        """Records how `exc` ended `call`, and ends it: returns when `exc` is to be re-raised as it is
        (an abort, a cancel, what is no Exception), else raises what ends the call instead."""
        if isinstance(exc, grpc.aio.AbortError):  # the handler set its status itself
            call.code, call.error = context.code() or grpc.StatusCode.UNKNOWN, exc
        elif isinstance(exc, asyncio.CancelledError):
            call.code, call.error = _ended_code(context), exc
        elif isinstance(exc, Exception):
            if _call_over(context):
                # The deadline passed (the bridge's own upstream timer fires at the same instant as grpc's)
                # or the status is out: the call is over for the caller, and aborting it would fail in
                # core. End it as grpc does a cancelled call, with the outcome recorded.
                call.code, call.error = _ended_code(context), exc
                log.debug("%s ended before its outcome could be sent: %r", call.method, exc)
                raise asyncio.CancelledError from exc
            await _abort(call, context, _as_bridge_error(exc))


async def abort(call: RpcCall, context: Context, status: grpc.Status) -> NoReturn:
    """Ends `call` with `status` now (grpc sends it at once), the interceptors' trailers after its own.
    Raises grpc.aio.AbortError."""
    extra = call.final_trailers()
    await context.abort(status.code, status.details, (*status.trailing_metadata, *extra))
    raise AssertionError("abort returned")  # pragma: no cover - it always raises


async def _abort(call: RpcCall, context: Context, error: BridgeError) -> NoReturn:
    call.code, call.error = error.code, error
    if isinstance(error, UpstreamError):  # what the upstream answered, unless the service reported it
        call.upstream_status = call.upstream_status or error.http_status
        call.correlation_id = call.correlation_id or error.correlation_id
    await abort(call, context, error.to_status())


def _as_bridge_error(exc: Exception) -> BridgeError:
    """`exc` itself if it is a BridgeError; else logged, and INTERNAL without its text."""
    if isinstance(exc, BridgeError):
        return exc
    log.exception("unexpected error in handler")
    return internal_error()


# A client whose deadline passes cancels the call itself, a hair before the server's copy of that deadline
# (computed when the request arrived): a cancel this close to the deadline is the deadline.
_DEADLINE_SLACK_S: Final = 0.05


def _deadline_passed(context: Context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= _DEADLINE_SLACK_S


def _call_over(context: Context) -> bool:
    return context.done() or _deadline_passed(context)


def _ended_code(context: Context) -> grpc.StatusCode:
    """How a call that ended without a status of ours ended: its deadline, or the client's cancel."""
    return grpc.StatusCode.DEADLINE_EXCEEDED if _deadline_passed(context) else grpc.StatusCode.CANCELLED


# ------------------------------------------------------------------------------------------- access log


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
        # (level, handler, formatter, the handler's batch) of the last line written straight to a handler.
        self._found: tuple[int, Any, _LineFormatter, object] | None = None

    def call_ended(self, call: RpcCall, started: object) -> None:
        self._write(call)

    def _write(self, call: RpcCall) -> None:
        code = call.code
        level = logging.INFO if code is _OK or code is _CANCELLED else logging.WARNING
        if not self._log.isEnabledFor(level):
            return
        found = self._found
        if found is None or found[0] != level or found[3] is not found[1].batch:
            direct = _line_writer(self._log, level)
            if direct is None:
                self._found = None
                self._record(call, level)
                return
            found = (level, *direct, direct[0].batch)
        # The process's own handler and format (bridge.logs.setup_logging): the line written straight to
        # it, as the record would have made it, without the record machinery (a line per call), and made
        # when the handler writes (after the reply is sent), from the facts as they are now.
        _, handler, formatter, batch = found
        make = self._makers.get((formatter, call.method, id(code)))
        make = make or self._maker(formatter, level, call)
        _ = call.overhead_seconds  # fixed now, by its first read, before the duration is read
        handler.write_line(functools.partial(make, time.time(), call, call.elapsed_ms))
        # Where the line went holds for the next calls while their lines join the same waiting batch (up
        # to LineHandler.FLUSH_S): the logger tree is walked again once the batch is written, so a handler
        # added meanwhile gets the lines of the next batch on.
        self._found = found if handler.batch is batch else None

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

    def _maker(self, formatter: _LineFormatter, level: int, call: RpcCall) -> _MakeLine:
        """What makes the lines for this formatter, method and code (which gives the level), made from the
        line's head and kept."""
        if len(self._makers) >= _MAX_HEADS:  # a bound, whatever methods and formatters come and go
            self._makers.clear()
        message = f"{call.name} {call.code.name}"
        head = formatter.head(_LEVEL_NAMES[level], self._log.name, message, _head_fields(call))
        make = _line_maker(formatter, head)
        self._makers[(formatter, call.method, id(call.code))] = make
        return make


# What makes an access line when the handler writes it: (the time the call ended, the call, its duration).
_MakeLine = Callable[[float, RpcCall, float], str]


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
_OK: Final = grpc.StatusCode.OK
_CANCELLED: Final = grpc.StatusCode.CANCELLED


_MAX_LOGGED_MODEL_BYTES: Final = 256  # the contract's limit on `model`


@functools.lru_cache(maxsize=1024)
def _logged_model(model: str) -> str:
    # Callers send a few model names again and again: redact each once.
    return clean(model, _MAX_LOGGED_MODEL_BYTES)
