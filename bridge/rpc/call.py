"""What the RPC layer knows of the call being served: one `RpcCall` per RPC, reachable from its task.

The interceptor chain creates it before any interceptor runs and makes it the task's `current_call()`
(grpc.aio serves each RPC in a task of its own, so a context variable is per call). Interceptors read it
when the call ends (code, duration, messages sent); services add what only they know, through its
`upstream_*` methods and `record_usage` (the upstream's status, correlation id and duration, token counts
and cost), so metrics, logs and traces need no service-specific code. A failed upstream request needs no
reporting: `ErrorMapping` takes the status and correlation id from the `UpstreamError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from bridge.auth.callers import ANONYMOUS_CALLER, Caller
from bridge.gen.xds.service.orca.v3 import orca_pb2

__all__ = [
    "HEALTH_SERVICE",
    "ORCA_SERVICE",
    "PLUMBING_SERVICES",
    "REFLECTION_SERVICE",
    "Context",
    "RpcCall",
    "Trailers",
    "current_call",
    "deadline_of",
    "note_upstream",
    "note_upstream_attempt",
    "send_initial_metadata",
    "split_method",
    "this_call",
]

Context = grpc.aio.ServicerContext[Any, Any]
Trailers = tuple[tuple[str, str | bytes], ...]  # trailing metadata

HEALTH_SERVICE: Final = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE: Final = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
ORCA_SERVICE: Final = orca_pb2.DESCRIPTOR.services_by_name["OpenRcaService"].full_name  # load reports
# The server's own plumbing, not the bridge's calls: the access log, tracing, the concurrency limit and
# the load reports leave them out (`Interceptor.skip_services`); metrics count them (probes are worth
# seeing). None of them calls the upstream.
PLUMBING_SERVICES: Final = frozenset({HEALTH_SERVICE, REFLECTION_SERVICE, ORCA_SERVICE})


def split_method(method: str) -> tuple[str, str]:
    """("pkg.Service", "Method") of a gRPC method path "/pkg.Service/Method"."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


@dataclass(slots=True)
class RpcCall:
    """One RPC as it is being served."""

    method: str  # "/pkg.Service/Method"
    response_streaming: bool
    model: str = ""  # the model the request names (its `model`, or `model_id`), for RPCs about one
    request_streaming: bool = False
    code: grpc.StatusCode = grpc.StatusCode.OK  # final, once the call has ended
    error: BaseException | None = None  # what ended it, if not OK
    messages_sent: int = 0
    messages_received: int = 0
    upstream_status: int | None = None  # the upstream's HTTP status, once its reply began
    correlation_id: str | None = None  # the upstream's id of its request
    upstream_seconds: float | None = None  # how long the upstream request lasted, reply read to its end
    # Time spent waiting on the upstream (None: no upstream request): a unary request whole; a stream's
    # opening (to its commit point with several upstreams) and each read of its body. The call's overhead,
    # the bridge's own time, is the rest (`overhead_seconds`).
    upstream_waiting: float | None = None
    overhead: float | None = None  # set by the first read of `overhead_seconds`, at the call's end
    prompt_tokens: int | None = None  # the upstream's `usage`, when it reported one
    completion_tokens: int | None = None
    cost: float | None = None
    trace_id: str | None = None  # of the call's server span, when it is traced
    upstream_attempts: int = 0  # upstream requests made for the call (more than 1: retries)
    upstream: str | None = None  # which upstream answered, when there are several (host:port)
    headers_dropped: int = 0  # upstream reply headers not returned: gRPC metadata cannot carry their values
    caller: Caller = ANONYMOUS_CALLER  # who called, once bridge.rpc.callers identified it
    started: float = field(default_factory=time.perf_counter)
    # What the interceptors add to the status's trailing metadata (Interceptor.trailers), not yet asked.
    trailer_hooks: tuple[Callable[[RpcCall], Trailers], ...] = ()
    service: str = field(init=False)  # "pkg.Service" of `method`
    name: str = field(init=False)  # "Method" of `method`

    def __post_init__(self) -> None:
        self.service, self.name = split_method(self.method)

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def overhead_seconds(self) -> float | None:
        """The call's time in the bridge minus its time waiting on the upstream (None without one); read
        once the call has ended, and the same figure on each later read (the access line, the metric)."""
        if self.upstream_waiting is None:
            return None
        if self.overhead is None:
            self.overhead = max(0.0, time.perf_counter() - self.started - self.upstream_waiting)
        return self.overhead

    def waited_on_upstream(self, seconds: float) -> None:
        """Adds `seconds` spent waiting on the upstream (a read of a stream's body)."""
        self.upstream_waiting = (self.upstream_waiting or 0.0) + seconds

    def upstream_request_ended(self, started: float, *, waiting: bool) -> None:
        """The upstream request begun at `started` (a perf_counter time) is over (a stream's: once its last
        event is read): its duration kept, and with `waiting` also counted as time spent waiting on the
        upstream (a unary request's whole time; a stream tells its reads one by one with
        `waited_on_upstream`)."""
        self.upstream_seconds = time.perf_counter() - started
        if waiting:
            self.waited_on_upstream(self.upstream_seconds)

    def upstream_replied(self, status: int, correlation_id: str | None) -> None:
        """The upstream's reply began with `status`; `correlation_id` is its id of the request."""
        self.upstream_status = status
        self.correlation_id = correlation_id

    def final_trailers(self) -> Trailers:
        """The trailing metadata the interceptors add as the call's status is sent; asked once (the
        chain after a handler is done, or `bridge.rpc.interceptors.abort`), empty after."""
        hooks, self.trailer_hooks = self.trailer_hooks, ()
        return tuple(item for hook in hooks for item in hook(self))

    def record_usage(
        self, prompt_tokens: int | None, completion_tokens: int | None, cost: float | None
    ) -> None:
        """The upstream's usage report (the last one wins: a stream may repeat it)."""
        self.prompt_tokens, self.completion_tokens, self.cost = prompt_tokens, completion_tokens, cost


_CURRENT: ContextVar[RpcCall | None] = ContextVar("bridge_rpc_call", default=None)


def current_call() -> RpcCall | None:
    """The call being served by this task, if it runs under the interceptor chain."""
    return _CURRENT.get()


def this_call() -> RpcCall:
    """The call being served by this task. Outside the interceptor chain there is none: RuntimeError (what
    a service would report there would be read by nobody, and a call that skipped the chain would go
    unlogged and unmeasured)."""
    call = _CURRENT.get()
    if call is None:
        raise RuntimeError(
            "no RPC is being served by this task: services run under the interceptor chain "
            "(bridge.rpc.server.build_server), which records what they report"
        )
    return call


def enter_call(call: RpcCall) -> None:
    """Makes `call` this task's current call (never reset: the task's context ends with the RPC)."""
    _CURRENT.set(call)


def note_upstream_attempt(number: int) -> None:
    """Records that attempt `number` of the current call's upstream request starts (the upstream client's
    `on_attempt`; outside a call it does nothing)."""
    call = _CURRENT.get()
    if call is not None:
        call.upstream_attempts = number


def note_upstream(name: str) -> None:
    """Records which upstream answered the current call (an upstream pool's `on_upstream`)."""
    call = _CURRENT.get()
    if call is not None:
        call.upstream = name


def deadline_of(context: Context) -> float | None:
    """The call's deadline as an absolute event-loop time (None without one), for `asyncio.timeout_at`."""
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


async def send_initial_metadata(context: Context, metadata: tuple[tuple[str, str], ...]) -> None:
    """Sends `metadata` as the call's initial metadata now, if there is any. Without any, nothing is sent
    here: grpc sends the (empty) initial metadata with the first message, in the same batch, whereas a
    batch of its own costs about a third of a unary call's throughput (docs/PERFORMANCE.md)."""
    if metadata:
        await context.send_initial_metadata(metadata)
