"""What other OpenAI-compatible gateways say in their headers and errors reaches the caller like the Prisme
gateway's does: a LiteLLM proxy's ids as metadata and correlation id, its provider's Retry-After as
RetryInfo, its mid-stream connection failure as UNAVAILABLE; `--response-headers` returns more."""

from __future__ import annotations

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from tests.helpers import call_failing, chat_request, collect, status_details

LITELLM_IDS = ("x-litellm-call-id", "request-id", "llm_provider-x-request-id")


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_litellm_ids_reach_the_caller_as_metadata(stub, rpc: str) -> None:
    request = chat_request(model="litellm", text="hello ids")
    if rpc == "unary":
        call = stub.CreateChatCompletion(request, timeout=10)
        assert (await call).choices[0].message.content == "hello ids"
    else:
        call = stub.StreamChatCompletion(request, timeout=10)
        assert len(await collect(call)) > 2
    metadata = dict(await call.initial_metadata())
    assert metadata["x-litellm-call-id"].startswith("litellm-chatcmpl-mock")
    assert metadata["request-id"].startswith("req_")
    assert metadata["llm_provider-x-request-id"] == "provider-req-1"
    assert "x-correlation-id" not in metadata  # the mock sent none: nothing is made up
    assert "x-litellm-model-id" not in metadata  # not returned unless an operator asks (below)


async def test_response_headers_returns_more_headers(start_bridge, mock_gateway: MockGateway) -> None:
    bridge = await start_bridge(response_headers="X-LiteLLM-Model-Id, x-not-sent")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        call = pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(
            chat_request(model="litellm"), timeout=10
        )
        await call
        metadata = dict(await call.initial_metadata())
    assert metadata["x-litellm-model-id"] == "mock-deployment-1"
    assert "x-not-sent" not in metadata
    assert all(name in metadata for name in LITELLM_IDS)  # the defaults stay


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_litellm_rate_limit_carries_retry_info_and_its_call_id(stub, rpc: str) -> None:
    error, received = await call_failing(stub, rpc, chat_request(model="litellm-error-429"), timeout=10)
    assert received == []
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_details(error)
    assert details["RetryInfo"].retry_delay.ToSeconds() == 5  # from llm_provider-retry-after
    info = details["ErrorInfo"]
    assert info.reason == "UPSTREAM_RATE_LIMITED"
    assert info.metadata["upstreamCode"] == "429"
    call_id = info.metadata["correlationId"]
    assert call_id.startswith("litellm-chatcmpl-mock")
    assert dict(error.trailing_metadata() or ())["x-correlation-id"] == call_id


async def test_litellm_connection_failure_mid_stream_is_unavailable_after_the_text(stub) -> None:
    error, received = await call_failing(
        stub, "stream", chat_request(model="litellm-stream-error"), timeout=10
    )
    assert "".join(c.choices[0].delta.content for c in received if c.choices) == "Partial answer"
    # Callers retry UNAVAILABLE and give up on INTERNAL: LiteLLM's "500" must not decide.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "litellm.APIConnectionError" in error.details()
    info = status_details(error)["ErrorInfo"]
    assert (info.reason, info.metadata["upstreamCode"]) == ("UPSTREAM_UNAVAILABLE", "500")
    assert info.metadata["correlationId"].startswith("litellm-chatcmpl-mock")


async def test_unary_litellm_connection_failure_is_unavailable(stub) -> None:
    error, _ = await call_failing(stub, "unary", chat_request(model="litellm-stream-error"), timeout=10)
    # A 500 only says "it failed": what the upstream names decides, as in a stream.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert status_details(error)["ErrorInfo"].reason == "UPSTREAM_UNAVAILABLE"
