"""Load shedding: at most N calls served at once; the next one fails at once, never queued.

`ConcurrencyLimit` counts the calls it applies to from the moment their handler starts until they end (a
stream until its last message), and answers a call over the limit with RESOURCE_EXHAUSTED before the
handler or any upstream request runs, so a full bridge stays fast at saying no and its callers can retry
on another replica. Health and reflection are exempt: a probe must not fail because the bridge is busy.

The limit is per process (per worker), enforced on the event loop, so it needs no lock. grpc.aio's own
`maximum_concurrent_rpcs` is not used: it is server-wide (health checks are refused too, so Kubernetes
restarts a pod for being busy), its status carries no details, and grpcio before 1.85 queued calls or let
the count underflow (grpc/grpc#30424, #41531); see docs/limits.md.
"""

from __future__ import annotations

from collections.abc import Collection

import grpc

from bridge.errors import BridgeError, Reason
from bridge.rpc.call import PLUMBING_SERVICES, Context, RpcCall
from bridge.rpc.interceptors import Interceptor

__all__ = ["ConcurrencyLimit", "overloaded"]


def overloaded(limit: int) -> BridgeError:
    """RESOURCE_EXHAUSTED for a call over the limit, with an ErrorInfo naming the limit."""
    return BridgeError(
        f"the bridge is already serving {limit} calls (--max-concurrent-rpcs); "
        "retry, ideally on another replica",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason=Reason.OVERLOADED,
    )


class ConcurrencyLimit(Interceptor):
    """At most `limit` calls in flight among the methods it applies to; the next one is refused."""

    def __init__(self, limit: int, *, exempt_services: Collection[str] = PLUMBING_SERVICES) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.skip_services = frozenset(exempt_services)

    def call_started(self, call: RpcCall, context: Context) -> object:
        """Takes a slot, or raises the refusal (ended by ErrorMapping, or in a chain that nests context
        managers by the hooks' scope), in which case `call_ended` is not run and no slot is held."""
        if self.in_flight >= self.limit:
            raise overloaded(self.limit)  # a fresh one: a raised exception keeps its traceback
        self.in_flight += 1
        return None

    def call_ended(self, call: RpcCall, started: object) -> None:
        self.in_flight -= 1
