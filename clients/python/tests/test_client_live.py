"""ChatClient and AsyncChatClient against a live bridge in front of the mock gateway (see conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from live import API_KEY, LiveBridge

from prisme.llmgateway.client import AsyncChatClient, Bearer, ChatClient, error_details
from prisme.llmgateway.v1 import chat_completion_pb2 as pb

KEY = Bearer(API_KEY, allow_plaintext=True)


def _request(
    model: str = "echo", text: str = "Hello from the Python client", **fields: Any
) -> pb.CreateChatCompletionRequest:
    message = pb.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))
    return pb.CreateChatCompletionRequest(model=model, messages=[message], **fields)


def _streamed(model: str, **fields: Any) -> pb.CreateChatCompletionRequest:
    return _request(model, stream_options=pb.StreamOptions(include_usage=True), **fields)


def _per_call_fields_cleared(response: pb.CreateChatCompletionResponse) -> pb.CreateChatCompletionResponse:
    """The response without what differs between two calls: id, created, usage.duration_ms."""
    copy = pb.CreateChatCompletionResponse()
    copy.CopyFrom(response)
    copy.ClearField("id")
    copy.ClearField("created")
    copy.usage.ClearField("duration_ms")
    return copy


@pytest.fixture
def client(live_bridge: LiveBridge) -> Iterator[ChatClient]:
    with ChatClient.connect(live_bridge.address, tls=False, credentials=KEY, timeout=30) as chat:
        yield chat


def test_complete_sends_credentials_and_metadata(client: ChatClient, live_bridge: LiveBridge) -> None:
    reply = client.complete(_request(), metadata={"X-Correlation-Id": "corr-py-1"})
    assert reply.choices[0].message.content == "Hello from the Python client"
    headers = live_bridge.upstream_requests()[-1]["headers"]
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["x-correlation-id"] == "corr-py-1"


def test_per_call_credentials_replace_the_clients(live_bridge: LiveBridge) -> None:
    wrong = Bearer("iak_wrong_key", allow_plaintext=True)
    with ChatClient.connect(live_bridge.address, tls=False, credentials=wrong, timeout=30) as chat:
        with pytest.raises(grpc.RpcError) as failure:
            chat.complete(_request())
        details = error_details(failure.value)
        assert details.code == grpc.StatusCode.UNAUTHENTICATED
        assert details.reason  # the bridge says why, in ErrorInfo
        assert "iak_wrong_key" not in details.message
        assert chat.complete(_request(), credentials=KEY).choices[0].message.content


def test_a_token_is_not_sent_over_plaintext_unless_allowed(live_bridge: LiveBridge) -> None:
    before = len(live_bridge.upstream_requests())
    with ChatClient.connect(live_bridge.address, tls=False) as chat:
        with pytest.raises(ValueError, match="plaintext"):
            chat.complete(_request(), credentials=Bearer(API_KEY))
        with pytest.raises(ValueError, match="plaintext"):
            chat.stream(_request(), credentials=Bearer(API_KEY))
    assert len(live_bridge.upstream_requests()) == before


@pytest.mark.parametrize("model", ["echo", "tools", "reasoning"])
def test_accumulated_stream_equals_the_unary_reply(client: ChatClient, model: str) -> None:
    tools = [pb.Tool(type="function", function=pb.FunctionDefinition(name="get_weather"))]
    unary = client.complete(_request(model, tools=tools))
    streamed = client.stream(_streamed(model, tools=tools)).accumulate()
    assert streamed.id
    assert streamed.created
    assert streamed.usage.total_tokens
    assert _per_call_fields_cleared(streamed) == _per_call_fields_cleared(unary)


def test_stream_yields_chunks_and_folds_them(client: ChatClient) -> None:
    stream = client.stream(_streamed("echo", n=2), metadata=[("x-request-id", "req-py-7")])
    chunks = list(stream)
    assert chunks[-1].usage.total_tokens
    assert not chunks[-1].choices
    text = "".join(c.delta.content for chunk in chunks for c in chunk.choices if c.index == 1)
    assert text == "Hello from the Python client"
    folded = stream.response()
    assert [c.index for c in folded.choices] == [0, 1]
    assert folded.choices[1].message.content == text
    assert ("x-request-id", "req-py-7") in stream.initial_metadata()


def test_cancel_ends_the_stream(client: ChatClient) -> None:
    stream = client.stream(_request("endless"))
    assert next(stream).choices[0].delta.role == "assistant"
    assert next(stream).choices[0].delta.content == "tick "
    stream.cancel()
    with pytest.raises(grpc.RpcError) as failure:
        stream.accumulate()
    assert error_details(failure.value).code == grpc.StatusCode.CANCELLED
    assert stream.response().choices[0].message.content.startswith("tick ")


def test_deadline(client: ChatClient) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        client.complete(_request("slow-5000"), timeout=0.3)
    assert error_details(failure.value).code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_client_default_deadline_and_per_call_none(live_bridge: LiveBridge) -> None:
    with ChatClient.connect(live_bridge.address, tls=False, credentials=KEY, timeout=0.3) as chat:
        with pytest.raises(grpc.RpcError) as failure:
            chat.stream(_request("slow-5000")).accumulate()
        assert error_details(failure.value).code == grpc.StatusCode.DEADLINE_EXCEEDED
        # None: no deadline for this call, although the client has one.
        assert chat.complete(_request("slow-600"), timeout=None).choices[0].message.content


def test_error_details_rate_limit(client: ChatClient) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        client.complete(_request("error-429"))
    details = error_details(failure.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "UPSTREAM_RATE_LIMITED"
    assert details.error_info is not None
    assert details.error_info.metadata["httpStatus"] == "429"
    assert details.retry_delay == timedelta(seconds=7)
    assert details.field_violations == []


def test_error_details_bad_request(client: ChatClient) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        client.complete(pb.CreateChatCompletionRequest(model="echo"))
    details = error_details(failure.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in [v.field for v in details.field_violations]
    assert details.retry_delay is None


async def test_async_client(live_bridge: LiveBridge) -> None:
    async with AsyncChatClient.connect(live_bridge.address, tls=False, credentials=KEY, timeout=30) as chat:
        unary = await chat.complete(_request("tools"), metadata={"x-correlation-id": "corr-aio"})
        stream = chat.stream(_streamed("tools"))
        chunks = [chunk async for chunk in stream]
        assert len(chunks) > 3
        assert _per_call_fields_cleared(stream.response()) == _per_call_fields_cleared(unary)
        assert _per_call_fields_cleared(await chat.stream(_streamed("tools")).accumulate()) == (
            _per_call_fields_cleared(unary)
        )
        assert await stream.trailing_metadata() is not None
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await chat.complete(_request("error-429"))
        assert error_details(failure.value).retry_delay == timedelta(seconds=7)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await chat.stream(_request("slow-5000"), timeout=0.3).accumulate()
        assert error_details(failure.value).code == grpc.StatusCode.DEADLINE_EXCEEDED
    correlated = [
        r for r in live_bridge.upstream_requests() if r["headers"].get("x-correlation-id") == "corr-aio"
    ]
    assert [r["model"] for r in correlated] == ["tools"]
