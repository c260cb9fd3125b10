"""The interceptor chain: one concern per `Interceptor`, run around every RPC, unary or streaming alike.

`InterceptorChain` is the one `grpc.aio.ServerInterceptor` the server gets for them. For each method it
wraps the handler once (cached) so that the RPC runs inside every applicable interceptor's `around`, the
first in the list outermost, with an `RpcCall` describing it (bridge.rpc.call). Streaming handlers are
driven here with `context.write`, so a cancel or a deadline reaches the interceptors, the handler and its
upstream request in the RPC's own task, and the handler's generator is always closed before the call's
outcome is logged.

`ErrorMapping` is pinned innermost by `bridge.rpc.server.build_server`: it turns what a handler raised
into the call's status, so every interceptor outside it sees `call.code` final when its `around` exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, NoReturn

import grpc
from google.protobuf.message import Message

from bridge.errors import BridgeError, internal_error
from bridge.rpc.call import Context, RpcCall, enter_call, split_method

__all__ = ["AccessLog", "ErrorMapping", "Interceptor", "InterceptorChain"]

log = logging.getLogger(__name__)
if TYPE_CHECKING:  # grpc-stubs makes these generic; at runtime they are not
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.aio.ServerInterceptor
_NOTHING: Final = contextlib.nullcontext()


class Interceptor:
    """One concern around the RPCs it applies to. Subclasses override `around` and maybe `applies_to`.

    `around(call, context)` wraps the whole RPC (for a stream: until its last message is sent). What the RPC
    raised passes through it: outside `ErrorMapping` that is `grpc.aio.AbortError` (the status is set) or
    `asyncio.CancelledError`, and `call.code` is final on the way out. Re-raise what you catch.
    """

    def applies_to(self, method: str) -> bool:
        """Whether this interceptor runs for `method` ("/pkg.Service/Method"); decided once per method."""
        return True

    def around(self, call: RpcCall, context: Context) -> AbstractAsyncContextManager[object]:
        return _NOTHING


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
        active = tuple(i for i in self._interceptors if i.applies_to(method))
        if not active:
            return handler
        if handler.response_streaming:
            inner = handler.stream_stream if handler.request_streaming else handler.unary_stream
            factory = (
                grpc.stream_stream_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            behavior: Any = _streaming(inner, method, active)
        else:
            inner = handler.stream_unary if handler.request_streaming else handler.unary_unary
            factory = (
                grpc.stream_unary_rpc_method_handler
                if handler.request_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            behavior = _unary(inner, method, active)
        if not (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)):
            return handler  # a sync handler runs in grpc's thread pool: nothing here can wrap it
        return factory(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _unary(inner: Any, method: str, interceptors: tuple[Interceptor, ...]) -> Any:
    async def behavior(request: Any, context: Context) -> Any:
        call = RpcCall(method, response_streaming=False, model=_model_of(request))
        enter_call(call)
        async with _around(interceptors, call, context):
            return await inner(request, context)

    return behavior


def _streaming(inner: Any, method: str, interceptors: tuple[Interceptor, ...]) -> Any:
    generates = inspect.isasyncgenfunction(inner)

    async def behavior(request: Any, context: Context) -> None:
        call = RpcCall(method, response_streaming=True, model=_model_of(request))
        enter_call(call)
        async with _around(interceptors, call, context):
            if not generates:
                await inner(request, context)  # a handler that writes with context.write itself
                return
            messages: AsyncIterator[Message] = inner(request, context)
            try:
                async for message in messages:
                    await context.write(message)
                    call.messages_sent += 1
            finally:
                await messages.aclose()  # type: ignore[attr-defined]  # an async generator

    return behavior


@contextlib.asynccontextmanager
async def _around(
    interceptors: tuple[Interceptor, ...], call: RpcCall, context: Context
) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for interceptor in interceptors:
            await stack.enter_async_context(interceptor.around(call, context))
        yield


def _model_of(request: Any) -> str:
    model = getattr(request, "model", "")
    return model if isinstance(model, str) else ""


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
    await context.abort_with_status(error.to_status())  # type: ignore[attr-defined]  # grpc-stubs lacks it
    raise AssertionError("abort_with_status returned")  # pragma: no cover - it always raises


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

_UNLOGGED_SERVICES: Final = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


class AccessLog(Interceptor):
    """One line per call when it ends: method, model, code, duration, and for streams the messages sent.

    OK and CANCELLED are INFO, other codes WARNING. Health checks and reflection are not logged.
    """

    def __init__(
        self, logger: logging.Logger | None = None, *, skip_services: Collection[str] = _UNLOGGED_SERVICES
    ) -> None:
        self._log = logger or log
        self._skip = frozenset(skip_services)

    def applies_to(self, method: str) -> bool:
        return split_method(method)[0] not in self._skip

    @contextlib.asynccontextmanager
    async def around(self, call: RpcCall, context: Context) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._write(call)

    def _write(self, call: RpcCall) -> None:
        quiet = call.code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED)
        level = logging.INFO if quiet else logging.WARNING
        if not self._log.isEnabledFor(level):
            return
        chunks = f" chunks={call.messages_sent}" if call.response_streaming else ""
        self._log.log(
            level,
            "%s model=%r code=%s ms=%.1f%s",
            call.name,
            call.model,
            call.code.name,
            call.elapsed_ms,
            chunks,
        )
