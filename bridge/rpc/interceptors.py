"""The interceptor chain: one concern per `Interceptor`, run around every RPC, unary or streaming alike.

`InterceptorChain` is the one `grpc.aio.ServerInterceptor` the server gets for them. For each method it
wraps the handler once (cached) so that the RPC runs inside every applicable interceptor's `around`, the
first in the list outermost, with an `RpcCall` describing it (bridge.rpc.call). Streaming handlers are
driven here with `context.write`, so a cancel or a deadline reaches the interceptors, the handler and its
upstream request in the RPC's own task, and the handler's generator is always closed before the call's
outcome is logged.

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
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

import grpc
from google.protobuf.message import Message

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
from bridge.rpc.call import PLUMBING_SERVICES, Context, RpcCall, Trailers, enter_call, split_method
from bridge.rpc.wellformed import checked_request, lenient

__all__ = [
    "AccessLog",
    "ErrorMapping",
    "Hook",
    "Interceptor",
    "InterceptorChain",
    "abort",
    "access_fields",
    "failure_of",
]

log = logging.getLogger(__name__)
access_log = logging.getLogger("bridge.access")
if TYPE_CHECKING:  # grpc-stubs makes these generic; at runtime they are not
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.aio.ServerInterceptor
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
        return _NOTHING

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


@dataclass(frozen=True, slots=True)
class _Active:
    """What runs around one method: the interceptors, and the per-message hooks some of them override."""

    interceptors: tuple[Interceptor, ...]
    sent: tuple[Hook, ...]
    received: tuple[Hook, ...]
    trailers: tuple[Callable[[RpcCall], Trailers], ...]

    @classmethod
    def of(cls, interceptors: tuple[Interceptor, ...]) -> _Active:
        def hooks(name: str) -> tuple[Any, ...]:
            base = getattr(Interceptor, name)
            return tuple(getattr(i, name) for i in interceptors if getattr(type(i), name) is not base)

        return cls(interceptors, hooks("message_sent"), hooks("message_received"), hooks("trailers"))


class InterceptorChain(_ServerInterceptor):
    """Runs `interceptors` (first outermost) around every handler they apply to."""

    def __init__(self, interceptors: Sequence[Interceptor]) -> None:
        self._interceptors = tuple(interceptors)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}  # method -> (handler, wrapped handler)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        # None for an unknown method (grpc-stubs says otherwise): grpc answers UNIMPLEMENTED.
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # type: ignore[return-value]
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        return cached[1]

    def _wrap(self, method: str, handler: Handler) -> Handler:
        interceptors = tuple(i for i in self._interceptors if i.applies_to(method))
        if not interceptors:
            return handler
        active = _Active.of(interceptors)
        streams_in = handler.request_streaming
        if handler.response_streaming:
            inner = handler.stream_stream if handler.request_streaming else handler.unary_stream
            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            behavior: Any = _streaming(inner, method, active, streams_in)
        else:
            inner = handler.stream_unary if handler.request_streaming else handler.unary_unary
            factory = (
                grpc.stream_unary_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            behavior = _unary(inner, method, active, streams_in)
        if not (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)):
            return handler  # a sync handler runs in grpc's thread pool: nothing here can wrap it
        return factory(
            behavior,
            request_deserializer=lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _unary(inner: Any, method: str, active: _Active, streams_in: bool) -> Any:
    async def behavior(request: Any, context: Context) -> Any:
        call = RpcCall(
            method,
            response_streaming=False,
            request_streaming=streams_in,
            model=_model_of(request),
            trailer_hooks=active.trailers,
        )
        enter_call(call)
        async with _around(active.interceptors, call, context):
            request = checked_request(request, context.invocation_metadata(), streams_in=streams_in)
            response = await inner(_received(request, call, active.received, streams_in), context)
            _sent(call, active.sent)  # the reply (only a handler that returned has one)
            _add_trailers(call, context)
            return response

    return behavior


def _streaming(inner: Any, method: str, active: _Active, streams_in: bool) -> Any:
    generates = inspect.isasyncgenfunction(inner)

    async def behavior(request: Any, context: Context) -> None:
        call = RpcCall(
            method,
            response_streaming=True,
            request_streaming=streams_in,
            model=_model_of(request),
            trailer_hooks=active.trailers,
        )
        enter_call(call)
        async with _around(active.interceptors, call, context):
            request = checked_request(request, context.invocation_metadata(), streams_in=streams_in)
            request = _received(request, call, active.received, streams_in)
            if not generates:
                await inner(request, context)  # a handler that writes with context.write itself
                _add_trailers(call, context)
                return
            messages: AsyncIterator[Message] = inner(request, context)
            try:
                async for message in messages:
                    await context.write(message)
                    _sent(call, active.sent)
            finally:
                await messages.aclose()  # type: ignore[attr-defined]  # an async generator
            _add_trailers(call, context)

    return behavior


def _add_trailers(call: RpcCall, context: Context) -> None:
    """The interceptors' trailers after the handler's own, for the status grpc sends once it is done."""
    if call.trailer_hooks:
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), *call.final_trailers()))


async def abort(call: RpcCall, context: Context, status: grpc.Status) -> NoReturn:
    """Ends `call` with `status` now (grpc sends it at once), the interceptors' trailers after its own.
    Raises grpc.aio.AbortError."""
    extra = call.final_trailers()
    await context.abort(status.code, status.details, (*status.trailing_metadata, *extra))
    raise AssertionError("abort returned")  # pragma: no cover - it always raises


def _sent(call: RpcCall, hooks: tuple[Hook, ...]) -> None:
    call.messages_sent += 1
    for hook in hooks:
        hook(call)


def _received(request: Any, call: RpcCall, hooks: tuple[Hook, ...], streams_in: bool) -> Any:
    """The request for the handler: counted now if it is one message, else as the handler reads it."""
    if streams_in:
        return _counted(request, call, hooks)
    call.messages_received += 1
    for hook in hooks:
        hook(call)
    return request


async def _counted(
    requests: AsyncIterator[Any], call: RpcCall, hooks: tuple[Hook, ...]
) -> AsyncIterator[Any]:
    async for request in requests:
        call.messages_received += 1
        for hook in hooks:
            hook(call)
        yield request


@contextlib.asynccontextmanager
async def _around(
    interceptors: tuple[Interceptor, ...], call: RpcCall, context: Context
) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for interceptor in interceptors:
            await stack.enter_async_context(interceptor.around(call, context))
        yield


# Request fields naming the one model a call is about: `model` (chat, embeddings), `model_id` (GetModel).
_MODEL_FIELDS: Final = ("model", "model_id")


def _model_of(request: Any) -> str:
    for name in _MODEL_FIELDS:
        model = getattr(request, name, None)
        if isinstance(model, str) and model:
            return model
    return ""


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
        except grpc.aio.AbortError as exc:  # the handler set its status itself
            call.code, call.error = context.code() or grpc.StatusCode.UNKNOWN, exc
            raise
        except asyncio.CancelledError as exc:
            call.code, call.error = _ended_code(context), exc
            raise
        except Exception as exc:
            if _call_over(context):
                # The deadline passed (the bridge's own upstream timer fires at the same instant as grpc's)
                # or the status is out: the call is over for the caller, and aborting it would fail in
                # core. End it as grpc does a cancelled call, with the outcome recorded.
                call.code, call.error = _ended_code(context), exc
                log.debug("%s ended before its outcome could be sent: %r", call.method, exc)
                raise asyncio.CancelledError from exc
            await _abort(call, context, _as_bridge_error(exc))


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

    @contextlib.asynccontextmanager
    async def around(self, call: RpcCall, context: Context) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._write(call)

    def _write(self, call: RpcCall) -> None:
        code = call.code
        level = logging.INFO if code is _OK or code is _CANCELLED else logging.WARNING
        if self._log.isEnabledFor(level):
            # The record is made here rather than by Logger.log, which would walk the stack for the
            # caller's file and line (no format of ours shows them): a line per call, on the event loop.
            extra = {"fields": access_fields(call)}
            args = (call.name, code.name)
            self._log.handle(
                self._log.makeRecord(self._log.name, level, _SOURCE, 0, "%s %s", args, None, extra=extra)
            )


def access_fields(call: RpcCall) -> dict[str, object]:
    """The facts of a finished call worth a log line, those it has (None left out), in a stable order."""
    overhead = call.overhead_seconds  # before the duration: overhead + upstream time <= duration
    fields: dict[str, object] = {
        "service": call.service,
        "method": call.name,
        "code": call.code.name,
        "ms": round(call.elapsed_ms, 1),
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
        fields["overhead_ms"] = round(overhead * 1000, 2)
    if call.response_streaming:
        fields["chunks"] = call.messages_sent
    if call.correlation_id:
        # Sanitised where it was read (bridge.upstream.headers); again here, as everything a line carries.
        correlation_id = header_value(call.correlation_id)
        if correlation_id is not None:
            fields["correlation_id"] = correlation_id
    if call.code is not _OK:
        fields["reason"], fields["cause"] = failure_of(call)
    for key in _OPTIONAL_FACTS:
        value = getattr(call, key)
        if value is not None:
            fields[key] = value
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
_OPTIONAL_FACTS: Final = ("prompt_tokens", "completion_tokens", "cost", "trace_id")
_SOURCE: Final = __file__  # the access line's pathname
_OK: Final = grpc.StatusCode.OK
_CANCELLED: Final = grpc.StatusCode.CANCELLED


_MAX_LOGGED_MODEL_BYTES: Final = 256  # the contract's limit on `model`


@functools.lru_cache(maxsize=1024)
def _logged_model(model: str) -> str:
    # Callers send a few model names again and again: redact each once.
    return clean(model, _MAX_LOGGED_MODEL_BYTES)
