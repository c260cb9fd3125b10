"""Requests end to end: invalid ones stop at the bridge (the upstream sees nothing), valid ones reach the
upstream as the JSON body the proto promises (asserted on the mock's record of what it received)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.mock_gateway import MockGateway
from tests.helpers import call_failing, chat_request, status_details


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _value(value: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"v": value})
    return holder.fields["v"]


def _user(**fields: Any) -> pb.ChatMessage:
    return pb.ChatMessage(role="user", **fields)


HELLO = _value("hello")

# (case id, request, RPCs it is invalid on, exact field paths of the violations)
INVALID: list[tuple[str, pb.CreateChatCompletionRequest, tuple[str, ...], list[str]]] = [
    (
        "no-model",
        pb.CreateChatCompletionRequest(messages=[_user(content=HELLO)]),
        ("unary", "stream"),
        ["model"],
    ),
    ("no-messages", pb.CreateChatCompletionRequest(model="echo"), ("unary", "stream"), ["messages"]),
    (
        "empty-role",
        pb.CreateChatCompletionRequest(
            model="echo", messages=[_user(content=HELLO), pb.ChatMessage(content=HELLO)]
        ),
        ("unary", "stream"),
        ["messages[1].role"],
    ),
    (
        "content-number",
        pb.CreateChatCompletionRequest(model="echo", messages=[_user(content=_value(42))]),
        ("unary", "stream"),
        ["messages[0].content"],
    ),
    (
        "content-and-parts",
        pb.CreateChatCompletionRequest(
            model="echo",
            messages=[_user(content=HELLO, content_parts=[pb.ContentPart(type="text", text="hi")])],
        ),
        ("unary", "stream"),
        ["messages[0].content_parts"],
    ),
    (
        "stream-options-on-unary",
        chat_request(stream_options=pb.StreamOptions(include_usage=True)),
        ("unary",),
        ["stream_options"],
    ),
    (
        "extra-body-stream",
        chat_request(extra_body=_struct({"stream": True})),
        ("unary", "stream"),
        ["extra_body.stream"],
    ),
    (
        "model-too-long",
        chat_request(model="m" * 257),
        ("unary", "stream"),
        ["model"],
    ),
    (
        "task-id-too-long",
        chat_request(task_id="t" * 129),
        ("unary", "stream"),
        ["task_id"],
    ),
    (
        "content-and-content-text",
        pb.CreateChatCompletionRequest(model="echo", messages=[_user(content=HELLO, content_text="hi")]),
        ("unary", "stream"),
        ["messages[0].content_text"],
    ),
    (
        "custom-tool-without-name",
        chat_request(tools=[pb.Tool(type="custom", custom=pb.CustomToolDefinition(description="x"))]),
        ("unary", "stream"),
        ["tools[0].custom.name"],
    ),
    (
        "several-at-once",
        pb.CreateChatCompletionRequest(
            messages=[pb.ChatMessage(content=_value(True))], extra_body=_struct({"stream": False})
        ),
        ("unary", "stream"),
        ["model", "messages[0].role", "messages[0].content", "extra_body.stream"],
    ),
]


@pytest.mark.parametrize(
    ("request_", "rpcs", "fields"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
async def test_invalid_request_never_reaches_the_upstream(
    stub,
    mock_gateway: MockGateway,
    request_: pb.CreateChatCompletionRequest,
    rpcs: tuple[str, ...],
    fields: list[str],
) -> None:
    for rpc in rpcs:
        error, received = await call_failing(stub, rpc, request_, timeout=10)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc
        assert received == []
        violations = status_details(error)["BadRequest"].field_violations
        assert sorted(v.field for v in violations) == sorted(fields)
        assert all(v.description for v in violations)
        # The message names the first problem and says what to do about it.
        assert error.details().startswith("invalid request: ")
        assert violations[0].field in error.details()
        assert violations[0].description in error.details()
        if len(fields) > 1:
            assert f"(and {len(fields) - 1} more)" in error.details()
    assert mock_gateway.requests() == []


async def test_messages_the_caller_can_act_on(stub, mock_gateway: MockGateway) -> None:
    cases = {
        "model": pb.CreateChatCompletionRequest(messages=[_user(content=HELLO)]),
        "messages[0].role": pb.CreateChatCompletionRequest(
            model="echo", messages=[pb.ChatMessage(content=HELLO)]
        ),
        "stream_options": chat_request(stream_options=pb.StreamOptions()),
    }
    hints = {
        "model": "name the model",
        "messages[0].role": "use system, developer, user, assistant or tool",
        "stream_options": "StreamChatCompletion",
    }
    for field, request in cases.items():
        error, _ = await call_failing(stub, "unary", request, timeout=10)
        assert field in error.details()
        assert hints[field] in error.details(), error.details()
    assert mock_gateway.requests() == []


async def test_stream_options_are_fine_on_a_stream(stub, mock_gateway: MockGateway) -> None:
    request = chat_request(stream_options=pb.StreamOptions(include_usage=True))
    chunks = [c async for c in stub.StreamChatCompletion(request, timeout=10)]
    assert chunks[-1].HasField("usage")
    assert mock_gateway.requests()[-1]["body"]["stream_options"] == {"include_usage": True}


async def test_request_shaping_reaches_the_upstream(stub, mock_gateway: MockGateway) -> None:
    tool = pb.Tool(
        type="function",
        function=pb.FunctionDefinition(
            name="get_weather", parameters=_struct({"type": "object", "properties": {"days": {"minimum": 1}}})
        ),
    )
    parts = [
        pb.ContentPart(type="text", text="What is in this photo?"),
        pb.ContentPart(
            type="image_url",
            image_url=pb.ImageUrl(url="https://example.com/eiffel.jpg", detail="low"),
            extra=_struct({"cache_control": {"type": "ephemeral"}}),
        ),
    ]
    request = pb.CreateChatCompletionRequest(
        model="echo",
        messages=[
            pb.ChatMessage(
                role="system",
                content=_value("Be brief."),
                extra=_struct({"cache_control": {"type": "ephemeral"}}),
            ),
            pb.ChatMessage(role="user", content_parts=parts),
        ],
        tools=[tool],
        tool_choice=pb.ToolChoice(mode="required"),
        temperature=0.0,
        extra_body=_struct({"top_k": 40, "safe_prompt": True, "metadata": {"team": "search", "weight": 2.5}}),
    )
    for rpc in ("unary", "stream"):
        if rpc == "unary":
            response = await stub.CreateChatCompletion(request, timeout=10)
            assert response.choices[0].message.content == "What is in this photo?"
        else:
            chunks = [c async for c in stub.StreamChatCompletion(request, timeout=10)]
            assert "".join(c.choices[0].delta.content for c in chunks) == "What is in this photo?"

        body = mock_gateway.requests()[-1]["body"]
        assert body == {
            "model": "echo",
            "messages": [
                {"role": "system", "content": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this photo?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/eiffel.jpg", "detail": "low"},
                            "cache_control": {"type": "ephemeral"},
                        },
                    ],
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {"type": "object", "properties": {"days": {"minimum": 1}}},
                    },
                }
            ],
            "tool_choice": "required",
            "temperature": 0,
            "top_k": 40,
            "safe_prompt": True,
            "metadata": {"team": "search", "weight": 2.5},
            "stream": rpc == "stream",
            # a stream's usage is always asked for (the token metrics), and taken out of its reply
            **({"stream_options": {"include_usage": True}} if rpc == "stream" else {}),
        }
        # integral Struct numbers travel as JSON integers
        assert type(body["top_k"]) is int
        assert type(body["tools"][0]["function"]["parameters"]["properties"]["days"]["minimum"]) is int


async def test_v1_typed_fields_reach_the_upstream(stub, mock_gateway: MockGateway) -> None:
    """The typed fields of contract v1 go out under their upstream keys; the typed plain-text content
    (content_text) is sent as the `content` string, at the gateway's length limits."""
    request = pb.CreateChatCompletionRequest(
        model="echo" + "-" * 252,  # 256 characters: the gateway's limit, still valid
        task_id="t" * 128,
        messages=[pb.ChatMessage(role="user", content_text="Bonjour")],
        tools=[pb.Tool(type="custom", custom=pb.CustomToolDefinition(name="run_sql"))],
        tool_choice=pb.ToolChoice(type="custom", custom=pb.ToolChoiceCustom(name="run_sql")),
        service_tier="flex",
        metadata={"team": "search"},
        store=False,
        prompt_cache_key="k1",
        safety_identifier="u-hash",
        verbosity="low",
        prediction=pb.Prediction(type="content", content_text="Bonjour"),
        web_search_options=pb.WebSearchOptions(search_context_size="low"),
        stream_options=pb.StreamOptions(include_usage=True, include_obfuscation=False),
    )
    chunks = [c async for c in stub.StreamChatCompletion(request, timeout=10)]
    assert chunks[-1].HasField("usage")
    body = mock_gateway.requests()[-1]["body"]
    assert body == {
        "model": request.model,
        "task_id": "t" * 128,
        "messages": [{"role": "user", "content": "Bonjour"}],
        "tools": [{"type": "custom", "custom": {"name": "run_sql"}}],
        "tool_choice": {"type": "custom", "custom": {"name": "run_sql"}},
        "service_tier": "flex",
        "metadata": {"team": "search"},
        "store": False,
        "prompt_cache_key": "k1",
        "safety_identifier": "u-hash",
        "verbosity": "low",
        "prediction": {"type": "content", "content": "Bonjour"},
        "web_search_options": {"search_context_size": "low"},
        "stream_options": {"include_usage": True, "include_obfuscation": False},
        "stream": True,
    }


async def test_tool_choice_object_form_and_content_null(stub, mock_gateway: MockGateway) -> None:
    request = pb.CreateChatCompletionRequest(
        model="echo",
        messages=[
            _user(content=HELLO),
            pb.ChatMessage(
                role="assistant",
                content=struct_pb2.Value(null_value=struct_pb2.NULL_VALUE),
                tool_calls=[
                    pb.ToolCall(
                        id="call_1",
                        type="function",
                        function=pb.FunctionCall(name="get_weather", arguments='{"city":"Paris"}'),
                        extra=_struct({"extra_content": {"google": {"thought_signature": "c2ln"}}}),
                    )
                ],
            ),
            pb.ChatMessage(role="tool", tool_call_id="call_1", content=_value("18 C")),
        ],
        tool_choice=pb.ToolChoice(type="function", function=pb.ToolChoiceFunction(name="get_weather")),
    )
    await stub.CreateChatCompletion(request, timeout=10)
    body = mock_gateway.requests()[-1]["body"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                "extra_content": {"google": {"thought_signature": "c2ln"}},
            }
        ],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}
