"""StreamChatCompletion end to end: one gRPC message per upstream SSE chunk, and the stream's shapes.

The reference for "what the upstream sent" is the mock's own stream, fetched directly with httpx for the
very body the bridge posted, and parsed here (not by the bridge's decoder).
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2

from bridge.chat import convert
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.mock_gateway import MockGateway
from bridge.mock_gateway.bodies import USAGE_SHAPES
from tests.helpers import call_failing, chat_request, collect, every_transport, status_details

# Every test that starts a bridge runs once per upstream transport.
upstream_transport = every_transport()

TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'


def _sse_data(raw: str) -> list[str]:
    """The data of each event of a text/event-stream body (multi-line data joined with newlines)."""
    events = []
    for block in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    return events


async def _mock_stream(mock: MockGateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks the mock sends for `body`, read straight off its HTTP response."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        response = await client.post(f"{mock.base_url}/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse_data(response.text)
    assert events[-1] == "[DONE]"
    return [json.loads(data) for data in events[:-1]]


def _comparable(chunk: pb.StreamChatCompletionResponse) -> pb.StreamChatCompletionResponse:
    """`chunk` without what differs between two runs of the same script (id, created, duration)."""
    copy = pb.StreamChatCompletionResponse()
    copy.CopyFrom(chunk)
    copy.ClearField("id")
    copy.ClearField("created")
    if copy.HasField("usage"):
        copy.usage.ClearField("duration_ms")
    return copy


def _text(chunks: list[pb.StreamChatCompletionResponse], index: int = 0) -> str:
    return "".join(c.delta.content for chunk in chunks for c in chunk.choices if c.index == index)


def _weather_tool(name: str) -> pb.Tool:
    parameters = struct_pb2.Struct()
    parameters.update({"type": "object", "properties": {"city": {"type": "string"}}})
    return pb.Tool(type="function", function=pb.FunctionDefinition(name=name, parameters=parameters))


USAGE = pb.StreamOptions(include_usage=True)


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        pytest.param("echo", {}, id="echo"),
        pytest.param("echo", {"stream_options": USAGE}, id="echo-usage"),
        pytest.param("echo", {"stream_options": USAGE, "n": 2}, id="echo-n2-usage"),
        pytest.param("echo-multiline", {}, id="echo-multiline"),
        pytest.param("echo-nospace", {"stream_options": USAGE}, id="echo-nospace"),
        pytest.param("tools", {"stream_options": USAGE}, id="tools"),
        pytest.param("tools-custom", {"stream_options": USAGE}, id="tools-custom"),
        pytest.param("reasoning", {"stream_options": USAGE}, id="reasoning"),
        pytest.param("azure", {"stream_options": USAGE}, id="azure"),
    ],
)
async def test_one_message_per_upstream_chunk_in_order(
    stub, mock_gateway: MockGateway, model: str, fields: dict[str, Any]
) -> None:
    text = "Les chunks arrivent un par un, dans l'ordre ✓"
    call = stub.StreamChatCompletion(chat_request(model=model, text=text, **fields), timeout=10)
    received = await collect(call)
    assert await call.code() == grpc.StatusCode.OK

    posted = mock_gateway.requests()[-1]["body"]
    # The bridge asks for usage (for its token metrics) whether the caller did or not; when it did not,
    # what the caller receives is exactly the stream the upstream sends without it.
    assert posted["stream_options"]["include_usage"] is True
    if "stream_options" not in fields:
        posted = {key: value for key, value in posted.items() if key != "stream_options"}
    upstream = await _mock_stream(mock_gateway, posted)
    assert len(received) == len(upstream) > 3
    assert [_comparable(c) for c in received] == [
        _comparable(convert.chunk_from_upstream(c)) for c in upstream
    ]
    # One stream: every chunk carries the id the upstream gave this completion.
    ids = {c.id for c in received if c.id}
    assert len(ids) == 1
    assert next(iter(ids)).startswith("chatcmpl-mock")


@pytest.mark.parametrize("model", ["echo", "echo-multiline", "echo-bytewise"])
async def test_each_word_is_its_own_message(stub, model: str) -> None:
    words = ["alpha ", "beta ", "gamma ", "delta ", "epsilon"]
    chunks = await collect(
        stub.StreamChatCompletion(chat_request(model=model, text="".join(words)), timeout=10)
    )
    # role chunk, one chunk per word, the finish chunk: nothing merged, nothing dropped
    assert [c.choices[0].delta.content for c in chunks] == ["", *words, ""]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].HasField("finish_reason") for c in chunks] == [False] * 6 + [True]


async def test_usage_chunk_only_when_asked(stub) -> None:
    without = await collect(stub.StreamChatCompletion(chat_request(text="a b c"), timeout=10))
    assert not any(c.HasField("usage") for c in without)
    assert all(c.choices for c in without)

    with_usage = await collect(
        stub.StreamChatCompletion(chat_request(text="a b c", stream_options=USAGE), timeout=10)
    )
    assert len(with_usage) == len(without) + 1
    assert [c.HasField("usage") for c in with_usage] == [False] * len(without) + [True]
    last = with_usage[-1]
    assert list(last.choices) == []
    assert (last.usage.completion_tokens, last.usage.total_tokens) == (3, 6)

    explicitly_off = await collect(
        stub.StreamChatCompletion(
            chat_request(text="a b c", stream_options=pb.StreamOptions(include_usage=False)), timeout=10
        )
    )
    assert len(explicitly_off) == len(without)
    assert not any(c.HasField("usage") for c in explicitly_off)


def _without_options(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "stream_options"}


@pytest.mark.parametrize("caller_asks", [False, True], ids=["caller-did-not-ask", "caller-asked"])
@pytest.mark.parametrize("model", ["echo", *(f"usage-{shape}" for shape in USAGE_SHAPES)])
async def test_the_usage_the_bridge_asked_for_never_reaches_a_caller_who_did_not(
    stub, mock_gateway: MockGateway, model: str, caller_asks: bool
) -> None:
    # Each way an upstream sends usage (a chunk of its own with no choices or with an empty one, on the
    # finish chunk, on every chunk, not at all): the caller who did not ask gets exactly the upstream's
    # stream without the option; the caller who asked gets the upstream's stream with it, untouched.
    fields = {"stream_options": USAGE} if caller_asks else {}
    received = await collect(
        stub.StreamChatCompletion(chat_request(model=model, text="a b c d", **fields), timeout=10)
    )
    posted = mock_gateway.requests()[-1]["body"]
    assert posted["stream_options"] == {"include_usage": True}
    asked = await _mock_stream(mock_gateway, posted)  # what the bridge was sent
    assert any(chunk.get("usage") for chunk in asked) is (model != "usage-ignored")
    expected = asked if caller_asks else await _mock_stream(mock_gateway, _without_options(posted))
    assert [_comparable(c) for c in received] == [
        _comparable(convert.chunk_from_upstream(c)) for c in expected
    ]
    if not caller_asks:
        assert not any(c.HasField("usage") for c in received)
        assert received[-1].choices[0].finish_reason == "stop"


async def test_tool_call_fragments_arrive_as_separate_chunks(stub, mock_gateway: MockGateway) -> None:
    request = chat_request(model="tools", text="weather?", tools=[_weather_tool("lookup_city")])
    chunks = await collect(stub.StreamChatCompletion(request, timeout=10))

    role, first, *pieces, finish = chunks
    assert role.choices[0].delta.role == "assistant"
    assert not role.choices[0].delta.HasField("content")  # the upstream's content: null

    (head,) = first.choices[0].delta.tool_calls
    assert head.index == 0
    assert (head.id, head.type, head.function.name) == ("call_mock_1", "function", "lookup_city")
    assert head.function.HasField("arguments")
    assert head.function.arguments == ""

    assert len(pieces) == 3
    fragments = [c.choices[0].delta.tool_calls for c in pieces]
    assert all(len(f) == 1 for f in fragments)
    for (fragment,) in fragments:
        assert fragment.index == 0
        assert not fragment.HasField("id")
        assert not fragment.HasField("type")
        assert not fragment.function.HasField("name")
        assert fragment.function.arguments
    assert "".join(f.function.arguments for (f,) in fragments) == TOOL_ARGUMENTS
    assert json.loads("".join(f.function.arguments for (f,) in fragments)) == {
        "city": "Paris",
        "unit": "celsius",
    }

    assert finish.choices[0].finish_reason == "tool_calls"
    assert not finish.choices[0].delta.tool_calls
    assert mock_gateway.requests()[-1]["body"]["tools"][0]["function"]["name"] == "lookup_city"


async def test_azure_first_chunk_and_obfuscation_are_kept(stub) -> None:
    text = "filtered but fine"
    chunks = await collect(stub.StreamChatCompletion(chat_request(model="azure", text=text), timeout=10))

    first = chunks[0]
    assert list(first.choices) == []
    assert (first.id, first.object, first.created, first.model) == ("", "", 0, "")
    filters = first.extra.fields["prompt_filter_results"].list_value.values
    assert len(filters) == 1
    assert filters[0].struct_value.fields["prompt_index"].number_value == 0
    assert filters[0].struct_value.fields["content_filter_results"].HasField("struct_value")

    rest = chunks[1:]
    assert all(c.extra.fields["obfuscation"].string_value == "abc" for c in rest)
    assert all(c.choices[0].extra.fields["content_filter_results"].HasField("struct_value") for c in rest)
    assert _text(rest) == text


async def test_reasoning_deltas_come_before_the_answer(stub) -> None:
    text = "four words right here"
    chunks = await collect(stub.StreamChatCompletion(chat_request(model="reasoning", text=text), timeout=10))
    deltas = [c.choices[0].delta for c in chunks]
    kinds = [
        "reasoning" if d.HasField("reasoning_content") else "content" if d.content else "other"
        for d in deltas
    ]
    first_content = kinds.index("content")
    assert kinds.count("reasoning") > 1
    assert "reasoning" not in kinds[first_content:]
    assert (
        "".join(d.reasoning_content for d in deltas) == "The user wants their 4 words back, so I repeat them."
    )
    assert _text(chunks) == text
    assert not any(d.HasField("reasoning_content") and d.content for d in deltas)


async def test_json_reply_to_a_stream_request_is_an_error(stub) -> None:
    error, received = await call_failing(stub, "stream", chat_request(model="json-on-stream"), timeout=10)
    assert received == []
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "event stream" in error.details()
    assert status_details(error)["ErrorInfo"].reason == "UPSTREAM_INVALID_RESPONSE"


async def test_vllm_integer_error_code_maps_like_its_http_status(stub) -> None:
    error, received = await call_failing(stub, "stream", chat_request(model="stream-error-vllm"), timeout=10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt is too long" in error.details()
    info = status_details(error)["ErrorInfo"]
    assert info.metadata["upstreamCode"] == "400"
    assert [c.choices[0].delta.content for c in received] == ["", "Partial ", "answer"]


async def test_error_as_content_is_passed_on_as_content(stub) -> None:
    # Prisme's documented mid-stream failure is plain content: the bridge can't tell, and must not drop it.
    call = stub.StreamChatCompletion(chat_request(model="stream-error-content"), timeout=10)
    chunks = await collect(call)
    assert await call.code() == grpc.StatusCode.OK
    assert _text(chunks) == "Partial answer\n\n[upstream provider failed]"
