"""The interceptor chain: every `Interceptor`, applied where the method handlers are registered.

For each method `InterceptorChain` wraps the handler once, as it is registered (`InterceptorChain.on`
gives services a server whose registrations go through the chain), so that the RPC runs inside every
applicable interceptor, the first in the list outermost, with an `RpcCall` describing it
(bridge.rpc.call). The chain is not a `grpc.aio.ServerInterceptor`: grpc.aio runs those on every call
just to find the handler (a coroutine for each interceptor and its continuation), and here that handler
is the same every time. When no interceptor needs `around` (the usual chain), the call runs through the
plain hooks in one try/finally, error mapping inline; otherwise through nested context managers.
Streaming handlers are driven here with `context.write`, so a cancel or a deadline reaches the
interceptors, the handler and its upstream request in the RPC's own task, and the handler's generator is
always closed before the call's outcome is logged.

`ErrorMapping` is pinned innermost by `bridge.rpc.server.build_server`: it turns what a handler raised
into the call's status, so every interceptor outside it sees `call.code` final when it ends.
A call that is not well-formed gRPC (an undecodable message, metadata that is not text) reaches no
handler: it ends INVALID_ARGUMENT inside the interceptors (bridge.rpc.wellformed).

Per-message hooks: an interceptor that overrides `message_sent` or `message_received` is called for each
message of the calls it applies to (live counters); the others cost nothing per message.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf.message import Message

from bridge.rpc.call import Context, RpcCall, Trailers, enter_call
from bridge.rpc.interceptors import ErrorMapping, Hook, Interceptor, _hooks, _overrides
from bridge.rpc.wellformed import checked_request, lenient

__all__ = ["InterceptorChain"]

if TYPE_CHECKING:  # grpc-stubs makes these generic; at runtime they are not
    Handler = grpc.RpcMethodHandler[Any, Any]
    _GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _GenericHandler = grpc.GenericRpcHandler


@dataclass(frozen=True, slots=True)
class _Active:
    """What runs around one method: the interceptors, and the per-message hooks some of them override.

    When no interceptor needs `around` but an innermost `ErrorMapping` (the usual chain: tracing, the
    access log, metrics, error mapping), the call runs through plain hooks in one `try/finally`
    (`plain`), the mapping inline; an interceptor that overrides nothing costs nothing."""

    interceptors: tuple[Interceptor, ...]
    sent: tuple[Hook, ...]
    received: tuple[Hook, ...]
    trailers: tuple[Callable[[RpcCall], Trailers], ...]
    plain: bool = False
    hooked: tuple[Interceptor, ...] = ()  # those with call_started or call_ended, in chain order
    mapping: ErrorMapping | None = None  # the innermost, run inline on the plain path

    @classmethod
    def of(cls, interceptors: tuple[Interceptor, ...]) -> _Active:
        def hooks(name: str) -> tuple[Any, ...]:
            return tuple(getattr(i, name) for i in interceptors if _overrides(i, name))

        sent, received, trailers = hooks("message_sent"), hooks("message_received"), hooks("trailers")
        mapping = interceptors[-1] if interceptors and type(interceptors[-1]) is ErrorMapping else None
        rest = interceptors[:-1] if mapping is not None else interceptors
        # An interceptor with plain hooks runs them on the plain path even if it also has an `around` (for
        # nested chains); one with only an `around` makes the chain nest.
        if any(_overrides(i, "around") and not _hooks(i) for i in rest):
            return cls(interceptors, sent, received, trailers)  # nested context managers (_around)
        hooked = tuple(i for i in rest if _hooks(i))
        return cls(interceptors, sent, received, trailers, plain=True, hooked=hooked, mapping=mapping)


class InterceptorChain:
    """Runs `interceptors` (first outermost) around every handler they apply to."""

    def __init__(self, interceptors: Sequence[Interceptor]) -> None:
        self._interceptors = tuple(interceptors)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}  # method -> (handler, wrapped handler)

    def on(self, server: grpc.aio.Server) -> grpc.aio.Server:
        """`server` as services should see it: the handlers they add to it are registered wrapped."""
        return _ChainedServer(server, self)

    def handler(self, method: str, handler: Handler) -> Handler:
        """The handler grpc gets for `method` ("/pkg.Service/Method"): `handler` inside the interceptors
        that apply to it, wrapped once per method (the generic and the registered entry share it)."""
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


class _ChainedServer(grpc.aio.Server):
    """A grpc.aio server whose handler registrations go through the chain; the rest is the server's own.

    grpc.aio finds a registered method's handler in a dict (and core matches its path before it reaches
    Python); a generic handler is asked per call, for methods nobody registered (and answers None for an
    unknown one: UNIMPLEMENTED). Generated `add_*_to_server` functions do both with the same handlers."""

    def __init__(self, server: grpc.aio.Server, chain: InterceptorChain) -> None:
        self._server, self._chain = server, chain

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[_GenericHandler]) -> None:
        self._server.add_generic_rpc_handlers([_ChainedGeneric(h, self._chain) for h in generic_rpc_handlers])

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        chained = {
            name: self._chain.handler(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()
        }
        self._server.add_registered_method_handlers(service_name, chained)  # type: ignore[attr-defined]

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109  # grpc's
        return await self._server.wait_for_termination(timeout)


class _ChainedGeneric(_GenericHandler):
    """A generic handler whose handlers run inside the chain."""

    def __init__(self, inner: _GenericHandler, chain: InterceptorChain) -> None:
        self._inner, self._chain = inner, chain

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:  # not one of its methods (grpc-stubs says it cannot be)
            return None
        return self._chain.handler(handler_call_details.method, handler)


def _unary(inner: Any, method: str, active: _Active, streams_in: bool) -> Any:
    async def run(request: Any, call: RpcCall, context: Context) -> Any:
        request = checked_request(request, context.invocation_metadata(), streams_in=streams_in)
        response = await inner(_received(request, call, active.received, streams_in), context)
        _sent(call, active.sent)  # the reply (only a handler that returned has one)
        _add_trailers(call, context)
        return response

    return _behavior(run, method, active, streams_in, response_streaming=False)


def _behavior(run: Any, method: str, active: _Active, streams_in: bool, *, response_streaming: bool) -> Any:
    """The handler grpc gets: `run(request, call, context)` (what the method does, and its reply) inside
    the interceptors, through plain hooks in one try/finally or through nested context managers."""

    def entered(request: Any) -> RpcCall:
        call = RpcCall(
            method,
            response_streaming=response_streaming,
            request_streaming=streams_in,
            model=_model_of(request),
            trailer_hooks=active.trailers,
        )
        enter_call(call)
        return call

    if active.plain:
        hooked, mapping = active.hooked, active.mapping

        async def plain(request: Any, context: Context) -> Any:
            call = entered(request)
            started: list[object] = []
            try:
                for interceptor in hooked:  # one may refuse the call (who may call): mapped as well
                    started.append(interceptor.call_started(call, context))
                return await run(request, call, context)
            except BaseException as exc:
                if mapping is not None:
                    await mapping.map(exc, call, context)
                raise
            finally:
                _ended(hooked, started, call)

        return plain

    async def nested(request: Any, context: Context) -> Any:
        call = entered(request)
        async with _around(active.interceptors, call, context):
            return await run(request, call, context)

    return nested


def _ended(hooked: tuple[Interceptor, ...], started: list[object], call: RpcCall) -> None:
    """The call_ended hooks of the interceptors whose call_started ran, innermost first."""
    for index in range(len(started) - 1, -1, -1):
        hooked[index].call_ended(call, started[index])


def _streaming(inner: Any, method: str, active: _Active, streams_in: bool) -> Any:
    generates = inspect.isasyncgenfunction(inner)
    sent_hooks = active.sent

    async def run(request: Any, call: RpcCall, context: Context) -> None:
        request = checked_request(request, context.invocation_metadata(), streams_in=streams_in)
        request = _received(request, call, active.received, streams_in)
        if not generates:
            await inner(request, context)  # a handler that writes with context.write itself
            _add_trailers(call, context)
            return
        messages: AsyncIterator[Message] = inner(request, context)
        write = context.write
        try:
            async for message in messages:
                await write(message)
                del message  # not held while the next one is awaited (an idle stream)
                call.messages_sent += 1
                for hook in sent_hooks:
                    hook(call)
        finally:
            await messages.aclose()  # type: ignore[attr-defined]  # an async generator
        _add_trailers(call, context)

    return _behavior(run, method, active, streams_in, response_streaming=True)


def _add_trailers(call: RpcCall, context: Context) -> None:
    """The interceptors' trailers after the handler's own, for the status grpc sends once it is done."""
    if call.trailer_hooks:
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), *call.final_trailers()))


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


_MODEL_FIELDS: Final = ("model", "model_id")


def _model_of(request: Any) -> str:
    for name in _MODEL_FIELDS:
        model = getattr(request, name, None)
        if isinstance(model, str) and model:
            return model
    return ""
