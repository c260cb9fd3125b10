"""What a unary servicer does around its one upstream JSON request: the caller's metadata becomes the
request's headers (`HeaderPolicy`: auth, forwarded ids), the call's deadline bounds it, the reply's headers
worth returning become initial metadata, the upstream's facts (status, correlation id, duration, usage) are
reported to the call being served for metrics and logs, and a reply of the wrong shape becomes a protocol
error (INTERNAL, UPSTREAM_INVALID_RESPONSE, with the upstream's correlation id). Errors are raised, never
mapped by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bridge.errors import Reason
from bridge.http.client import HttpClient, JSONObject, JsonReply
from bridge.jsonproto import ReplyShapeError
from bridge.rpc.call import Context, deadline_of, send_initial_metadata, this_call
from bridge.upstream.headers import MAX_RETURNED_BYTES, MAX_RETURNED_VALUE_BYTES, HeaderPolicy, correlation_id
from bridge.upstream.usage import usage_of

__all__ = ["UnaryJsonService", "UpstreamCaller", "send_reply_metadata"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


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

    upstream: HttpClient
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
                headers=self.headers.request_headers(context.invocation_metadata() or (), served.caller),
                deadline=deadline_of(context),
            )
        served.upstream_replied(reply.status, correlation_id(reply.headers))
        usage = usage_of(reply.body)
        if usage is not None:
            served.record_usage(usage.prompt_tokens, usage.completion_tokens, usage.cost)
        await send_reply_metadata(context, self.headers, reply.headers)
        return reply

    def read(self, reply: JsonReply, read: Callable[[JSONObject], _T]) -> _T:
        """`read(reply.body)`; a ReplyShapeError becomes the upstream's protocol error."""
        try:
            return read(reply.body)
        except ReplyShapeError as exc:
            raise self.upstream.protocol_error(
                str(exc), Reason.UPSTREAM_INVALID_RESPONSE, reply.headers
            ) from None


class UnaryJsonService:
    """Base of a servicer whose RPCs are each one upstream JSON request (ModelService, EmbeddingService):
    `self._upstream` is its caller; one instance per server, sharing the upstream client."""

    def __init__(self, upstream: HttpClient, headers: HeaderPolicy) -> None:
        self._upstream = UpstreamCaller(upstream, headers)
