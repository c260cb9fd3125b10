"""The bridge against the mock gateway over loopback: the acceptance cases of the core issue."""

from __future__ import annotations

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.mock_gateway import MockGateway
from tests.helpers import GUARD_S, chat_request, collect, ended, status_details, wait_request


async def _drain(call: grpc.aio.UnaryStreamCall, into: list[pb.StreamChatCompletionResponse]) -> None:
    async for chunk in call:
        into.append(chunk)


async def test_unary_echo(stub, mock_gateway: MockGateway) -> None:
    response = await stub.CreateChatCompletion(chat_request(text="Bonjour le monde"), timeout=10)
    assert response.object == "chat.completion"
    assert response.choices[0].message.content == "Bonjour le monde"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.HasField("cost")
    assert response.usage.carbon.fields["gco2e"].number_value > 0
    sent = mock_gateway.requests()[-1]
    assert sent["body"]["stream"] is False
    assert sent["body"]["messages"] == [{"role": "user", "content": "Bonjour le monde"}]


async def test_stream_chunks_in_order_with_usage(stub, mock_gateway: MockGateway) -> None:
    request = chat_request(text="one two three four", stream_options=pb.StreamOptions(include_usage=True))
    chunks = await collect(stub.StreamChatCompletion(request, timeout=10))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert text == "one two three four"
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].HasField("finish_reason")
    ] == ["stop"]
    last = chunks[-1]
    assert list(last.choices) == []  # the usage-only chunk is passed on
    assert last.usage.total_tokens > 0
    body = mock_gateway.requests()[-1]["body"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_429_carries_retry_info(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(chat_request(model="error-429"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_details(raised.value)
    assert details["RetryInfo"].retry_delay.seconds == 7
    assert details["ErrorInfo"].metadata["httpStatus"] == "429"


async def test_cancel_closes_the_upstream_request(stub, mock_gateway: MockGateway) -> None:
    call = stub.StreamChatCompletion(chat_request(model="endless"))
    received = 0
    async for _ in call:
        received += 1
        if received == 3:
            break
    call.cancel()
    # An endless stream ends only when its client leaves: its end is the event (no guess at how soon).
    record = await wait_request(mock_gateway, ended, within=GUARD_S)
    assert record["outcome"] == "client_disconnected"


async def test_deadline_against_slow_upstream(stub, mock_gateway: MockGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(chat_request(model="slow-5000"), timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # ...and the bridge gave up on the upstream: had it waited, the request would have completed at 5 s.
    record = await wait_request(mock_gateway, ended, within=GUARD_S)
    assert record["outcome"] == "client_disconnected"


@pytest.mark.parametrize("variant", ["echo-crlf", "echo-cr", "echo-bytewise", "echo-comments"])
async def test_line_ending_variants_give_identical_text(stub, variant: str) -> None:
    text = "Ça marche — même en octets séparés"
    reference = await collect(stub.StreamChatCompletion(chat_request(model="echo", text=text), timeout=10))
    chunks = await collect(stub.StreamChatCompletion(chat_request(model=variant, text=text), timeout=10))
    assert [c.choices[0].delta for c in chunks] == [c.choices[0].delta for c in reference]
    assert "".join(c.choices[0].delta.content for c in chunks) == text


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("stream-error", grpc.StatusCode.INTERNAL),
        ("stream-error-event", grpc.StatusCode.INTERNAL),
        ("truncated", grpc.StatusCode.UNAVAILABLE),
        ("truncated-eof", grpc.StatusCode.UNAVAILABLE),
        ("no-finish", grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_broken_streams_end_non_ok_after_chunks(stub, model: str, code: grpc.StatusCode) -> None:
    call = stub.StreamChatCompletion(chat_request(model=model), timeout=10)
    received: list[pb.StreamChatCompletionResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _drain(call, received)
    assert raised.value.code() == code
    assert len(received) >= 2  # the chunks before the failure were delivered


async def test_no_done_after_finish_reason_is_ok(stub) -> None:
    call = stub.StreamChatCompletion(chat_request(model="no-done", text="a b"), timeout=10)
    chunks = await collect(call)
    assert await call.code() == grpc.StatusCode.OK
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "a b"
