"""What the RPC layer knows of the call being served: one `RpcCall` per RPC, reachable from its task.

The interceptor chain creates it before any interceptor runs and makes it the task's `current_call()`
(grpc.aio serves each RPC in a task of its own, so a context variable is per call). Interceptors read it
when the call ends (code, duration, messages sent); services add what only they know (the upstream's
status and correlation id).
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc

__all__ = ["Context", "RpcCall", "current_call", "deadline_of", "split_method"]

Context = grpc.aio.ServicerContext[Any, Any]


def split_method(method: str) -> tuple[str, str]:
    """("pkg.Service", "Method") of a gRPC method path "/pkg.Service/Method"."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


@dataclass(slots=True)
class RpcCall:
    """One RPC as it is being served."""

    method: str  # "/pkg.Service/Method"
    response_streaming: bool
    model: str = ""  # the request's `model` field, for RPCs whose request has one
    code: grpc.StatusCode = grpc.StatusCode.OK  # final, once the call has ended
    error: BaseException | None = None  # what ended it, if not OK
    messages_sent: int = 0
    upstream_status: int | None = None
    correlation_id: str | None = None  # the upstream's id of its request
    started: float = field(default_factory=time.perf_counter)

    @property
    def service(self) -> str:
        return split_method(self.method)[0]

    @property
    def name(self) -> str:
        return split_method(self.method)[1]

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


_CURRENT: ContextVar[RpcCall | None] = ContextVar("bridge_rpc_call", default=None)


def current_call() -> RpcCall | None:
    """The call being served by this task, if it runs under the interceptor chain."""
    return _CURRENT.get()


def enter_call(call: RpcCall) -> None:
    """Makes `call` this task's current call (never reset: the task's context ends with the RPC)."""
    _CURRENT.set(call)


def deadline_of(context: Context) -> float | None:
    """The call's deadline as an absolute event-loop time (None without one), for `asyncio.timeout_at`."""
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining
