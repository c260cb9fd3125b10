"""Interceptors: one concern per `Interceptor`, run around every RPC, unary or streaming alike (the chain
that runs them: bridge.rpc.chain), and error mapping, which every server has (the access log, the other
one: bridge.rpc.access).

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
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, NoReturn

import grpc

from bridge.errors import (
    BridgeError,
    UpstreamError,
    internal_error,
)
from bridge.rpc.call import Context, RpcCall, Trailers, split_method

__all__ = ["ErrorMapping", "Hook", "Interceptor", "abort"]

log = logging.getLogger(__name__)
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
