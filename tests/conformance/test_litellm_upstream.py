"""The bridge in front of a real LiteLLM proxy (pinned, own venv) whose OpenAI provider is the mock gateway:
caller -> bridge (gRPC) -> LiteLLM (HTTP) -> mock gateway (HTTP).

What the provider sent is known twice: the mock's request records, and the same request sent to the mock
directly with the OpenAI SDK.

What LiteLLM 1.108.7 does here (see docs/compatibility.md): it answers under its model group name
(`mock/echo`), ends a usage chunk with `choices: [{"index": 0, "delta": {}}]` instead of `[]`, adds
`"type": "function"` to every tool-call fragment, rewrites a provider failure in a stream as
`data: {"error": {"message": "litellm.APIConnectionError: ...", "type": null, "code": "500"}}` (no [DONE]),
returns its ids as `x-litellm-call-id` and the provider's headers prefixed `llm_provider-`, and without a
database answers any key but the master key with 400 "No connected db." (a missing key gets its 401).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.mock_gateway import MockGateway
from tests.conformance import servers
from tests.conformance.servers import MASTER_KEY, MOCK_PREFIX

TIMEOUT_S = 20.0


Chunks = list[pb.StreamChatCompletionResponse]


def _key(key: str = MASTER_KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def _request(script: str, text: str, **fields: Any) -> pb.CreateChatCompletionRequest:
    message = pb.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))
    return pb.CreateChatCompletionRequest(model=MOCK_PREFIX + script, messages=[message], **fields)


def _unique(words: str) -> str:
    """Message text no other test sends, so the provider's record of this call can be found."""
    return f"{words} {uuid.uuid4().hex[:8]}"


def _records(provider: MockGateway, text: str) -> list[dict[str, Any]]:
    return [r for r in provider.requests() if text in str(r["body"])]


async def _wait_outcome(provider: MockGateway, text: str, outcome: str, within: float = 15.0) -> None:
    """Waits until the provider's request carrying `text` ended with `outcome`; fails showing what it saw."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = [r["outcome"] for r in _records(provider, text)]
        if seen and seen[-1] == outcome:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"provider request {text!r}: outcomes {seen}, expected {outcome!r} within {within} s")


async def _collect(call: Any) -> Chunks:
    return [chunk async for chunk in call]


async def _drain_into(call: Any, received: Chunks) -> None:
    """Reads a stream into `received`, so what came before its error stays visible."""
    async for chunk in call:
        received.append(chunk)


async def _send(stub: Any, rpc: str, request: pb.CreateChatCompletionRequest) -> object:
    """One call as `rpc` ("unary" or "stream", read to its end) with the master key."""
    if rpc == "unary":
        return await stub.CreateChatCompletion(request, metadata=_key(), timeout=TIMEOUT_S)
    return await _collect(stub.StreamChatCompletion(request, metadata=_key(), timeout=TIMEOUT_S))


def _rich_details(error: grpc.aio.AioRpcError) -> tuple[Any, Any]:
    """(ErrorInfo, RetryInfo) of a failed call, None where absent."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status: {error}"
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    found = {detail.type_url.rsplit(".", 1)[-1]: detail for detail in status.details}
    info_found = "ErrorInfo" in found and found["ErrorInfo"].Unpack(info)
    retry_found = "RetryInfo" in found and found["RetryInfo"].Unpack(retry)
    return (info if info_found else None), (retry if retry_found else None)


# ------------------------------------------------------------------------ what the provider itself sends


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _bridge_shape(chunk: pb.StreamChatCompletionResponse) -> tuple[Any, ...]:
    """A chunk's meaning: per choice (index, role, content, finish_reason, tool fragments)."""
    choices = []
    for choice in chunk.choices:
        delta = choice.delta
        tools = tuple(
            (t.index, _opt(t, "id"), _opt(t.function, "name"), _opt(t.function, "arguments"))
            for t in delta.tool_calls
        )
        shape = (
            choice.index,
            _opt(delta, "role"),
            _opt(delta, "content"),
            _opt(choice, "finish_reason"),
            tools,
        )
        choices.append(shape)
    return _meaningful(choices)


def _sdk_shape(chunk: ChatCompletionChunk) -> tuple[Any, ...]:
    choices = []
    for choice in chunk.choices:
        delta = choice.delta
        tools = tuple(
            (
                t.index,
                t.id,
                t.function.name if t.function else None,
                t.function.arguments if t.function else None,
            )
            for t in delta.tool_calls or ()
        )
        choices.append((choice.index, delta.role, delta.content, choice.finish_reason, tools))
    return _meaningful(choices)


def _meaningful(choices: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    # LiteLLM's usage chunk carries an empty choice ({"index": 0, "delta": {}}) where the provider's has none.
    return tuple(c for c in choices if any(v not in (None, ()) for v in c[1:]))


async def _provider_stream(
    provider: MockGateway, script: str, text: str, **body: Any
) -> list[ChatCompletionChunk]:
    """The same request sent straight to the provider with the OpenAI SDK."""
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key=servers.PROVIDER_KEY, max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model=script, messages=[{"role": "user", "content": text}], stream=True, **body
        )
        return [chunk async for chunk in stream]


# -------------------------------------------------------------------------------------------- success


async def test_unary_reply(stub, provider: MockGateway) -> None:
    text = _unique("unary through LiteLLM")
    metadata = (*_key(), ("x-request-id", "req-conformance-1"))
    response = await stub.CreateChatCompletion(_request("echo", text), metadata=metadata, timeout=TIMEOUT_S)
    assert response.object == "chat.completion"
    assert response.model == "mock/echo"  # LiteLLM answers under its model group
    assert response.id.startswith("chatcmpl-mock")  # the provider's id, passed through
    [choice] = response.choices
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", text, "stop")
    words = len(text.split())
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (words, words)
    assert response.usage.total_tokens == 2 * words
    [record] = _records(provider, text)
    assert record["model"] == "echo"
    assert record["outcome"] == "completed"
    # LiteLLM calls the provider with its own provider key, never the caller's master key.
    assert record["headers"]["authorization"] == f"Bearer {servers.PROVIDER_KEY}"
    # The bridge forwards the caller's x-request-id to LiteLLM, which does not pass it on to its provider.
    assert "x-request-id" not in record["headers"]


async def test_stream_matches_the_provider_chunk_for_chunk(stub, provider: MockGateway) -> None:
    text = _unique("alpha beta gamma delta epsilon")
    call = stub.StreamChatCompletion(_request("echo", text), metadata=_key(), timeout=TIMEOUT_S)
    through = await _collect(call)
    direct = await _provider_stream(provider, "echo", text)
    assert [_bridge_shape(c) for c in through] == [_sdk_shape(c) for c in direct]
    assert len(through) == len(text.split()) + 2  # role, one per word, finish
    assert len({c.id for c in through}) == 1
    assert "".join(c.choices[0].delta.content for c in through) == text
    assert all(not c.HasField("usage") for c in through)


async def test_tool_call_deltas(stub, provider: MockGateway) -> None:
    text = _unique("weather in Paris?")
    tool = pb.Tool(
        type="function",
        function=pb.FunctionDefinition(name="lookup_weather", parameters=struct_pb2.Struct()),
    )
    call = stub.StreamChatCompletion(
        _request("tools", text, tools=[tool]), metadata=_key(), timeout=TIMEOUT_S
    )
    through = await _collect(call)
    direct = await _provider_stream(
        provider,
        "tools",
        text,
        tools=[{"type": "function", "function": {"name": "lookup_weather", "parameters": {}}}],
    )
    assert [_bridge_shape(c) for c in through] == [_sdk_shape(c) for c in direct]
    fragments = [t for c in through for choice in c.choices for t in choice.delta.tool_calls]
    first, *rest = fragments
    assert (first.index, first.id, first.type, first.function.name) == (
        0,
        "call_mock_1",
        "function",
        "lookup_weather",
    )
    assert len(rest) == 3  # the mock's three argument pieces, each alone
    assert all(not f.HasField("id") and not f.function.HasField("name") for f in rest)
    assert "".join(f.function.arguments for f in fragments) == '{"city": "Paris", "unit": "celsius"}'
    assert through[-1].choices[0].finish_reason == "tool_calls"


async def test_unary_tool_call(stub) -> None:
    response = await stub.CreateChatCompletion(
        _request("tools", _unique("weather?")), metadata=_key(), timeout=TIMEOUT_S
    )
    [choice] = response.choices
    [tool_call] = choice.message.tool_calls
    assert (tool_call.id, tool_call.type, tool_call.function.name) == (
        "call_mock_1",
        "function",
        "get_weather",
    )
    assert tool_call.function.arguments == '{"city": "Paris", "unit": "celsius"}'
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.HasField("content")


async def test_include_usage_ends_the_stream_with_the_providers_usage(stub, provider: MockGateway) -> None:
    text = _unique("count these words please")
    request = _request("reasoning", text, stream_options=pb.StreamOptions(include_usage=True))
    through = await _collect(stub.StreamChatCompletion(request, metadata=_key(), timeout=TIMEOUT_S))
    direct = await _provider_stream(provider, "reasoning", text, stream_options={"include_usage": True})
    assert [c.HasField("usage") for c in through] == [False] * (len(through) - 1) + [True]
    usage, expected = through[-1].usage, direct[-1].usage
    assert expected is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        expected.prompt_tokens,
        expected.completion_tokens,
        expected.total_tokens,
    )
    assert expected.completion_tokens_details is not None
    assert expected.prompt_tokens_details is not None
    assert (
        usage.completion_tokens_details.reasoning_tokens
        == expected.completion_tokens_details.reasoning_tokens
    )
    assert usage.prompt_tokens_details.cached_tokens == expected.prompt_tokens_details.cached_tokens
    reasoning = "".join(c.choices[0].delta.reasoning_content for c in through if c.choices)
    assert reasoning.startswith("The user wants their")


async def test_usage_token_details_litellm_adds_stay_integers(stub) -> None:
    # A provider that ends without usage (`no-finish`): LiteLLM counts the tokens itself and adds
    # completion_tokens_details.text_tokens; it must arrive typed, as an integer, not in usage.extra.
    request = _request("no-finish", _unique("two words"), stream_options=pb.StreamOptions(include_usage=True))
    through = await _collect(stub.StreamChatCompletion(request, metadata=_key(), timeout=TIMEOUT_S))
    usage = through[-1].usage
    assert usage.completion_tokens > 0
    assert "completion_tokens_details" not in usage.extra.fields, usage.extra
    details = usage.completion_tokens_details
    assert "text_tokens" in details.DESCRIPTOR.fields_by_name
    assert getattr(details, "text_tokens") == usage.completion_tokens  # noqa: B009 - field added by the fix


# --------------------------------------------------------------------------------------------- errors


async def test_no_key_is_unauthenticated(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(_request("echo", _unique("no key")), timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "No api key passed in" in raised.value.details()
    info, _ = _rich_details(raised.value)
    assert info.metadata["httpStatus"] == "401"


async def test_key_the_provider_refuses_is_unauthenticated(stub, provider: MockGateway) -> None:
    text = _unique("provider refuses")
    request = pb.CreateChatCompletionRequest(
        model=servers.BAD_KEY_PREFIX + "echo",
        messages=[pb.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))],
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(request, metadata=_key(), timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "litellm.AuthenticationError" in raised.value.details()
    assert [r["outcome"] for r in _records(provider, text)] == ["error"]


async def test_wrong_key_without_a_database_is_litellms_400(stub) -> None:
    # Without a database LiteLLM cannot look a virtual key up: any key but the master key is its 400
    # "No connected db." (never a 401), which the bridge reports as it reports every 400.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(
            _request("echo", _unique("wrong key")), metadata=_key("sk-not-the-master"), timeout=TIMEOUT_S
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "No connected db." in raised.value.details()
    info, _ = _rich_details(raised.value)
    assert (info.reason, info.metadata["upstreamCode"]) == ("UPSTREAM_INVALID_REQUEST", "400")
    assert info.metadata["upstreamType"] == "no_db_connection"


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_unknown_model(stub, rpc: str) -> None:
    request = pb.CreateChatCompletionRequest(
        model="nowhere/echo",
        messages=[pb.ChatMessage(role="user", content=struct_pb2.Value(string_value="hello"))],
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _send(stub, rpc, request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model=nowhere/echo" in raised.value.details()
    assert "no healthy deployments" in raised.value.details()


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_provider_429_is_resource_exhausted_at_once(stub, provider: MockGateway, rpc: str) -> None:
    text = _unique("rate limited")
    request = _request("error-429", text)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _send(stub, rpc, request)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "litellm.RateLimitError" in raised.value.details()
    info, _ = _rich_details(raised.value)
    assert info.metadata["httpStatus"] == "429"
    assert len(_records(provider, text)) == 1  # num_retries 0: LiteLLM passed the 429 on, no retry


async def test_provider_429_retry_after_becomes_retry_info(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(
            _request("error-429", _unique("retry info")), metadata=_key(), timeout=TIMEOUT_S
        )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _, retry = _rich_details(raised.value)
    assert retry is not None
    assert retry.retry_delay.seconds == 7  # the provider's Retry-After: 7


@pytest.mark.parametrize(
    ("script", "code", "litellm_class"),
    [
        ("error-500", grpc.StatusCode.INTERNAL, "InternalServerError"),
        ("openai-error-500", grpc.StatusCode.INTERNAL, "InternalServerError"),
        ("error-503", grpc.StatusCode.UNAVAILABLE, "ServiceUnavailableError"),
        ("openai-error-503", grpc.StatusCode.UNAVAILABLE, "ServiceUnavailableError"),
    ],
)
async def test_provider_5xx(stub, script: str, code: grpc.StatusCode, litellm_class: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(_request(script, _unique("5xx")), metadata=_key(), timeout=TIMEOUT_S)
    assert raised.value.code() == code
    assert f"litellm.{litellm_class}" in raised.value.details()


@pytest.mark.parametrize("script", ["stream-error", "truncated"])
async def test_provider_failure_mid_stream_after_text(stub, script: str) -> None:
    # `stream-error`: the provider sends an error event after two chunks; `truncated`: its connection dies
    # there. LiteLLM turns both into its own error event, which ends the call after the text.
    call = stub.StreamChatCompletion(
        _request(script, _unique("mid-stream")), metadata=_key(), timeout=TIMEOUT_S
    )
    received: Chunks = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _drain_into(call, received)
    assert "".join(c.choices[0].delta.content for c in received if c.choices) == "Partial answer"
    assert "litellm.APIConnectionError" in raised.value.details()
    info, _ = _rich_details(raised.value)
    assert info.metadata["upstreamCode"] == "500"


@pytest.mark.parametrize("script", ["stream-error", "truncated"])
async def test_provider_failure_mid_stream_is_unavailable(stub, script: str) -> None:
    call = stub.StreamChatCompletion(
        _request(script, _unique("mid-stream")), metadata=_key(), timeout=TIMEOUT_S
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _collect(call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("script", ["truncated-eof", "no-finish"])
async def test_a_provider_stream_ending_early_looks_finished_behind_litellm(stub, script: str) -> None:
    # Straight from the mock, the bridge reports both as UNAVAILABLE (see the integration tests): the
    # body ends after half an event, or without finish_reason and [DONE]. LiteLLM closes such a stream as a
    # finished one (finish_reason "stop", [DONE]), so what reaches the bridge is a complete stream.
    sent = _unique("cut short")
    call = stub.StreamChatCompletion(_request(script, sent), metadata=_key(), timeout=TIMEOUT_S)
    through = await _collect(call)
    text = "".join(c.choices[0].delta.content for c in through if c.choices)
    assert text == ("Partial answer" if script == "truncated-eof" else sent)
    finishes = [c.choices[0].finish_reason for c in through if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


# ------------------------------------------------------------------- deadlines and cancels reach the provider


async def test_deadline_on_a_unary_call_closes_the_provider_request(stub, provider: MockGateway) -> None:
    text = _unique("slow unary")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(_request("slow-60000", text), metadata=_key(), timeout=1.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _wait_outcome(provider, text, "client_disconnected")


async def test_deadline_on_a_stream_closes_the_provider_request(stub, provider: MockGateway) -> None:
    # LiteLLM's first stream of a run takes seconds to start (2.6 s here when this test runs first): one
    # stream before, and a deadline with room, so the deadline cuts a flowing stream, not LiteLLM's start.
    await _drain_into(
        stub.StreamChatCompletion(_request("echo", "warm"), metadata=_key(), timeout=TIMEOUT_S), []
    )
    text = _unique("endless stream")
    call = stub.StreamChatCompletion(_request("endless", text), metadata=_key(), timeout=4)
    received: Chunks = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _drain_into(call, received)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert any(c.choices and c.choices[0].delta.content == "tick " for c in received)
    await _wait_outcome(provider, text, "client_disconnected")


async def test_cancelling_a_stream_closes_the_provider_request(stub, provider: MockGateway) -> None:
    text = _unique("cancelled stream")
    call = stub.StreamChatCompletion(_request("endless", text), metadata=_key(), timeout=TIMEOUT_S)
    ticks = 0
    async for chunk in call:
        ticks += chunk.choices[0].delta.content == "tick "
        if ticks == 2:
            break
    assert call.cancel()
    await _wait_outcome(provider, text, "client_disconnected")


async def test_cancelling_a_unary_call_closes_the_provider_request(stub, provider: MockGateway) -> None:
    text = _unique("cancelled unary")
    call = stub.CreateChatCompletion(_request("slow-60000", text), metadata=_key(), timeout=TIMEOUT_S)
    await _wait_outcome(provider, text, "in_progress")
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _wait_outcome(provider, text, "client_disconnected")


# ----------------------------------------------------------------------------------- LiteLLM's call id


def _call_id(metadata: Any) -> str | None:
    return dict(metadata or ()).get("x-litellm-call-id")


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_litellm_call_id_reaches_the_caller(stub, rpc: str) -> None:
    request = _request("echo", _unique("call id"))
    if rpc == "unary":
        call = stub.CreateChatCompletion(request, metadata=_key(), timeout=TIMEOUT_S)
        await call
    else:
        call = stub.StreamChatCompletion(request, metadata=_key(), timeout=TIMEOUT_S)
        await _collect(call)
    call_id = _call_id(await call.initial_metadata())
    assert call_id is not None
    assert uuid.UUID(call_id)


async def test_litellm_call_id_of_a_failed_call_is_the_one_litellm_logged(
    stub, litellm: servers.Server
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateChatCompletion(
            _request("error-500", _unique("failed call id")), metadata=_key(), timeout=TIMEOUT_S
        )
    # On errors the upstream's id is the x-correlation-id trailer and ErrorInfo's correlationId
    # (docs/errors.md); behind LiteLLM that is its call id.
    call_id = dict(raised.value.trailing_metadata() or ()).get("x-correlation-id")
    assert call_id is not None
    info, _ = _rich_details(raised.value)
    assert info.metadata["correlationId"] == call_id
    assert f"litellm_call_id={call_id}" in litellm.log.read_text(errors="replace")
