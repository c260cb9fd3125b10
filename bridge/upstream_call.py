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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
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
        started = time.perf_counter()  # the upstream request's start (no context manager per call)
        try:
            reply = await self.upstream.request_json(
                method,
                path,
                body=body,
                query=query,
                headers=self._request_headers(context, served),
                deadline=deadline_of(context),
            )
        finally:
            served.upstream_request_ended(started, waiting=True)
        served.upstream_replied(reply.status, correlation_id(reply.headers))
        _report_usage(served, reply.body)
        await send_reply_metadata(context, self.headers, reply.headers)
        return reply

    def stream(
        self, context: Context, path: str, body: JSONObject, *, commits: Commits | None = None
    ) -> _UpstreamStream:
        """POST `body` to `{upstream}{path}` for an event stream, on behalf of the call `context` serves;
        `async with` it gives the stream once it has begun, its headers sent back. The upstream's duration is
        the whole read. With several upstreams, the stream is given once it reached its commit point
        (`commits`: its first event that may reach the caller; bridge.http.failover), the events before it
        held back."""
        return _UpstreamStream(self, context, path, body, commits)

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


class _UpstreamStream:
    """UpstreamCaller.stream: a plain async context manager (entered once per stream: no generator)."""

    __slots__ = (
        "_before",
        "_body",
        "_caller",
        "_commits",
        "_context",
        "_events",
        "_opened",
        "_path",
        "_served",
        "_started",
    )

    def __init__(
        self, caller: UpstreamCaller, context: Context, path: str, body: JSONObject, commits: Commits | None
    ) -> None:
        self._caller, self._context, self._path, self._body, self._commits = (
            caller,
            context,
            path,
            body,
            commits,
        )
        self._opened: contextlib.AbstractAsyncContextManager[Events] | None = None
        self._events: Events | None = None
        self._before = 0.0
        self._started = 0.0

    async def __aenter__(self) -> Events:
        caller, context = self._caller, self._context
        served = self._served = this_call()
        headers = caller._request_headers(context, served)
        deadline = deadline_of(context)
        self._started = started = time.perf_counter()  # the upstream request's start
        upstream = caller.upstream
        opened: contextlib.AbstractAsyncContextManager[Events]
        if isinstance(upstream, UpstreamPool):
            opened = upstream.open_sse(
                self._path, self._body, headers=headers, deadline=deadline, commits=self._commits
            )
        else:  # one upstream: nowhere to move, nothing held back
            opened = upstream.open_sse(self._path, self._body, headers=headers, deadline=deadline)
        try:
            events = await opened.__aenter__()
        except BaseException:
            served.upstream_request_ended(started, waiting=False)
            raise
        self._opened, self._events = opened, events
        try:
            served.waited_on_upstream(time.perf_counter() - started)  # its head (its commit point)
            self._before = events.waited  # read up to the commit point: in the head's time
            served.upstream_replied(events.status, events.correlation_id)
            await send_reply_metadata(context, caller.headers, events.headers)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return events

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        served, events, opened = self._served, self._events, self._opened
        assert events is not None  # entered
        assert opened is not None
        try:
            served.waited_on_upstream(events.waited - self._before)  # the reads' waits, told once
        finally:
            try:
                await opened.__aexit__(exc_type, exc, tb)
            finally:
                served.upstream_request_ended(self._started, waiting=False)


def _report_usage(call: RpcCall, document: JSONObject) -> None:
    usage = usage_of(document)
    if usage is not None:
        call.record_usage(usage.prompt_tokens, usage.completion_tokens, usage.cost)


class UpstreamService:
    """Base of a servicer that calls the upstream (every service of the bridge): `self._upstream` is its
    caller; one instance per server, sharing the upstream client."""

    def __init__(self, upstream: Upstream, headers: HeaderPolicy) -> None:
        self._upstream = UpstreamCaller(upstream, headers)
