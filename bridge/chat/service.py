"""ChatCompletionService: validate, convert, call the upstream, convert back, chunk for chunk.

Each RPC is one POST to `{upstream}/chat/completions`, through the one upstream path of every service
(bridge.upstream_call.UpstreamCaller: headers, deadline, reply metadata, the upstream's facts reported to
the call being served). Handlers only raise: the interceptor chain turns a `bridge.errors.BridgeError`
into the call's status and logs the call (bridge.rpc.interceptors). `asyncio.CancelledError` (client
cancel, deadline) is never caught: it unwinds through the upstream context managers, which close the
upstream request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc

from bridge.chat import convert, stream, usage
from bridge.chat.validation import validate_request
from bridge.errors import invalid_request
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2 as pb_service
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.http.client import JSONObject
from bridge.rpc.call import Context
from bridge.upstream_call import UpstreamService

__all__ = ["SERVICE_NAME", "ChatCompletionService"]

# From the descriptor (importing it also registers the service for reflection).
SERVICE_NAME: Final[str] = pb_service.DESCRIPTOR.services_by_name["ChatCompletionService"].full_name
PATH: Final = "/chat/completions"


class ChatCompletionService(UpstreamService, pb_grpc.ChatCompletionServiceServicer):
    name: Final = SERVICE_NAME

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ChatCompletionServiceServicer_to_server(self, server)

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> pb.CreateChatCompletionResponse:
        body = _accept(request, streaming=False)
        reply = await self._upstream.call(context, "POST", PATH, body=body)
        return convert.response_from_upstream(reply.body)

    async def StreamChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        body = _accept(request, streaming=True)
        added = usage.ask_for_usage(body)  # for the token metrics; then taken out of the reply
        report = self._upstream.report_usage
        to_proto = convert.chunk_from_upstream
        # One loop from the upstream's read to the reply (each generator layer would cost per chunk).
        async with self._upstream.stream(context, PATH, body, commits=stream.commits) as events:
            chunks = stream.Chunks(events)
            chunk: JSONObject | None = None
            while chunks.reading():
                read = chunks.take(await events.read())
                read.reverse()
                while read:  # popped: nothing of a read is held while the next one waits (idle stream)
                    chunk = read.pop()
                    if chunk.get("usage") is not None:  # the usage (others say null, or nothing)
                        report(chunk)  # the last one counts: it may be repeated
                    if added and chunk.pop("usage", None) is not None and usage.carries_nothing(chunk):
                        continue  # there only for the usage the caller did not ask for
                    yield to_proto(chunk)
                del read
                chunk = None


def _accept(request: pb.CreateChatCompletionRequest, *, streaming: bool) -> dict[str, Any]:
    """The upstream body for `request`; raises InvalidRequestError before anything is sent."""
    violations = validate_request(request, streaming=streaming)
    if violations:
        raise invalid_request(violations)
    return convert.request_to_upstream(request, stream=streaming)
