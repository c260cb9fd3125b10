"""ChatCompletionService: validate, convert, call the upstream, convert back, chunk for chunk.

Each RPC is one POST to `{upstream}/chat/completions`. Handlers only raise: the interceptor chain turns a
`bridge.errors.BridgeError` into the call's status and logs the call (bridge.rpc.interceptors).
`asyncio.CancelledError` (client cancel, deadline) is never caught: it unwinds through the upstream
context managers, which close the upstream request. What the upstream answered (status, correlation id,
duration, usage) is reported to the call being served (`bridge.rpc.call.this_call`) for metrics and logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import grpc

from bridge.chat import convert, stream
from bridge.chat.validation import validate_request
from bridge.errors import invalid_request
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2 as pb_service
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.http.client import HttpClient, JSONObject
from bridge.rpc.call import Context, RpcCall, deadline_of, this_call
from bridge.upstream.headers import HeaderPolicy, correlation_id
from bridge.upstream.usage import usage_of
from bridge.upstream_call import send_reply_metadata

__all__ = ["SERVICE_NAME", "ChatCompletionService"]

# From the descriptor (importing it also registers the service for reflection).
SERVICE_NAME: Final[str] = pb_service.DESCRIPTOR.services_by_name["ChatCompletionService"].full_name
PATH: Final = "/chat/completions"


@dataclass(frozen=True, slots=True)
class _Call:
    """An accepted request, ready to send upstream."""

    body: dict[str, Any]
    headers: dict[str, str]
    deadline: float | None  # absolute event-loop time


class ChatCompletionService(pb_grpc.ChatCompletionServiceServicer):
    """The servicer; one instance per server, sharing one upstream client."""

    name: Final = SERVICE_NAME

    def __init__(self, upstream: HttpClient, headers: HeaderPolicy) -> None:
        self._upstream = upstream
        self._headers = headers

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ChatCompletionServiceServicer_to_server(self, server)

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> pb.CreateChatCompletionResponse:
        call = self._accept(request, context, streaming=False)
        served = this_call()
        with served.upstream_request():
            reply = await self._upstream.request_json(
                "POST", PATH, body=call.body, headers=call.headers, deadline=call.deadline
            )
        served.upstream_replied(reply.status, correlation_id(reply.headers))
        _report_usage(served, reply.body)
        await send_reply_metadata(context, self._headers, reply.headers)
        return convert.response_from_upstream(reply.body)

    async def StreamChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        call = self._accept(request, context, streaming=True)
        served = this_call()
        with served.upstream_request():
            async with self._upstream.open_sse(
                PATH, call.body, headers=call.headers, deadline=call.deadline
            ) as events:
                served.upstream_replied(events.status, events.correlation_id)
                await send_reply_metadata(context, self._headers, events.headers)
                async for chunk in stream.chunks(events):
                    if chunk.get("usage") is not None:  # the usage chunk (others say null, or nothing)
                        _report_usage(served, chunk)
                    yield convert.chunk_from_upstream(chunk)

    def _accept(self, request: pb.CreateChatCompletionRequest, context: Context, *, streaming: bool) -> _Call:
        """The upstream call for `request`; raises InvalidRequestError before anything is sent."""
        violations = validate_request(request, streaming=streaming)
        if violations:
            raise invalid_request(violations)
        return _Call(
            body=convert.request_to_upstream(request, stream=streaming),
            headers=self._headers.request_headers(context.invocation_metadata() or (), this_call().caller),
            deadline=deadline_of(context),
        )


def _report_usage(call: RpcCall, document: JSONObject) -> None:
    usage = usage_of(document)
    if usage is not None:
        call.record_usage(usage.prompt_tokens, usage.completion_tokens, usage.cost)
