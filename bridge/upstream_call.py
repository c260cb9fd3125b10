"""What a unary servicer does around its one upstream JSON request: the caller's metadata becomes the
request's headers (the auth policy, forwarded ids), the call's deadline bounds it, the reply's headers
worth returning become initial metadata, and a reply of the wrong shape becomes a protocol error
(INTERNAL, with the upstream's correlation id). Errors are raised, never mapped by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bridge.http.client import HttpClient, JSONObject, JsonReply
from bridge.jsonproto import ReplyShapeError
from bridge.rpc.call import Context, deadline_of
from bridge.upstream.headers import AuthPolicy, response_metadata, upstream_headers

__all__ = ["UnaryJsonService", "UpstreamCaller"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UpstreamCaller:
    """The upstream client and auth policy a servicer calls the upstream with."""

    upstream: HttpClient
    auth: AuthPolicy

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
        reply = await self.upstream.request_json(
            method,
            path,
            body=body,
            query=query,
            headers=upstream_headers(context.invocation_metadata() or (), self.auth),
            deadline=deadline_of(context),
        )
        await context.send_initial_metadata(response_metadata(reply.headers))
        return reply

    def read(self, reply: JsonReply, read: Callable[[JSONObject], _T]) -> _T:
        """`read(reply.body)`; a ReplyShapeError becomes the upstream's protocol error."""
        try:
            return read(reply.body)
        except ReplyShapeError as exc:
            raise self.upstream.protocol_error(str(exc), exc.reason, reply.headers) from None


class UnaryJsonService:
    """Base of a servicer whose RPCs are each one upstream JSON request (ModelService, EmbeddingService):
    `self._upstream` is its caller; one instance per server, sharing the upstream client."""

    def __init__(self, upstream: HttpClient, auth: AuthPolicy) -> None:
        self._upstream = UpstreamCaller(upstream, auth)
