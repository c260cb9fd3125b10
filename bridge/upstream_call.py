"""The one path from a servicer to the upstream, for a JSON request (`UpstreamCaller.call`) or an event
stream (`UpstreamCaller.stream`): the caller's metadata becomes the request's headers (`HeaderPolicy`:
auth, forwarded ids), the call's deadline bounds it, the reply's headers worth returning become initial
metadata, the upstream's facts (status, correlation id, duration, usage) are reported to the call being
served for metrics and logs, and a reply of the wrong shape becomes a protocol error (INTERNAL,
UPSTREAM_INVALID_RESPONSE, with the upstream's correlation id). Errors are raised, never mapped by hand.

Only a served call can call the upstream: outside the interceptor chain (bridge.rpc.call.this_call) it is
an error, raised before anything is sent, so a service wired up without the chain cannot lose its facts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bridge.errors import Reason
from bridge.http.client import HttpClient, JSONObject, JsonReply
from bridge.http.failover import Commits, Events, UpstreamPool
from bridge.jsonproto import ReplyShapeError
from bridge.rpc.call import Context, RpcCall, deadline_of, send_initial_metadata, this_call
from bridge.upstream.headers import MAX_RETURNED_BYTES, MAX_RETURNED_VALUE_BYTES, HeaderPolicy, correlation_id
from bridge.upstream.usage import usage_of

__all__ = ["Upstream", "UpstreamCaller", "UpstreamService", "send_reply_metadata"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# One upstream client, or several used as one (bridge.http.failover: failover, breakers, hedging).
Upstream = HttpClient | UpstreamPool


async def send_reply_metadata(context: Context, policy: HeaderPolicy, headers: Mapping[str, str]) -> None:
    """Sends the reply headers `policy` returns as the call's initial metadata. A header whose value gRPC
    cannot carry is left out, never failing the call: counted on the call being served (metrics), and
    logged the first time each header name is dropped."""
    reply = policy.reply_metadata(headers)
    if reply.dropped:
        this_call().headers_dropped += len(reply.dropped)
        for name in reply.dropped:
            if name not in policy.reported:
                policy.reported.add(name)
                log.warning(
                    "upstream reply header %r dropped: gRPC metadata carries printable ASCII values of at "
                    "most %d bytes (%d for all returned headers); later drops are only counted "
                    "(prisme_bridge_upstream_headers_dropped_total)",
                    name,
                    MAX_RETURNED_VALUE_BYTES,
                    MAX_RETURNED_BYTES,
                )
    await send_initial_metadata(context, reply.metadata)


@dataclass(frozen=True, slots=True)
class UpstreamCaller:
    """The upstream client and header policy a servicer calls the upstream with."""

    upstream: Upstream
    headers: HeaderPolicy

    async def call(
        self,
        context: Context,
        method: str,
        path: str,
        *,
        body: JSONObject | None = None,
        query: Mapping[str, str] | None = None,
    ) -> JsonReply:
        """`method` `{upstream}{path}` on behalf of the call `context` serves; its headers are sent back."""
        served = this_call()
        with served.upstream_request():
            reply = await self.upstream.request_json(
                method,
                path,
                body=body,
                query=query,
                headers=self._request_headers(context, served),
                deadline=deadline_of(context),
            )
        served.upstream_replied(reply.status, correlation_id(reply.headers))
        _report_usage(served, reply.body)
        await send_reply_metadata(context, self.headers, reply.headers)
        return reply

    @contextlib.asynccontextmanager
    async def stream(
        self, context: Context, path: str, body: JSONObject, *, commits: Commits | None = None
    ) -> AsyncIterator[Events]:
        """POST `body` to `{upstream}{path}` for an event stream, on behalf of the call `context` serves;
        yields it once it has begun, its headers sent back. The upstream's duration is the whole read.
        With several upstreams, the stream is yielded once it reached its commit point (`commits`: its
        first event that may reach the caller; bridge.http.failover), the events before it held back."""
        served = this_call()
        headers = self._request_headers(context, served)
        deadline = deadline_of(context)
        with served.upstream_request(waiting=False):
            started = time.perf_counter()
            opened: contextlib.AbstractAsyncContextManager[Events]
            if isinstance(self.upstream, UpstreamPool):
                opened = self.upstream.open_sse(
                    path, body, headers=headers, deadline=deadline, commits=commits
                )
            else:  # one upstream: nowhere to move, nothing held back
                opened = self.upstream.open_sse(path, body, headers=headers, deadline=deadline)
            async with opened as events:
                served.waited_on_upstream(time.perf_counter() - started)  # its head (its commit point)
                before = events.waited  # read up to the commit point: in the head's time
                try:
                    served.upstream_replied(events.status, events.correlation_id)
                    await send_reply_metadata(context, self.headers, events.headers)
                    yield events
                finally:  # the reads' waits, told once (the bridge's overhead is the rest)
                    served.waited_on_upstream(events.waited - before)

    def _request_headers(self, context: Context, served: RpcCall) -> dict[str, str]:
        """The upstream request's headers: the caller's metadata and who the caller is (the key's use)."""
        return self.headers.request_headers(context.invocation_metadata() or (), served.caller)

    def report_usage(self, document: JSONObject) -> None:
        """Reports the upstream's `usage` in `document` (a stream's usage chunk) to the call being served."""
        _report_usage(this_call(), document)

    def read(self, reply: JsonReply, read: Callable[[JSONObject], _T]) -> _T:
        """`read(reply.body)`; a ReplyShapeError becomes the upstream's protocol error."""
        try:
            return read(reply.body)
        except ReplyShapeError as exc:
            raise self.upstream.protocol_error(
                str(exc), Reason.UPSTREAM_INVALID_RESPONSE, reply.headers, host=reply.host
            ) from None


def _report_usage(call: RpcCall, document: JSONObject) -> None:
    usage = usage_of(document)
    if usage is not None:
        call.record_usage(usage.prompt_tokens, usage.completion_tokens, usage.cost)


class UpstreamService:
    """Base of a servicer that calls the upstream (every service of the bridge): `self._upstream` is its
    caller; one instance per server, sharing the upstream client."""

    def __init__(self, upstream: Upstream, headers: HeaderPolicy) -> None:
        self._upstream = UpstreamCaller(upstream, headers)
