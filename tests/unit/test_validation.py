"""Tests for bridge.chat.validation: one test per rule, checking the exact AIP-193 field paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from bridge.chat.convert import request_to_upstream
from bridge.chat.validation import validate_request
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.jsonproto import non_finite_field

SEED = Path(__file__).parents[1] / "golden" / "request_full.json"
USER = {"role": "user", "content": "hi"}


def _request(**fields: Any) -> pb.CreateChatCompletionRequest:
    """A valid request (model + one user message) with `fields` (proto3 JSON) on top."""
    return json_format.ParseDict(
        {"model": "gpt-4o", "messages": [USER], **fields}, pb.CreateChatCompletionRequest()
    )


def _paths(request: pb.CreateChatCompletionRequest, *, streaming: bool = False) -> list[str]:
    violations = validate_request(request, streaming=streaming)
    for path, description in violations:
        assert isinstance(path, str)
        assert isinstance(description, str)
        assert description.strip(), f"empty description for {path}"
    return [path for path, _ in violations]


@pytest.mark.parametrize("streaming", [False, True])
def test_minimal_valid_request_has_no_violations(streaming: bool) -> None:
    assert validate_request(_request(), streaming=streaming) == []


def test_missing_model() -> None:
    request = _request()
    request.ClearField("model")
    assert _paths(request) == ["model"]


def test_no_messages() -> None:
    assert _paths(_request(messages=[])) == ["messages"]


def test_empty_request_reports_model_and_messages() -> None:
    assert sorted(_paths(pb.CreateChatCompletionRequest())) == ["messages", "model"]


def test_empty_role() -> None:
    request = _request(messages=[USER, {"content": "no role"}, {"role": "", "content": "x"}])
    assert _paths(request) == ["messages[1].role", "messages[2].role"]


@pytest.mark.parametrize(
    "content",
    [0, 1.5, True, False, {"type": "text", "text": "an object, not an array"}, {}],
    ids=["zero", "float", "true", "false", "object", "empty_object"],
)
def test_content_of_wrong_kind(content: Any) -> None:
    request = _request(messages=[USER, {"role": "user", "content": content}])
    assert _paths(request) == ["messages[1].content"]


@pytest.mark.parametrize(
    "content",
    ["text", "", None, [], [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "u"}}]],
    ids=["string", "empty_string", "null", "empty_array", "parts"],
)
def test_content_of_right_kind(content: Any) -> None:
    assert _paths(_request(messages=[{"role": "assistant", "content": content}])) == []


def test_content_list_element_without_string_type() -> None:
    content = [
        {"type": "text", "text": "ok"},
        {"text": "no type"},
        "a bare string",
        {"type": 3},
        {"type": ""},
        {"type": None},
        [{"type": "text"}],
        {"type": "input_audio", "input_audio": {"data": "x"}},
    ]
    request = _request(messages=[{"role": "user", "content": content}])
    assert _paths(request) == [f"messages[0].content[{j}]" for j in (1, 2, 3, 4, 5, 6)]


def test_content_and_content_parts_both_set() -> None:
    request = _request(
        messages=[USER, {"role": "user", "content": "text", "content_parts": [{"type": "text", "text": "t"}]}]
    )
    assert _paths(request) == ["messages[1].content_parts"]


def test_content_null_and_content_parts_both_set() -> None:
    request = _request(messages=[{"role": "user", "content": None, "content_parts": [{"type": "text"}]}])
    assert _paths(request) == ["messages[0].content_parts"]


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ({"content": "a", "content_text": "b"}, "content_text"),
        ({"content": None, "content_text": ""}, "content_text"),
        ({"content_parts": [{"type": "text"}], "content_text": "b"}, "content_text"),
        ({"content": "a", "content_parts": [{"type": "text"}], "content_text": "b"}, "content_parts"),
    ],
    ids=["content", "content_null_and_empty_text", "content_parts", "all_three"],
)
def test_content_text_with_another_content_form(message: dict[str, Any], path: str) -> None:
    request = _request(messages=[USER, {"role": "user", **message}])
    violations = validate_request(request, streaming=False)
    assert [p for p, _ in violations] == [f"messages[1].{path}"]
    assert "content, content_parts, content_text" in violations[0][1]


@pytest.mark.parametrize("text", ["Bonjour", ""], ids=["text", "empty"])
def test_content_text_alone_is_valid(text: str) -> None:
    request = _request(messages=[{"role": "user", "content_text": text}])
    assert _paths(request) == []
    assert request_to_upstream(request, stream=False)["messages"] == [{"role": "user", "content": text}]


def test_content_parts_alone_are_valid() -> None:
    parts = [{"type": "text", "text": "t"}, {"type": "image_url", "image_url": {"url": "u"}}]
    assert _paths(_request(messages=[{"role": "user", "content_parts": parts}])) == []


def test_content_parts_without_type() -> None:
    parts = [{"type": "text", "text": "t"}, {"text": "no type"}, {"image_url": {"url": "u"}}]
    request = _request(messages=[USER, USER, {"role": "user", "content_parts": parts}])
    assert _paths(request) == ["messages[2].content_parts[1].type", "messages[2].content_parts[2].type"]


def test_tool_without_function_name() -> None:
    tools = [
        {"type": "function", "function": {"name": "ok"}},
        {"type": "function", "function": {"description": "nameless", "parameters": {"type": "object"}}},
        {"type": "function"},
    ]
    assert _paths(_request(tools=tools)) == ["tools[1].function.name", "tools[2].function.name"]


def test_function_names_follow_the_documented_rule() -> None:
    names = ["get_weather", "a-b_C9", "x" * 64, "x" * 65, "get weather", "ns.tool", "café"]
    tools = [{"type": "function", "function": {"name": name}} for name in names]
    assert _paths(_request(tools=tools)) == [f"tools[{i}].function.name" for i in (3, 4, 5, 6)]


def test_function_parameters_must_be_an_arguments_object_schema() -> None:
    schemas: list[dict[str, Any]] = [
        {},
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        {"type": ["object", "null"]},
        {"type": "string"},
        {"type": 3},
        {"properties": ["city"]},
        {"required": "city"},
        {"required": ["city", 1]},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}} for schema in schemas]
    assert _paths(_request(tools=tools)) == [
        "tools[3].function.parameters.type",
        "tools[4].function.parameters.type",
        "tools[5].function.parameters.properties",
        "tools[6].function.parameters.required",
        "tools[7].function.parameters.required",
    ]


def test_custom_tools() -> None:
    tools = [
        {"type": "custom", "custom": {"name": "grep", "format": {"type": "text"}}},
        {"type": "custom", "custom": {"description": "nameless"}},
        {"type": "custom"},
        {"custom": {"name": "untyped"}},
        {"type": "function", "custom": {"name": "mistyped"}},
        {"type": "custom", "function": {"name": "f"}, "custom": {"name": "g"}},
        {"type": "custom", "extra": {"custom": {"name": "raw"}}},
    ]
    assert _paths(_request(tools=tools)) == [
        "tools[1].custom.name",
        "tools[2].custom.name",
        "tools[3].type",
        "tools[4].type",
        "tools[5].custom",
    ]


def test_function_tool_given_whole_in_extra_is_valid() -> None:
    # `extra` wins over the typed fields: a function object there is what goes upstream.
    request = _request(tools=[{"type": "function", "extra": {"function": {"name": "f", "x": 1}}}])
    assert _paths(request) == []
    assert request_to_upstream(request, stream=False)["tools"] == [
        {"type": "function", "function": {"name": "f", "x": 1}}
    ]


@pytest.mark.parametrize(
    ("tool_choice", "paths"),
    [
        ({"type": "custom", "custom": {"name": "grep"}}, []),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}, []),
        ({"type": "function", "function": {"name": "f"}, "custom": {"name": "g"}}, ["tool_choice.custom"]),
        (
            {"type": "allowed_tools", "custom": {"name": "g"}, "allowed_tools": {"mode": "auto"}},
            ["tool_choice.allowed_tools"],
        ),
        ({"mode": "auto", "custom": {"name": "g"}}, ["tool_choice"]),
        ({"mode": "required", "allowed_tools": {}}, ["tool_choice"]),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [
                        {"type": "function", "function": {"name": "f"}},
                        {"type": "function", "function": {}},
                        {"type": "custom", "custom": {}},
                    ],
                },
            },
            [
                "tool_choice.allowed_tools.tools[1].function.name",
                "tool_choice.allowed_tools.tools[2].custom.name",
            ],
        ),
    ],
    ids=[
        "custom",
        "allowed_tools",
        "function_and_custom",
        "custom_and_allowed",
        "mode_custom",
        "mode_allowed",
        "allowed_tools_checked_like_tools",
    ],
)
def test_tool_choice_object_forms(tool_choice: dict[str, Any], paths: list[str]) -> None:
    assert _paths(_request(tool_choice=tool_choice)) == paths


@pytest.mark.parametrize(
    ("prediction", "paths"),
    [
        ({"type": "content", "content": "old text"}, []),
        ({"type": "content", "content": [{"type": "text", "text": "old"}]}, []),
        ({"type": "content", "content_text": ""}, []),
        ({"type": "content", "content": "a", "content_text": "b"}, ["prediction.content_text"]),
        ({"type": "content", "content": 7}, ["prediction.content"]),
        ({"type": "content", "content": [{"text": "no type"}]}, ["prediction.content[0]"]),
    ],
    ids=["string", "parts", "content_text", "both", "number", "part_without_type"],
)
def test_prediction_content_forms(prediction: dict[str, Any], paths: list[str]) -> None:
    assert _paths(_request(prediction=prediction)) == paths


@pytest.mark.parametrize(("field", "limit"), [("model", 256), ("task_id", 128)], ids=["model", "task_id"])
def test_gateway_length_limits(field: str, limit: int) -> None:
    # The gateway documents these limits in characters: a multi-byte character counts once.
    assert _paths(_request(**{field: "é" * limit})) == []
    violations = validate_request(_request(**{field: "é" * (limit + 1)}), streaming=False)
    assert violations == [
        (field, f"must be at most {limit} characters (the gateway's limit), not {limit + 1}")
    ]


@pytest.mark.parametrize(
    "tool_choice",
    [
        {"mode": "auto", "type": "function", "function": {"name": "f"}},
        {"mode": "required", "type": "function"},
        {"mode": "none", "function": {"name": "f"}},
        {"mode": "auto", "function": {}},
    ],
    ids=["mode_type_function", "mode_type", "mode_function", "mode_empty_function"],
)
def test_tool_choice_both_forms(tool_choice: dict[str, Any]) -> None:
    assert _paths(_request(tool_choice=tool_choice)) == ["tool_choice"]


@pytest.mark.parametrize(
    "tool_choice",
    [{}, {"function": {"name": "f"}}],
    ids=["empty", "function_only"],
)
def test_tool_choice_neither_form(tool_choice: dict[str, Any]) -> None:
    assert _paths(_request(tool_choice=tool_choice)) == ["tool_choice"]


@pytest.mark.parametrize(
    "tool_choice",
    [
        {"mode": "auto"},
        {"mode": "none"},
        {"mode": "required"},
        {"type": "function", "function": {"name": "f"}},
    ],
    ids=["auto", "none", "required", "object"],
)
def test_tool_choice_one_form_is_valid(tool_choice: dict[str, Any]) -> None:
    assert _paths(_request(tool_choice=tool_choice)) == []


@pytest.mark.parametrize("stream_options", [{"include_usage": True}, {"include_usage": False}, {}])
def test_stream_options_only_on_streaming(stream_options: dict[str, Any]) -> None:
    request = _request(stream_options=stream_options)
    assert _paths(request, streaming=False) == ["stream_options"]
    assert _paths(request, streaming=True) == []


@pytest.mark.parametrize("streaming", [False, True])
def test_extra_body_stream_is_reserved(streaming: bool) -> None:
    request = _request(extra_body={"stream": streaming, "top_k": 3})
    assert _paths(request, streaming=streaming) == ["extra_body.stream"]


def test_extra_body_key_duplicating_a_set_field() -> None:
    request = _request(temperature=0.2, seed=0, extra_body={"temperature": 0.5, "seed": 1, "top_k": 3})
    assert _paths(request) == ["extra_body.seed", "extra_body.temperature"]


def test_extra_body_duplicating_always_set_fields() -> None:
    request = _request(extra_body={"model": "other", "messages": []})
    assert _paths(request) == ["extra_body.messages", "extra_body.model"]


def test_extra_body_key_of_an_unset_field_is_allowed() -> None:
    # Unset fields are not sent, so extra_body may supply them (e.g. a value the proto cannot express).
    request = _request(extra_body={"temperature": 0.5, "stop": "END", "tool_choice": {"type": "custom"}})
    assert _paths(request) == []


def test_extra_body_keys_are_matched_exactly() -> None:
    # camelCase spellings are not field names of the upstream body: they do not duplicate anything.
    request = _request(max_tokens=5, extra_body={"maxTokens": 7})
    assert _paths(request) == []


def test_violations_are_all_reported_together() -> None:
    request = json_format.ParseDict(
        {
            "messages": [{"content": 5}, {"role": "user", "content": "x", "content_parts": [{"text": "t"}]}],
            "tools": [{"type": "function"}],
            "tool_choice": {},
            "stream_options": {"include_usage": True},
            "extra_body": {"stream": True, "tools": []},
        },
        pb.CreateChatCompletionRequest(),
    )
    assert sorted(_paths(request)) == sorted(
        [
            "model",
            "messages[0].role",
            "messages[0].content",
            "messages[1].content_parts",
            "messages[1].content_parts[0].type",
            "tools[0].function.name",
            "tool_choice",
            "stream_options",
            "extra_body.stream",
            "extra_body.tools",
        ]
    )


def test_full_seed_request_valid_when_streaming() -> None:
    request = json_format.Parse(SEED.read_text(encoding="utf-8"), pb.CreateChatCompletionRequest())
    assert validate_request(request, streaming=True) == []


def test_full_seed_request_only_stream_options_when_unary() -> None:
    request = json_format.Parse(SEED.read_text(encoding="utf-8"), pb.CreateChatCompletionRequest())
    assert _paths(request, streaming=False) == ["stream_options"]
    request.ClearField("stream_options")
    assert validate_request(request, streaming=False) == []


# --- per-object extra -------------------------------------------------------------------------------------


def test_nested_extra_of_unset_fields_is_valid() -> None:
    request = _request(
        messages=[
            {
                "role": "user",
                "content": "x",
                "extra": {"cache_control": {"type": "ephemeral"}, "name": "bob"},
            },
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f"}, "extra": {"type": "function"}}],
            },
            {
                "role": "user",
                "content_parts": [{"type": "text", "extra": {"text": "t", "cache_control": {}}}],
            },
        ],
        tools=[{"function": {"name": "f"}, "extra": {"type": "function"}}],
        tool_choice={"type": "allowed_tools", "extra": {"allowed_tools": {"mode": "auto"}}},
    )
    assert _paths(request, streaming=True) == []


def _last_message(body: dict[str, Any]) -> Any:
    return body["messages"][-1]


_CALL = {"id": "b", "type": "function", "function": {"name": "f"}, "extra": {"function": {}}}
_PART = {"type": "text", "text": "t", "extra": {"text": "u"}}


@pytest.mark.parametrize(
    ("fields", "sent_part", "expected"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "name": "a", "extra": {"role": "system", "name": "b"}}
                ]
            },
            _last_message,
            {"role": "system", "content": "x", "name": "b"},
        ),
        (
            {"messages": [{"role": "user", "content_parts": [{"type": "text"}], "extra": {"content": "x"}}]},
            _last_message,
            {"role": "user", "content": "x"},
        ),
        (
            {"messages": [{"role": "user", "content_parts": [_PART]}]},
            lambda body: _last_message(body)["content"][0],
            {"type": "text", "text": "u"},
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": [_CALL]}]},
            lambda body: _last_message(body)["tool_calls"][0],
            {"id": "b", "type": "function", "function": {}},
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f"}, "extra": {"function": {"name": "g"}}}
                ]
            },
            lambda body: body["tools"][0],
            {"type": "function", "function": {"name": "g"}},
        ),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}, "extra": {"type": "x"}}},
            lambda body: body["tool_choice"],
            {"type": "x", "function": {"name": "f"}},
        ),
    ],
    ids=["message", "content_vs_content_parts", "content_part", "tool_call", "tool", "tool_choice"],
)
def test_nested_extra_may_repeat_a_set_field_and_wins(
    fields: dict[str, Any], sent_part: Any, expected: Any
) -> None:
    # A received object that was only partly understood keeps its original in `extra`; replaying it must
    # work, so `extra` overrides the typed fields instead of being rejected.
    request = _request(**fields)
    assert _paths(request) == []
    assert sent_part(request_to_upstream(request, stream=False)) == expected


def test_tools_of_other_types_need_no_function() -> None:
    request = _request(tools=[{"type": "custom", "extra": {"custom": {"name": "grep"}}}])
    assert _paths(request) == []
    assert request_to_upstream(request, stream=False)["tools"] == [
        {"type": "custom", "custom": {"name": "grep"}}
    ]


def test_stream_options_in_extra_body_only_when_streaming() -> None:
    request = _request(extra_body={"stream_options": {"include_usage": True}})
    assert _paths(request, streaming=False) == ["extra_body.stream_options"]
    assert _paths(request, streaming=True) == []


def test_tool_choice_mode_with_extra_is_both_forms() -> None:
    # The mode form is sent as a bare string: an extra would have no object to go into.
    request = _request(tool_choice={"mode": "auto", "extra": {"allowed_tools": {}}})
    assert _paths(request) == ["tool_choice"]


def test_nested_extra_key_named_extra_is_not_a_duplicate() -> None:
    request = _request(
        messages=[
            USER,
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f"}, "extra": {"extra": 1}}
                ],
            },
        ]
    )
    assert _paths(request) == []


def test_extra_body_key_named_extra_body_collides_with_nothing() -> None:
    assert _paths(_request(extra_body={"extra_body": {"x": 1}})) == []


def test_non_finite_numbers_are_rejected_where_they_sit() -> None:
    request = _request(tools=[{"type": "function", "function": {"name": "f", "parameters": {"max": 1}}}])
    request.temperature = float("nan")
    request.logit_bias["50256"] = float("inf")
    request.tools[0].function.parameters["max"] = float("-inf")
    request.messages[0].extra["weight"] = float("nan")
    expected = ["logit_bias[50256]", "messages[0].extra", "temperature", "tools[0].function.parameters"]
    assert sorted(_paths(request)) == expected


def test_finite_numbers_everywhere_pass() -> None:
    request = _request(temperature=0.0, logit_bias={"1": -100}, analytics_context={"n": [1, 2.5, {"x": -3}]})
    assert _paths(request) == []


def test_non_finite_numbers_come_in_the_generic_walk_s_order_whichever_field_holds_them() -> None:
    # The messages' numbers are checked in each message's own walk: the violations must be those, and in
    # the order, of the generic walk over every set field (jsonproto.non_finite_field), after the others.
    request = _request(
        messages=[USER, USER, {"role": "user", "content": "x", "extra": {"w": 1}}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"max": 1}}}],
        analytics_context={"n": 1},
    )
    request.temperature = float("nan")
    request.messages[0].extra["w"] = float("inf")
    request.messages[1].content.number_value = float("-inf")
    request.messages[2].extra["w"] = float("nan")
    request.tools[0].function.parameters["max"] = float("inf")
    request.analytics_context["n"] = float("nan")
    walked: list[tuple[str, str]] = []
    for field, value in request.ListFields():
        non_finite_field(walked, "", field, value)
    assert len(walked) == 6
    violations = validate_request(request, streaming=False)
    assert violations[-len(walked) :] == walked
    assert ("messages[1].content", "must be a string, an array of content parts, or null") in violations
