"""Tests for bridge.chat.convert: proto <-> upstream JSON for chat completions.

Layout:
- the seed request (tests/golden/request_full.json) round-trips unchanged;
- golden vectors under tests/golden/{request,response,chunk}/ (hand-written expectations), plus a check that
  together they set every field of every message reachable from the request / response / chunk types;
- presence checks a dict cannot show (optional fields, null vs "");
- direct tests of the documented rewrites and of the Struct/double number rule;
- hypothesis properties: (a) random valid request -> upstream JSON text -> proto3 JSON parse gives the
  original back (after undoing the documented rewrites); (b) random, partly ill-typed response/chunk JSON
  never raises and every non-null key is recoverable, typed or from the nearest `extra`; (c) a random
  response/chunk proto without `extra` -> message_to_json -> from_upstream gives the same proto; (d) with
  `extra` too, from_upstream(message_to_json(m)) == m for any m that from_upstream produced.
- integers beyond the double range and lone surrogates from upstream are kept (as text / U+FFFD).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, json_format, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.chat import convert as convert_module
from bridge.chat.convert import (
    _plain_request,
    _text_chunk,
    _text_response,
    chunk_from_upstream,
    generic_chunk_from_upstream,
    generic_request_to_upstream,
    generic_response_from_upstream,
    message_to_json,
    request_to_upstream,
    response_from_upstream,
    struct_to_json,
    value_to_json,
)
from bridge.chat.validation import validate_request
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb

GOLDEN = Path(__file__).parents[1] / "golden"
SEED = GOLDEN / "request_full.json"
STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
VALUE = struct_pb2.Value.DESCRIPTOR.full_name
REQUEST_FIELDS = frozenset(pb.CreateChatCompletionRequest.DESCRIPTOR.fields_by_name)
# Second upstream keys of some response fields (the contract's reasoning_content comment), by message.
ALIASES = {
    "ChatCompletionMessage": {"reasoning": "reasoning_content"},
    "ChatCompletionDelta": {"reasoning": "reasoning_content"},
}

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _typed(x: Any) -> Any:
    """`x` with every scalar tagged by its JSON type, so == tells 1 from 1.0 and from True."""
    if isinstance(x, dict):
        return {k: _typed(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_typed(v) for v in x]
    return (type(x).__name__, x)


def _to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _vectors(kind: str) -> list[Any]:
    paths = sorted((GOLDEN / kind).glob("*.json"))
    assert paths, f"no golden vectors under {GOLDEN / kind}"
    return [pytest.param(_load(p), id=p.stem) for p in paths]


def _parse_request(obj: Mapping[str, Any]) -> pb.CreateChatCompletionRequest:
    # Through JSON text, as a grpc-gateway / grpcurl client would send it, and without ignore_unknown_fields.
    return json_format.Parse(json.dumps(obj), pb.CreateChatCompletionRequest())


# --- seed request ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_seed_request_round_trips_unchanged(stream: bool) -> None:
    text = SEED.read_text(encoding="utf-8")
    request = json_format.Parse(text, pb.CreateChatCompletionRequest())

    body = request_to_upstream(request, stream=stream)

    expected = json.loads(text)
    assert "stream" not in expected
    expected["stream"] = stream
    assert _typed(body) == _typed(expected)
    assert body["stream"] is stream
    # Spot checks of the int-vs-float rule on the values that would betray a double.
    assert type(body["seed"]) is int
    assert type(body["max_tokens"]) is int
    assert type(body["n"]) is int
    params = body["tools"][0]["function"]["parameters"]
    assert type(params["properties"]["days"]["minimum"]) is int
    assert type(params["properties"]["days"]["maximum"]) is int
    assert type(body["analytics_context"]["experiment"]["cohort"]) is int
    assert type(body["logit_bias"]["50256"]) is int
    assert type(body["logit_bias"]["1734"]) is float
    assert type(body["temperature"]) is float
    assert body["messages"][3]["content"] is None
    assert body["parallel_tool_calls"] is False
    # And the body is strict JSON (no NaN/Infinity) that serialises back to the same object.
    assert json.loads(json.dumps(body, allow_nan=False)) == expected


def test_seed_request_is_valid_for_streaming_only() -> None:
    request = json_format.Parse(SEED.read_text(encoding="utf-8"), pb.CreateChatCompletionRequest())
    assert validate_request(request, streaming=True) == []
    assert [path for path, _ in validate_request(request, streaming=False)] == ["stream_options"]


# --- golden request vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("request"))
def test_request_golden(vector: dict[str, Any]) -> None:
    request = _parse_request(vector["request"])
    before = request.SerializeToString(deterministic=True)

    body = request_to_upstream(request, stream=vector["stream"])

    assert _typed(body) == _typed(vector["upstream"])
    assert json.loads(json.dumps(body, allow_nan=False)) == vector["upstream"]
    assert request.SerializeToString(deterministic=True) == before, "request_to_upstream mutated its input"
    # Every vector is a request the bridge would send: it passes validation for its RPC.
    assert validate_request(request, streaming=vector["stream"]) == []


@pytest.mark.parametrize("vector", _vectors("request"))
def test_request_golden_stream_flag_changes_only_stream(vector: dict[str, Any]) -> None:
    request = _parse_request(vector["request"])
    unary = request_to_upstream(request, stream=False)
    streaming = request_to_upstream(request, stream=True)
    assert unary.pop("stream") is False
    assert streaming.pop("stream") is True
    assert _typed(unary) == _typed(streaming)


# --- golden response / chunk vectors ---------------------------------------------------------------------


def _check_inbound(
    convert: Callable[[Mapping[str, Any]], Message], cls: type[Message], vector: dict[str, Any]
) -> Message:
    upstream = vector["upstream"]
    pristine = copy.deepcopy(upstream)
    result = convert(upstream)
    assert upstream == pristine, "conversion mutated its input"
    assert _to_dict(result) == vector["proto"]
    # Proto equality as well: it also sees presence (optional fields, empty sub-messages) and types.
    assert result == json_format.ParseDict(vector["proto"], cls())
    assert _recoverable(result, upstream), "an upstream key is neither in a typed field nor in extra"
    _assert_nothing_invented(result, upstream)
    # message_to_json merges every extra back into its object: converting again gives the same proto.
    assert convert(message_to_json(result)) == result
    return result


@pytest.mark.parametrize("vector", _vectors("response"))
def test_response_golden(vector: dict[str, Any]) -> None:
    _check_inbound(response_from_upstream, pb.CreateChatCompletionResponse, vector)


@pytest.mark.parametrize("vector", _vectors("chunk"))
def test_chunk_golden(vector: dict[str, Any]) -> None:
    _check_inbound(chunk_from_upstream, pb.StreamChatCompletionResponse, vector)


# --- the goldens cover every field ------------------------------------------------------------------------


def _reachable_fields(root: Descriptor) -> set[tuple[str, str]]:
    """(message, field) for every field of every message reachable from `root`, Struct internals aside."""
    seen: set[str] = set()
    out: set[tuple[str, str]] = set()
    todo = [root]
    while todo:
        desc = todo.pop()
        if desc.full_name in seen or desc.full_name in (STRUCT, VALUE):
            continue
        seen.add(desc.full_name)
        for field in desc.fields:
            out.add((desc.name, field.name))
            if field.message_type is not None and not field.message_type.GetOptions().map_entry:
                todo.append(field.message_type)
    return out


def _set_fields(message: Message) -> Iterator[tuple[str, str]]:
    for field, value in message.ListFields():
        yield message.DESCRIPTOR.name, field.name
        if field.message_type is None or field.message_type.full_name in (STRUCT, VALUE):
            continue
        if field.message_type.GetOptions().map_entry:
            continue
        for item in value if field.is_repeated else [value]:
            yield from _set_fields(item)


def test_request_goldens_set_every_request_field() -> None:
    covered: set[tuple[str, str]] = set()
    for param in _vectors("request"):
        covered |= set(_set_fields(_parse_request(param.values[0]["request"])))
    missing = _reachable_fields(pb.CreateChatCompletionRequest.DESCRIPTOR) - covered
    assert not missing, f"no request golden vector sets {sorted(missing)}"


@pytest.mark.parametrize(
    ("kind", "convert", "cls"),
    [
        ("response", response_from_upstream, pb.CreateChatCompletionResponse),
        ("chunk", chunk_from_upstream, pb.StreamChatCompletionResponse),
    ],
)
def test_inbound_goldens_set_every_field(
    kind: str, convert: Callable[[Mapping[str, Any]], Message], cls: type[Message]
) -> None:
    covered: set[tuple[str, str]] = set()
    for param in _vectors(kind):
        covered |= set(_set_fields(convert(param.values[0]["upstream"])))
    missing = _reachable_fields(cls.DESCRIPTOR) - covered
    assert not missing, f"no {kind} golden vector sets {sorted(missing)}"


# --- presence that a dict does not show ------------------------------------------------------------------


def test_response_content_null_is_unset_not_the_text_none() -> None:
    response = response_from_upstream(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None}}]}
    )
    message = response.choices[0].message
    assert not message.HasField("content")
    assert not message.HasField("refusal")
    assert message.content == ""
    assert "None" not in str(response)
    assert not message.HasField("extra")


def test_response_content_empty_string_is_set() -> None:
    message = response_from_upstream({"choices": [{"message": {"content": ""}}]}).choices[0].message
    assert message.HasField("content")
    assert message.content == ""


def test_chunk_delta_content_empty_string_is_set() -> None:
    chunk = chunk_from_upstream({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    delta = chunk.choices[0].delta
    assert delta.HasField("content")
    assert delta.content == ""
    assert delta.HasField("role")
    assert not delta.HasField("refusal")
    assert not delta.HasField("reasoning_content")


def test_chunk_delta_content_null_is_unset() -> None:
    delta = chunk_from_upstream({"choices": [{"delta": {"content": None}}]}).choices[0].delta
    assert not delta.HasField("content")
    assert chunk_from_upstream({"choices": [{"delta": {}}]}).choices[0].HasField("delta")


def test_chunk_finish_reason_null_is_unset() -> None:
    choice = chunk_from_upstream({"choices": [{"index": 0, "delta": {}, "finish_reason": None}]}).choices[0]
    assert not choice.HasField("finish_reason")
    assert not choice.HasField("extra")
    stop = chunk_from_upstream({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).choices[0]
    assert stop.HasField("finish_reason")


def test_chunk_tool_call_fragment_presence() -> None:
    first = chunk_from_upstream(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": ""},
                            }
                        ]
                    }
                }
            ]
        }
    )
    call = first.choices[0].delta.tool_calls[0]
    assert call.HasField("id")
    assert call.HasField("type")
    assert call.function.HasField("name")
    assert call.function.HasField("arguments")
    assert call.function.arguments == ""
    later = chunk_from_upstream(
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]}
    )
    call = later.choices[0].delta.tool_calls[0]
    assert not call.HasField("id")
    assert not call.HasField("type")
    assert not call.function.HasField("name")
    assert call.function.arguments == "{"


def test_usage_null_and_optional_counts_presence() -> None:
    chunk = chunk_from_upstream({"choices": [], "usage": None, "system_fingerprint": None})
    assert not chunk.HasField("usage")
    assert not chunk.HasField("system_fingerprint")
    usage = response_from_upstream(
        {"usage": {"cost": 0, "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": None}}}
    ).usage
    assert usage.HasField("cost")
    assert not usage.HasField("duration_ms")
    assert usage.prompt_tokens_details.HasField("cached_tokens")
    assert not usage.prompt_tokens_details.HasField("audio_tokens")
    assert not usage.HasField("extra")


def test_empty_usage_object_is_present() -> None:
    assert chunk_from_upstream({"usage": {}}).HasField("usage")
    assert not chunk_from_upstream({}).HasField("usage")


# --- outbound rules, directly ----------------------------------------------------------------------------


def _request(**fields: Any) -> pb.CreateChatCompletionRequest:
    return json_format.ParseDict(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields},
        pb.CreateChatCompletionRequest(),
    )


def test_unset_fields_are_not_sent() -> None:
    body = request_to_upstream(pb.CreateChatCompletionRequest(model="m"), stream=False)
    assert body == {"model": "m", "stream": False}


def test_optional_zero_values_are_sent() -> None:
    request = pb.CreateChatCompletionRequest(
        temperature=0.0, max_tokens=0, seed=0, n=0, logprobs=False, parallel_tool_calls=False, top_logprobs=0
    )
    body = request_to_upstream(request, stream=True)
    assert _typed(body) == _typed(
        {
            "temperature": 0,
            "max_tokens": 0,
            "seed": 0,
            "n": 0,
            "logprobs": False,
            "top_logprobs": 0,
            "parallel_tool_calls": False,
            "stream": True,
        }
    )


def test_content_parts_sent_as_content_and_never_under_their_own_key() -> None:
    request = pb.CreateChatCompletionRequest(model="m")
    message = request.messages.add(role="user")
    message.content_parts.add(type="text", text="look")
    message.content_parts.add(type="image_url", image_url=pb.ImageUrl(url="https://x/y.png"))
    body = request_to_upstream(request, stream=False)
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        }
    ]


def test_content_null_is_sent_as_json_null() -> None:
    request = pb.CreateChatCompletionRequest(model="m")
    message = request.messages.add(role="assistant")
    message.content.null_value = struct_pb2.NULL_VALUE
    body = request_to_upstream(request, stream=False)
    assert body["messages"] == [{"role": "assistant", "content": None}]
    assert json.dumps(body["messages"][0]) == '{"role": "assistant", "content": null}'


@pytest.mark.parametrize("mode", ["auto", "none", "required"])
def test_tool_choice_mode_is_sent_as_bare_string(mode: str) -> None:
    body = request_to_upstream(
        pb.CreateChatCompletionRequest(tool_choice=pb.ToolChoice(mode=mode)), stream=False
    )
    assert body["tool_choice"] == mode


def test_tool_choice_object_form_is_sent_as_object() -> None:
    choice = pb.ToolChoice(type="function", function=pb.ToolChoiceFunction(name="f"))
    body = request_to_upstream(pb.CreateChatCompletionRequest(tool_choice=choice), stream=False)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_extra_body_is_merged_and_never_sent_under_its_name() -> None:
    request = _request(extra_body={"top_k": 5, "nested": {"a": [1, 1.5, {"b": None}]}})
    body = request_to_upstream(request, stream=False)
    assert "extra_body" not in body
    assert _typed(body["top_k"]) == _typed(5)
    assert _typed(body["nested"]) == _typed({"a": [1, 1.5, {"b": None}]})


def test_extra_body_cannot_override_the_rpc_stream_flag() -> None:
    # Validation rejects extra_body.stream; even unvalidated, the RPC's decision is what is sent.
    request = _request(extra_body={"stream": True})
    assert request_to_upstream(request, stream=False)["stream"] is False
    request = _request(extra_body={"stream": False})
    assert request_to_upstream(request, stream=True)["stream"] is True


def test_request_to_upstream_returns_a_fresh_body() -> None:
    request = _request(analytics_context={"a": {"b": 1}}, extra_body={"x": [1]})
    first = request_to_upstream(request, stream=False)
    first["analytics_context"]["a"]["b"] = 99
    first["x"].append(2)
    second = request_to_upstream(request, stream=False)
    assert second["analytics_context"] == {"a": {"b": 1}}
    assert second["x"] == [1]


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1.0, 1),
        (0.0, 0),
        (-3.0, -3),
        (2.5, 2.5),
        (-0.25, -0.25),
        (1e-300, 1e-300),
        (9007199254740992.0, 9007199254740992),  # 2**53: still exact, sent as an int
        (-9007199254740992.0, -9007199254740992),
        (9007199254740994.0, 9007199254740994.0),  # above 2**53: stays a float
        (1e16, 1e16),
        (1.7976931348623157e308, 1.7976931348623157e308),
        (math.inf, math.inf),
    ],
)
def test_struct_and_double_numbers_integral_as_int(number: float, expected: float) -> None:
    value = struct_pb2.Value(number_value=number)
    assert _typed(value_to_json(value)) == _typed(expected)
    struct = struct_pb2.Struct()
    struct.update({"k": number})
    assert _typed(struct_to_json(struct)) == _typed({"k": expected})
    body = request_to_upstream(pb.CreateChatCompletionRequest(temperature=number), stream=False)
    assert _typed(body["temperature"]) == _typed(expected)
    bias = request_to_upstream(pb.CreateChatCompletionRequest(logit_bias={"1": number}), stream=False)
    assert _typed(bias["logit_bias"]) == _typed({"1": expected})


def test_value_to_json_every_kind() -> None:
    assert value_to_json(struct_pb2.Value()) is None  # no kind set
    assert value_to_json(struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)) is None
    assert value_to_json(struct_pb2.Value(bool_value=False)) is False
    assert value_to_json(struct_pb2.Value(string_value="")) == ""
    nested = struct_pb2.Value()
    nested.list_value.extend([1.0, "a", True, None, {"x": 2.5}, []])
    assert _typed(value_to_json(nested)) == _typed([1, "a", True, None, {"x": 2.5}, []])
    empty = struct_pb2.Value()
    empty.struct_value.SetInParent()
    assert value_to_json(empty) == {}


def test_message_to_json_uses_proto_field_names_and_set_fields_only() -> None:
    usage = pb.Usage(prompt_tokens=3, cost=0.5, duration_ms=12.0)
    usage.prompt_tokens_details.cached_tokens = 0
    assert _typed(message_to_json(usage)) == _typed(
        {"prompt_tokens": 3, "cost": 0.5, "duration_ms": 12, "prompt_tokens_details": {"cached_tokens": 0}}
    )
    assert message_to_json(pb.ChatCompletionDelta()) == {}


# --- inbound rules, directly -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "upstream",
    [
        {"created": 10**400},
        {"choices": [{"index": 10**400}]},
        {"choices": [{"logprobs": {"content": [{"token": "a", "logprob": -(10**400)}]}}]},
        {"x_unknown": 10**400},
        {"usage": {"carbon": {"gco2e": 10**400}}},
    ],
    ids=["int64_field", "int32_field", "double_field", "unknown_key", "struct_field"],
)
def test_integer_beyond_double_range_is_kept_as_text(upstream: dict[str, Any]) -> None:
    # Same input as json.loads('{"created": 1000...000}') produces; no proto number holds it.
    assert json.loads(json.dumps(upstream)) == upstream
    for convert in (chunk_from_upstream, response_from_upstream):
        dumped = json.dumps(json_format.MessageToDict(convert(upstream), preserving_proto_field_name=True))
        assert str(10**400) in dumped  # in `extra`, as its decimal string: nothing lost


@pytest.mark.parametrize(
    "text",
    [
        '{"choices": [{"index": 0, "delta": {"content": "\\ud83d"}}]}',
        '{"id": "a\\udc00b"}',
        '{"x_unknown": "\\ud800"}',
        '{"usage": {"carbon": {"note": "\\ud83d"}}}',
    ],
    ids=["typed_string", "lone_low_surrogate", "unknown_key", "struct_field"],
)
def test_lone_surrogate_from_upstream_becomes_replacement_character(text: str) -> None:
    obj = json.loads(text)  # what the SSE layer hands over
    for convert in (chunk_from_upstream, response_from_upstream):
        dumped = json.dumps(json_format.MessageToDict(convert(obj), preserving_proto_field_name=True))
        assert "\\ufffd" in dumped  # U+FFFD where the lone surrogate was


def test_int_fields_accept_integral_floats_and_reject_others() -> None:
    response = response_from_upstream(
        {"created": 1.7e9, "choices": [{"index": 2.0}, {"index": 0.5}, {"index": True}, {"index": "1"}]}
    )
    assert response.created == 1_700_000_000
    assert response.choices[0].index == 2
    assert [c.extra["index"] for c in response.choices[1:]] == [0.5, True, "1"]
    assert [c.index for c in response.choices[1:]] == [0, 0, 0]


def test_double_fields_accept_ints_but_not_bools_or_strings() -> None:
    usage = response_from_upstream({"usage": {"cost": 2, "duration_ms": False}}).usage
    assert usage.cost == 2.0
    assert not usage.HasField("duration_ms")
    assert usage.extra["duration_ms"] is False


def test_upstream_key_named_extra_goes_to_extra_extra() -> None:
    response = response_from_upstream({"extra": {"prompt_filter_results": []}, "id": "x"})
    assert set(response.extra.fields) == {"extra"}
    assert struct_to_json(response.extra) == {"extra": {"prompt_filter_results": []}}
    assert response.id == "x"


def test_unknown_nulls_dropped_known_nulls_unset() -> None:
    response = response_from_upstream({"audio": None, "id": None, "choices": [{"message": None, "x": None}]})
    assert not response.HasField("extra")
    assert response.id == ""
    assert not response.choices[0].HasField("message")
    assert not response.choices[0].HasField("extra")


def test_token_details_keep_unknown_keys_in_their_own_extra() -> None:
    raw = {"cached_tokens": 4, "image_tokens": 2, "video_tokens": 3}
    usage = response_from_upstream({"usage": {"prompt_tokens_details": raw}}).usage
    details = usage.prompt_tokens_details
    assert (details.cached_tokens, details.image_tokens) == (4, 2)
    assert struct_to_json(details.extra) == {"video_tokens": 3}
    assert not usage.HasField("extra")  # nothing duplicated one level up


def test_litellm_float_token_counts_are_typed_not_extra() -> None:
    # LiteLLM reports every breakdown count as a JSON float; integral ones are integers to the contract.
    usage = response_from_upstream(
        json.loads(
            '{"usage": {"prompt_tokens": 9.0, "prompt_tokens_details": {"cached_tokens": 0.0, '
            '"text_tokens": 9.0, "audio_tokens": 0.0, "image_tokens": 0.0, "cache_write_tokens": 0.0}, '
            '"completion_tokens_details": {"reasoning_tokens": 0.0, "text_tokens": 3.0, '
            '"audio_tokens": 0.5}}}'
        )
    ).usage
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    assert usage.prompt_tokens == 9
    assert (prompt.cached_tokens, prompt.text_tokens, prompt.image_tokens) == (0, 9, 0)
    assert prompt.HasField("cached_tokens")
    assert prompt.HasField("cache_write_tokens")
    assert not prompt.HasField("extra")
    assert not usage.HasField("extra")
    assert (completion.reasoning_tokens, completion.text_tokens) == (0, 3)
    # A fractional count is no token count: kept as sent, beside the typed ones.
    assert not completion.HasField("audio_tokens")
    assert struct_to_json(completion.extra) == {"audio_tokens": 0.5}


def test_unknown_keys_stay_at_their_own_level() -> None:
    # Every object message has its own extra: nothing bubbles up to the choice.
    logprobs = {
        "content": [{"token": "a", "logprob": -1, "top_logprobs": [{"token": "b", "logprob": -2, "id": 7}]}],
        "x": 1,
    }
    choice = chunk_from_upstream({"choices": [{"index": 0, "logprobs": logprobs}]}).choices[0]
    assert not choice.HasField("extra")
    assert struct_to_json(choice.logprobs.extra) == {"x": 1}
    assert struct_to_json(choice.logprobs.content[0].top_logprobs[0].extra) == {"id": 7}
    assert choice.logprobs.content[0].top_logprobs[0].token == "b"


def test_mistyped_known_key_is_not_partially_typed_for_scalars() -> None:
    token = response_from_upstream({"choices": [{"logprobs": {"content": [{"bytes": [1, 2, "x"]}]}}]})
    entry = token.choices[0].logprobs.content[0]
    assert list(entry.bytes) == []
    assert struct_to_json(entry.extra) == {"bytes": [1, 2, "x"]}


def test_array_with_an_element_that_is_not_an_object_is_kept_whole_beside_it() -> None:
    calls = [{"id": "c1", "type": "custom", "custom": {"name": "grep", "input": "x"}}, 7]
    message = response_from_upstream({"choices": [{"message": {"tool_calls": calls}}]}).choices[0].message
    assert message.tool_calls[0].custom.name == "grep"
    assert struct_to_json(message.extra) == {"tool_calls": calls}


def test_every_object_message_has_extra() -> None:
    """The v1 rule (docs/proto-design.md section 7): each message that is a JSON object has `extra` (field
    100, a Struct), except the request's top level, whose escape hatch is `extra_body`."""
    roots = (pb.CreateChatCompletionRequest, pb.CreateChatCompletionResponse, pb.StreamChatCompletionResponse)
    seen: set[str] = set()
    todo = [root.DESCRIPTOR for root in roots]
    while todo:
        desc = todo.pop()
        if desc.full_name in seen or desc.full_name in (STRUCT, VALUE) or desc.GetOptions().map_entry:
            continue
        seen.add(desc.full_name)
        todo += [f.message_type for f in desc.fields if f.message_type is not None]
        name = "extra_body" if desc is pb.CreateChatCompletionRequest.DESCRIPTOR else "extra"
        field = desc.fields_by_name.get(name)
        assert field is not None, f"{desc.name} has no {name}"
        assert (field.number, field.message_type.full_name) == (100, STRUCT), desc.name
    assert len(seen) > 30


def test_reasoning_key_is_read_into_reasoning_content() -> None:
    message = response_from_upstream({"choices": [{"message": {"reasoning": "think"}}]}).choices[0].message
    assert message.reasoning_content == "think"
    assert not message.HasField("extra")
    delta = chunk_from_upstream({"choices": [{"delta": {"reasoning": ""}}]}).choices[0].delta
    assert delta.HasField("reasoning_content")
    assert delta.reasoning_content == ""


@pytest.mark.parametrize("order", ["reasoning_first", "reasoning_content_first"])
def test_reasoning_under_both_keys(order: str) -> None:
    def delta(obj: dict[str, Any]) -> pb.ChatCompletionDelta:
        items = list(obj.items())
        if order == "reasoning_content_first":
            items.reverse()
        return chunk_from_upstream({"choices": [{"delta": dict(items)}]}).choices[0].delta

    same = delta({"reasoning": "hmm", "reasoning_content": "hmm"})
    assert same.reasoning_content == "hmm"
    assert not same.HasField("extra")  # the same text is kept once
    different = delta({"reasoning": "b", "reasoning_content": "a"})
    assert different.reasoning_content == "a"
    assert struct_to_json(different.extra) == {"reasoning": "b"}
    mistyped = delta({"reasoning": 1, "reasoning_content": "a"})
    assert mistyped.reasoning_content == "a"
    assert struct_to_json(mistyped.extra) == {"reasoning": 1}
    alone_mistyped = delta({"reasoning": ["a"]})
    assert not alone_mistyped.HasField("reasoning_content")
    assert struct_to_json(alone_mistyped.extra) == {"reasoning": ["a"]}


# --- property (a): request -> upstream JSON text -> proto3 JSON parse ------------------------------------

_SPECIAL_CHARS = [
    "\u2028",
    "\u2029",
    "\u0085",
    "\x00",
    "\x7f",
    "😀",
    "\ufeff",
    "é",
    '"',
    "\\",
    "\n",
    "<",
    "/",
]
# Proto strings are UTF-8: no lone surrogates here (see test_lone_surrogate_from_upstream_does_not_raise).
_CHARS = st.one_of(st.characters(codec="utf-8"), st.sampled_from(_SPECIAL_CHARS))
TEXT = st.text(alphabet=_CHARS, max_size=12)
NAME = st.text(alphabet=_CHARS, min_size=1, max_size=12)
# -0.0 is written as the integer 0 (an integral double, by the documented rule) and parses back as +0.0,
# which proto equality tells apart: the properties use +0.0 (adding 0.0 turns -0.0 into +0.0).
FINITE = st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0)
DOUBLE = st.one_of(
    FINITE, st.integers(-(2**53), 2**53).map(float), st.sampled_from([0.0, 1.0, 2.5, 2.0**53, 2.0**53 + 2])
)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), FINITE, TEXT)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
JSON_OBJECT = st.dictionaries(TEXT, JSON_VALUE, max_size=4)


def _obj(required: Mapping[str, Any] | None = None, **optional: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(dict(required or {}), optional=optional)


def _extra_for(cls: type[Message]) -> st.SearchStrategy[dict[str, Any]]:
    """A non-empty `extra` for `cls`: keys that are none of its fields (repeating one is invalid; the key
    "extra" is left out too, see test_nested_extra_key_named_extra_is_not_a_duplicate)."""
    names = cls.DESCRIPTOR.fields_by_name
    return st.dictionaries(TEXT.filter(lambda k: k not in names), JSON_VALUE, min_size=1, max_size=2)


FUNCTION_CALL = _obj(name=TEXT, arguments=TEXT, extra=_extra_for(pb.FunctionCall))
CUSTOM_CALL = _obj(name=TEXT, input=TEXT, extra=_extra_for(pb.CustomToolCall))
TOOL_CALL = _obj(
    id=TEXT, type=TEXT, function=FUNCTION_CALL, custom=CUSTOM_CALL, extra=_extra_for(pb.ToolCall)
)
IMAGE_URL = _obj(url=TEXT, detail=TEXT, extra=_extra_for(pb.ImageUrl))
CONTENT_PART = _obj({"type": NAME}, text=TEXT, image_url=IMAGE_URL, extra=_extra_for(pb.ContentPart))
CONTENT_VALUE = st.one_of(
    st.none(),
    TEXT,
    st.lists(st.builds(lambda t, rest: {**rest, "type": t}, NAME, JSON_OBJECT), max_size=3),
)
_MESSAGE_BASE = {
    "name": TEXT,
    "tool_call_id": TEXT,
    "tool_calls": st.lists(TOOL_CALL, max_size=2),
    "refusal": TEXT,
    "extra": _extra_for(pb.ChatMessage),
}
CHAT_MESSAGE = st.one_of(
    _obj({"role": NAME}, content=CONTENT_VALUE, **_MESSAGE_BASE),
    _obj({"role": NAME}, content_parts=st.lists(CONTENT_PART, max_size=3), **_MESSAGE_BASE),
    _obj({"role": NAME}, content_text=TEXT, **_MESSAGE_BASE),
)
# What validation accepts: a name as FunctionDefinition documents it, and an arguments-object JSON Schema.
FUNCTION_NAME = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
_SCHEMA_KEYS = ("type", "properties", "required")
PARAMETERS = st.builds(
    lambda rest, schema: {**{k: v for k, v in rest.items() if k not in _SCHEMA_KEYS}, **schema},
    JSON_OBJECT,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.just("object"),
            "properties": JSON_OBJECT,
            "required": st.lists(TEXT, max_size=3),
        },
    ),
)
FUNCTION_DEFINITION = _obj(
    {"name": FUNCTION_NAME},
    description=TEXT,
    parameters=PARAMETERS,
    strict=st.booleans(),
    extra=_extra_for(pb.FunctionDefinition),
)
CUSTOM_FORMAT = _obj(
    type=TEXT,
    grammar=_obj(definition=TEXT, syntax=TEXT, extra=_extra_for(pb.CustomToolGrammar)),
    extra=_extra_for(pb.CustomToolFormat),
)
CUSTOM_DEFINITION = _obj(
    {"name": NAME}, description=TEXT, format=CUSTOM_FORMAT, extra=_extra_for(pb.CustomToolDefinition)
)
TOOL = st.one_of(
    _obj(
        {"function": FUNCTION_DEFINITION},
        type=TEXT.filter(lambda t: t != "custom"),
        extra=_extra_for(pb.Tool),
    ),
    _obj({"type": st.just("custom"), "custom": CUSTOM_DEFINITION}, extra=_extra_for(pb.Tool)),
)
_CHOICE_EXTRA = {"extra": _extra_for(pb.ToolChoice)}
TOOL_CHOICE = st.one_of(
    _obj({"mode": NAME}),
    _obj({"type": NAME}, function=_obj(name=TEXT, extra=_extra_for(pb.ToolChoiceFunction)), **_CHOICE_EXTRA),
    _obj({"type": NAME}, custom=_obj(name=TEXT, extra=_extra_for(pb.ToolChoiceCustom)), **_CHOICE_EXTRA),
    _obj(
        {"type": NAME},
        allowed_tools=_obj(mode=TEXT, tools=st.lists(TOOL, max_size=2), extra=_extra_for(pb.AllowedTools)),
        **_CHOICE_EXTRA,
    ),
)
RESPONSE_FORMAT = _obj(
    type=TEXT,
    json_schema=_obj(
        name=TEXT, description=TEXT, schema=JSON_OBJECT, strict=st.booleans(), extra=_extra_for(pb.JsonSchema)
    ),
    extra=_extra_for(pb.ResponseFormat),
)
PREDICTION = st.one_of(
    _obj(type=TEXT, content=CONTENT_VALUE, extra=_extra_for(pb.Prediction)),
    _obj(type=TEXT, content_text=TEXT, extra=_extra_for(pb.Prediction)),
)
LOCATION = _obj(
    type=TEXT,
    approximate=_obj(
        city=TEXT, country=TEXT, region=TEXT, timezone=TEXT, extra=_extra_for(pb.WebSearchApproximateLocation)
    ),
    extra=_extra_for(pb.WebSearchUserLocation),
)
EXTRA_BODY = st.dictionaries(
    TEXT.filter(lambda k: k not in REQUEST_FIELDS and k != "stream"), JSON_VALUE, min_size=1, max_size=3
)
REQUEST_JSON = _obj(
    {"model": NAME, "messages": st.lists(CHAT_MESSAGE, min_size=1, max_size=3)},
    temperature=DOUBLE,
    max_tokens=INT32,
    top_p=DOUBLE,
    frequency_penalty=DOUBLE,
    presence_penalty=DOUBLE,
    stop=st.lists(TEXT, max_size=4),
    tools=st.lists(TOOL, max_size=2),
    tool_choice=TOOL_CHOICE,
    response_format=RESPONSE_FORMAT,
    seed=INT64,
    task_id=TEXT,
    analytics_context=JSON_OBJECT,
    n=INT32,
    max_completion_tokens=INT32,
    logprobs=st.booleans(),
    top_logprobs=INT32,
    parallel_tool_calls=st.booleans(),
    user=TEXT,
    logit_bias=st.dictionaries(TEXT, DOUBLE, max_size=3),
    stream_options=_obj(
        include_usage=st.booleans(), include_obfuscation=st.booleans(), extra=_extra_for(pb.StreamOptions)
    ),
    reasoning_effort=TEXT,
    service_tier=TEXT,
    metadata=st.dictionaries(TEXT, TEXT, max_size=3),
    store=st.booleans(),
    prompt_cache_key=TEXT,
    safety_identifier=TEXT,
    verbosity=TEXT,
    modalities=st.lists(TEXT, max_size=2),
    audio=_obj(voice=TEXT, format=TEXT, extra=_extra_for(pb.AudioParams)),
    prediction=PREDICTION,
    web_search_options=_obj(
        search_context_size=TEXT, user_location=LOCATION, extra=_extra_for(pb.WebSearchOptions)
    ),
    extra_body=EXTRA_BODY,
)


def _unmerge(obj: Mapping[str, Any], desc: Descriptor) -> dict[str, Any]:
    """proto3 JSON of a `desc` object from its upstream form: keys that are not fields go back to `extra`."""
    fields = desc.fields_by_name
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        assert key != "extra", f"{desc.name}.extra was sent under its own name"
        field = fields.get(key)
        if field is None:
            extra[key] = value
            continue
        kind = field.message_type
        if kind is not None and kind.full_name not in (STRUCT, VALUE) and not kind.GetOptions().map_entry:
            if key == "tool_choice" and isinstance(value, str):
                value = {"mode": value}  # the bare-string rewrite
            elif field.is_repeated:
                value = [_unmerge(item, kind) for item in value]
            else:
                value = _unmerge(value, kind)
        out[key] = value
    if extra:
        assert "extra" in fields, f"unknown keys {sorted(extra)} in {desc.name}, which has no extra"
        out["extra"] = extra
    return out


def _undo_rewrites(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The proto3 JSON form of `body`: drop `stream`, turn the bare tool_choice string back into
    {"mode": ...}, top-level keys that are not fields back into extra_body and each object's keys that are
    not fields back into its extra. (content_parts cannot be told from content: see _parts_as_content.)"""
    body = dict(body)
    assert body.pop("stream") is stream
    assert "extra_body" not in body
    for message in body.get("messages", []):
        assert "content_parts" not in message
        assert "content_text" not in message
    assert "content_text" not in body.get("prediction", {})
    if isinstance(body.get("tool_choice"), dict):
        assert "mode" not in body["tool_choice"]
    extra_body = {key: body.pop(key) for key in list(body) if key not in REQUEST_FIELDS}
    out = _unmerge(body, pb.CreateChatCompletionRequest.DESCRIPTOR)
    if extra_body:
        out["extra_body"] = extra_body
    return out


def _extras_merged(part: dict[str, Any]) -> dict[str, Any]:
    """The proto3 JSON of a ContentPart with its extra, and its image_url's, merged into their objects."""
    extra = part.pop("extra", {})
    if "image_url" in part:
        part["image_url"] = _extras_merged(part["image_url"])
    return {**part, **extra}


def _parts_as_content(request: pb.CreateChatCompletionRequest) -> pb.CreateChatCompletionRequest:
    """`request` with every message's content_parts moved into content as JSON (the documented rewrite),
    each part's extra merged into its object, and content_text (messages, prediction) moved into content
    as a string."""
    expected = pb.CreateChatCompletionRequest()
    expected.CopyFrom(request)
    for holder in [*expected.messages, expected.prediction]:
        if holder.HasField("content_text"):
            holder.content.string_value = holder.content_text
            holder.ClearField("content_text")
    for message in expected.messages:
        if message.content_parts:
            parts = [_extras_merged(_to_dict(part)) for part in message.content_parts]
            del message.content_parts[:]
            json_format.ParseDict(parts, message.content)
    return expected


@PROPERTY
@given(request_json=REQUEST_JSON, stream=st.booleans())
def test_property_request_round_trips_through_upstream_json(
    request_json: dict[str, Any], stream: bool
) -> None:
    """Excluded by construction: invalid requests (validate_request must be empty), -0.0, NaN and infinities,
    and an empty extra_body / extra (set-but-empty is not sent, so its presence cannot come back). The
    documented rewrites are undone on the way back (_undo_rewrites), and content_parts is expected back as
    content (_parts_as_content)."""
    request = json_format.ParseDict(request_json, pb.CreateChatCompletionRequest())
    assert validate_request(request, streaming=True) == []

    body = request_to_upstream(request, stream=stream)
    text = json.dumps(body, ensure_ascii=False, allow_nan=False)
    parsed = json_format.ParseDict(
        _undo_rewrites(json.loads(text), stream=stream), pb.CreateChatCompletionRequest()
    )

    assert parsed == _parts_as_content(request)


@PROPERTY
@given(request_json=REQUEST_JSON)
def test_property_request_body_ints_are_ints(request_json: dict[str, Any]) -> None:
    """Every integral number at most 2**53 in the body is a JSON int; every float is non-integral or huge."""
    body = request_to_upstream(
        json_format.ParseDict(request_json, pb.CreateChatCompletionRequest()), stream=False
    )

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, float):
            assert not x.is_integer() or abs(x) > 2**53, x

    walk(body)


# --- property (b): random, partly ill-typed upstream JSON ------------------------------------------------

# Infinities allowed (json.loads accepts Infinity); -0.0 becomes +0.0, as in FINITE above.
WILD_FLOAT = st.floats(allow_nan=False).map(lambda x: x + 0.0)
# Integers stay within the double range: beyond it see test_integer_beyond_double_range_does_not_raise.
WILD_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), WILD_FLOAT, TEXT, st.sampled_from(["", "extra"])
)
WILD_VALUE = st.recursive(
    WILD_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
_UNKNOWN_KEYS = [
    "extra",
    "reasoning",
    "obfuscation",
    "prompt_filter_results",
    "content_filter_results",
    "matched_stop",
    "stop_reason",
    "annotations",
    "audio",
    "function_call",
]


def _wild_scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return TEXT
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return st.one_of(WILD_FLOAT, st.integers(-(2**60), 2**60))
    if cpp == FieldDescriptor.CPPTYPE_INT32:
        return st.one_of(st.integers(-(2**31) - 2, 2**31 + 1), st.sampled_from([0.5, 3.0, -1.0, 2.0**31]))
    return st.one_of(st.integers(-(2**64), 2**64), st.sampled_from([1.5, 1e3, 2.0**63, -(2.0**63)]))


_WILD_CACHE: dict[str, st.SearchStrategy[dict[str, Any]]] = {}


def _wild_object(desc: Descriptor) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects shaped like `desc`: each key absent, null, well typed or any JSON; plus unknown keys."""
    if desc.full_name in _WILD_CACHE:
        return _WILD_CACHE[desc.full_name]
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.name == "extra":
            continue
        if field.message_type is not None and field.message_type.full_name == STRUCT:
            single: st.SearchStrategy[Any] = st.dictionaries(TEXT, WILD_VALUE, max_size=3)
        elif field.message_type is not None:
            single = _wild_object(field.message_type)
        else:
            single = _wild_scalar(field)
        typed = st.lists(single, max_size=3) if field.is_repeated else single
        optional[field.name] = st.one_of(typed, typed, typed, st.none(), WILD_VALUE)
    known = st.fixed_dictionaries({}, optional=optional)
    unknown_key = st.one_of(st.sampled_from(_UNKNOWN_KEYS), TEXT).filter(
        lambda k: k == "extra" or k not in desc.fields_by_name
    )
    unknown = st.dictionaries(unknown_key, st.one_of(st.none(), WILD_VALUE), max_size=2)
    strategy = st.builds(lambda k, u: {**u, **k}, known, unknown)
    _WILD_CACHE[desc.full_name] = strategy
    return strategy


def _py(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _py(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_py(v) for v in value.list_value.values]
    if kind in ("number_value", "string_value", "bool_value"):
        return getattr(value, kind)
    return None


def _norm(x: Any) -> Any:
    """JSON as a Struct holds it: numbers are doubles."""
    if isinstance(x, Mapping):
        return {k: _norm(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_norm(v) for v in x]
    if isinstance(x, int) and not isinstance(x, bool):
        return float(x)
    return x


def _scalar_holds(field: FieldDescriptor, stored: Any, value: Any) -> bool:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return isinstance(value, str) and stored == value
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return isinstance(value, bool) and stored is value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return bool(stored == float(value))
    return bool(stored == value)


def _typed_holds(message: Message, field: FieldDescriptor, value: Any) -> bool:
    stored = getattr(message, field.name)
    if field.is_repeated:
        if not isinstance(value, list) or len(stored) != len(value):
            return False
        if field.message_type is not None:
            return all(
                isinstance(v, Mapping) and _recoverable(s, v) for s, v in zip(stored, value, strict=True)
            )
        return all(_scalar_holds(field, s, v) for s, v in zip(stored, value, strict=True))
    if field.message_type is not None:
        if not isinstance(value, Mapping) or not message.HasField(field.name):
            return False
        if field.message_type.full_name == STRUCT:
            return bool(_py(struct_pb2.Value(struct_value=stored)) == _norm(value))
        return _recoverable(stored, value)
    if field.has_presence and not message.HasField(field.name):
        return False
    return _scalar_holds(field, stored, value)


def _recoverable(message: Message, obj: Mapping[str, Any]) -> bool:
    """Every non-null key of `obj` is held by a typed field of `message` or, raw and equal, in its extra
    (an alias key: by its field, when that holds the same text)."""
    fields = message.DESCRIPTOR.fields_by_name
    extra = message.extra.fields if "extra" in fields else {}  # type: ignore[attr-defined]
    aliases = ALIASES.get(message.DESCRIPTOR.name, {})
    for key, value in obj.items():
        if value is None:
            continue
        if key in extra and _py(extra[key]) == _norm(value):
            continue
        if key in aliases and not isinstance(value, str):
            return False  # an alias only ever holds text; anything else belongs in extra
        name = aliases.get(key, key)
        field = fields.get(name) if name != "extra" else None
        if field is None or not _typed_holds(message, field, value):
            return False
    return True


def _assert_nothing_invented(message: Message, obj: Mapping[str, Any]) -> None:
    """Everything set in `message` (typed fields, extra keys) comes from a non-null key of `obj`."""
    for field, value in message.ListFields():
        if field.name == "extra":
            for key in value.fields:
                assert obj.get(key) is not None, f"extra[{key!r}] has no non-null upstream key"
            continue
        source = obj.get(field.name)
        for alias, name in ALIASES.get(message.DESCRIPTOR.name, {}).items():
            if source is None and name == field.name:
                source = obj.get(alias)
        assert source is not None, f"{field.full_name} is set without a non-null upstream key"
        if field.message_type is None or field.message_type.full_name == STRUCT:
            continue
        if field.is_repeated:
            assert isinstance(source, list)
            for item, raw in zip(value, source, strict=False):
                assert isinstance(raw, Mapping)
                _assert_nothing_invented(item, raw)
        else:
            assert isinstance(source, Mapping)
            _assert_nothing_invented(value, source)


@PROPERTY
@given(obj=_wild_object(pb.CreateChatCompletionResponse.DESCRIPTOR))
def test_property_response_from_wild_json_keeps_everything(obj: dict[str, Any]) -> None:
    pristine = copy.deepcopy(obj)
    response = response_from_upstream(obj)
    assert obj == pristine
    assert _recoverable(response, obj)
    _assert_nothing_invented(response, obj)
    pb.CreateChatCompletionResponse.FromString(response.SerializeToString())  # a sendable message


@PROPERTY
@given(obj=_wild_object(pb.StreamChatCompletionResponse.DESCRIPTOR))
def test_property_chunk_from_wild_json_keeps_everything(obj: dict[str, Any]) -> None:
    pristine = copy.deepcopy(obj)
    chunk = chunk_from_upstream(obj)
    assert obj == pristine
    assert _recoverable(chunk, obj)
    _assert_nothing_invented(chunk, obj)
    pb.StreamChatCompletionResponse.FromString(chunk.SerializeToString())


@PROPERTY
@given(
    obj=_wild_object(pb.CreateChatCompletionResponse.DESCRIPTOR),
    chunk_obj=_wild_object(pb.StreamChatCompletionResponse.DESCRIPTOR),
)
def test_property_from_upstream_of_message_to_json_is_identity(
    obj: dict[str, Any], chunk_obj: dict[str, Any]
) -> None:
    """message_to_json merges each `extra` back into its object, so converting a converted message again
    changes nothing: what landed in extra (unknown, mistyped or partly kept keys) goes back where it was."""
    response = response_from_upstream(obj)
    assert response_from_upstream(message_to_json(response)) == response
    chunk = chunk_from_upstream(chunk_obj)
    assert chunk_from_upstream(message_to_json(chunk)) == chunk


def test_recoverable_checker_catches_losses() -> None:
    # The checker itself must fail when something is dropped or changed.
    assert _recoverable(pb.CreateChatCompletionResponse(id="a"), {"id": "a", "x": None})
    assert not _recoverable(pb.CreateChatCompletionResponse(), {"id": "a"})
    assert not _recoverable(pb.CreateChatCompletionResponse(id="b"), {"id": "a"})
    assert not _recoverable(pb.CreateChatCompletionResponse(), {"unknown": 1})
    lost = pb.CreateChatCompletionResponse()
    lost.choices.add().message.SetInParent()
    assert not _recoverable(lost, {"choices": [{"message": {"role": "assistant"}}]})
    assert not _recoverable(pb.ChatCompletionDelta(), {"content": ""})  # unset vs ""
    assert _recoverable(pb.ChatCompletionDelta(content=""), {"content": ""})


# --- property (c): proto without extra -> message_to_json -> from_upstream --------------------------------


def _typed_scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return TEXT
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return DOUBLE
    if cpp == FieldDescriptor.CPPTYPE_INT32:
        return INT32
    return INT64


_TYPED_CACHE: dict[str, st.SearchStrategy[dict[str, Any]]] = {}


def _typed_object(desc: Descriptor) -> st.SearchStrategy[dict[str, Any]]:
    """proto3 JSON (snake_case) of a random `desc` message with no `extra` anywhere."""
    if desc.full_name in _TYPED_CACHE:
        return _TYPED_CACHE[desc.full_name]
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.name == "extra":
            continue
        if field.message_type is not None and field.message_type.full_name == STRUCT:
            single: st.SearchStrategy[Any] = JSON_OBJECT
        elif field.message_type is not None:
            single = _typed_object(field.message_type)
        else:
            single = _typed_scalar(field)
        optional[field.name] = st.lists(single, max_size=3) if field.is_repeated else single
    strategy = st.fixed_dictionaries({}, optional=optional)
    _TYPED_CACHE[desc.full_name] = strategy
    return strategy


@PROPERTY
@given(obj=_typed_object(pb.CreateChatCompletionResponse.DESCRIPTOR))
def test_property_response_proto_round_trips(obj: dict[str, Any]) -> None:
    """Excluded: extra (by construction), -0.0, NaN and infinities (not JSON numbers)."""
    original = json_format.ParseDict(obj, pb.CreateChatCompletionResponse())
    text = json.dumps(message_to_json(original), ensure_ascii=False, allow_nan=False)
    back = response_from_upstream(json.loads(text))
    assert back == original
    assert not any(f.name == "extra" for f, _ in _all_set_fields(back))


@PROPERTY
@given(obj=_typed_object(pb.StreamChatCompletionResponse.DESCRIPTOR))
def test_property_chunk_proto_round_trips(obj: dict[str, Any]) -> None:
    original = json_format.ParseDict(obj, pb.StreamChatCompletionResponse())
    text = json.dumps(message_to_json(original), ensure_ascii=False, allow_nan=False)
    back = chunk_from_upstream(json.loads(text))
    assert back == original
    assert not any(f.name == "extra" for f, _ in _all_set_fields(back))


def _all_set_fields(message: Message) -> Iterator[tuple[FieldDescriptor, Any]]:
    for field, value in message.ListFields():
        yield field, value
        if field.message_type is None or field.message_type.full_name in (STRUCT, VALUE):
            continue
        for item in value if field.is_repeated else [value]:
            yield from _all_set_fields(item)


def test_received_tool_calls_replay_unchanged() -> None:
    """The ToolCall.extra promise: what came in goes back out, even the parts the proto did not understand."""
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "f", "arguments": {"as": "object"}, "x": 1},
        },
    ]
    answer = response_from_upstream(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": calls}}]}
    )
    request = pb.CreateChatCompletionRequest(
        model="m",
        messages=[
            pb.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi")),
            pb.ChatMessage(role="assistant", tool_calls=answer.choices[0].message.tool_calls),
        ],
    )
    assert validate_request(request, streaming=False) == []
    assert request_to_upstream(request, stream=False)["messages"][1]["tool_calls"] == calls


# --- the chunk fast path equals the generic walk ------------------------------------------------------------


def _same_message(fast: Message, generic: Message) -> None:
    assert fast == generic  # presence of optional fields and empty sub-messages included
    assert fast.SerializeToString(deterministic=True) == generic.SerializeToString(deterministic=True)


@pytest.mark.parametrize("vector", _vectors("chunk"))
def test_chunk_fast_path_equals_the_generic_walk_on_the_goldens(vector: dict[str, Any]) -> None:
    _same_message(chunk_from_upstream(vector["upstream"]), generic_chunk_from_upstream(vector["upstream"]))


def test_the_fast_path_takes_the_common_text_chunks() -> None:
    """The chunks almost every stream is made of never take the generic walk (a regression there would
    only show in the benchmark)."""
    role, content, finish = (_load(GOLDEN / "chunk" / f"{name}.json")["upstream"] for name in (
        "00_role_chunk_content_empty", "01_content_chunk", "07_finish_chunk_empty_delta"))  # fmt: skip
    for obj in (role, content, finish):
        assert _text_chunk(obj) is not None


# Values of any JSON type, so the fast path meets every wrong type the generic walk keeps in `extra`.
_ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_TEXT = st.one_of(st.text(), st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)))
_TEXT_OR_ODD = st.one_of(_TEXT, _TEXT, _ODD)
_DELTA_KEYS = ["role", "content", "refusal", "reasoning_content", "reasoning", "tool_calls", "other"]
_DELTA = st.dictionaries(st.sampled_from(_DELTA_KEYS), _TEXT_OR_ODD, max_size=4)
_CHOICE = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(min_value=-(2**32), max_value=2**32), _ODD),
        "delta": st.one_of(_DELTA, _DELTA, _ODD),
        "finish_reason": _TEXT_OR_ODD,
        "logprobs": st.one_of(st.none(), st.none(), _ODD),
        "other": _ODD,
    },
)


def _completion(choice: st.SearchStrategy[Any], usage: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A chunk's or a reply's top level (they share it) with `choice`s and `usage`, any key possibly odd."""
    return st.fixed_dictionaries(
        {},
        optional={
            **dict.fromkeys(("id", "object", "model", "system_fingerprint", "service_tier"), _TEXT_OR_ODD),
            "created": st.one_of(st.integers(min_value=-(2**64), max_value=2**64), _ODD),
            "choices": st.one_of(st.lists(choice, max_size=3), _ODD),
            "usage": usage,
            "other": _ODD,
        },
    )


_TEXT_CHUNK = _completion(_CHOICE, st.one_of(st.none(), st.none(), _ODD))


@PROPERTY
@given(obj=_TEXT_CHUNK)
def test_property_chunk_fast_path_equals_the_generic_walk_on_text_chunks(obj: dict[str, Any]) -> None:
    pristine = copy.deepcopy(obj)
    _same_message(chunk_from_upstream(obj), generic_chunk_from_upstream(obj))
    assert obj == pristine


@PROPERTY
@given(obj=_wild_object(pb.StreamChatCompletionResponse.DESCRIPTOR))
def test_property_chunk_fast_path_equals_the_generic_walk_on_wild_chunks(obj: dict[str, Any]) -> None:
    _same_message(chunk_from_upstream(obj), generic_chunk_from_upstream(obj))


# --- the reply's fast path --------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _vectors("response"))
def test_response_fast_path_equals_the_generic_walk_on_the_goldens(vector: dict[str, Any]) -> None:
    obj = vector["upstream"]
    _same_message(response_from_upstream(obj), generic_response_from_upstream(obj))


def test_the_fast_path_takes_a_plain_text_reply_with_its_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply of nearly every unary call (text, usage with details, cost, duration and carbon) never
    takes the generic walk (a regression there would only show in the benchmark)."""
    obj = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1796657568, "model": "echo",
        "system_fingerprint": "fp", "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "hi", "refusal": None}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3, "cost": 0.5,
                  "duration_ms": 0, "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}, "carbon": {"gco2e": 0.01}},
    }  # fmt: skip
    generic = generic_response_from_upstream(obj)

    def no_generic_walk(*args: object) -> bool:
        raise AssertionError("the generic walk was taken")

    monkeypatch.setattr(convert_module._MAPPING, "fill", no_generic_walk)
    fast = _text_response(obj)
    assert fast is not None
    _same_message(fast, generic)


_MESSAGE = st.dictionaries(st.sampled_from(_DELTA_KEYS), _TEXT_OR_ODD, max_size=4)
_REPLY_CHOICE = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(min_value=-(2**32), max_value=2**32), _ODD),
        "message": st.one_of(_MESSAGE, _MESSAGE, _ODD),
        "finish_reason": _TEXT_OR_ODD,
        "logprobs": st.one_of(st.none(), st.none(), _ODD),
        "other": _ODD,
    },
)
_USAGE = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": st.one_of(st.integers(min_value=-(2**32), max_value=2**32), _ODD),
        "cost": st.one_of(st.floats(allow_nan=False, allow_infinity=False), _ODD),
        "duration_ms": st.one_of(st.integers(min_value=-(2**60), max_value=2**60), st.floats(), _ODD),
        "carbon": st.one_of(
            st.dictionaries(st.text(max_size=3), st.floats(allow_nan=False), max_size=2), _ODD
        ),
        "prompt_tokens_details": st.one_of(st.fixed_dictionaries({"cached_tokens": st.integers(0, 9)}), _ODD),
        "completion_tokens_details": st.one_of(
            st.dictionaries(st.sampled_from(["reasoning_tokens", "text_tokens", "other"]), _ODD, max_size=2),
            st.fixed_dictionaries({"reasoning_tokens": st.integers(-(2**32), 2**32)}),
        ),
        "other": _ODD,
    },
)
_TEXT_REPLY = _completion(_REPLY_CHOICE, st.one_of(st.none(), _USAGE, _USAGE, _ODD))


@PROPERTY
@given(obj=_TEXT_REPLY)
def test_property_response_fast_path_equals_the_generic_walk_on_text_replies(obj: dict[str, Any]) -> None:
    pristine = copy.deepcopy(obj)
    _same_message(response_from_upstream(obj), generic_response_from_upstream(obj))
    assert obj == pristine


@PROPERTY
@given(obj=_wild_object(pb.CreateChatCompletionResponse.DESCRIPTOR))
def test_property_response_fast_path_equals_the_generic_walk_on_wild_replies(obj: dict[str, Any]) -> None:
    _same_message(response_from_upstream(obj), generic_response_from_upstream(obj))


# --- the request's fast path ------------------------------------------------------------------------------


def _same_body(request: pb.CreateChatCompletionRequest) -> None:
    for stream in (False, True):
        fast = request_to_upstream(request, stream=stream)
        generic = generic_request_to_upstream(request, stream=stream)
        assert _typed(fast) == _typed(generic)  # the same values of the same JSON types
        assert list(fast) == list(generic)  # and the same key order: the same bytes sent


@pytest.mark.parametrize("vector", _vectors("request"))
def test_request_fast_path_equals_the_generic_walk_on_the_goldens(vector: dict[str, Any]) -> None:
    _same_body(_parse_request(vector["request"]))


def test_the_fast_path_takes_plain_text_requests() -> None:
    """The requests of nearly every call (a model, text messages, plain settings) never take the generic
    walk (a regression there would only show in the benchmark)."""
    text = pb.ChatMessage(role="system", content_text="be brief", name="n")
    value = pb.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))
    plain = pb.CreateChatCompletionRequest(model="m", messages=[text, value], max_tokens=5, user="u")
    benchmark = pb.CreateChatCompletionRequest(model="echo", messages=[value])  # bench.workload's
    for request in (benchmark, plain):
        assert _plain_request(request) is not None
        _same_body(request)


def test_the_fast_path_copies_no_enum_or_bytes_field() -> None:
    """The request has none today; a field of either kind added later goes through the generic walk (which
    decides how it is sent), not copied as a number or bytes."""
    descriptor = descriptor_pb2.FieldDescriptorProto.DESCRIPTOR
    assert {"type", "label"} <= {f.name for f in descriptor.fields}  # enums
    plain = convert_module._plain_fields(descriptor)
    assert "name" in plain
    assert "default_value" in plain  # a string
    assert not {"type", "label"} & plain
    uninterpreted = descriptor_pb2.UninterpretedOption.DESCRIPTOR  # `string_value` is bytes
    assert uninterpreted.fields_by_name["string_value"].type == FieldDescriptor.TYPE_BYTES
    assert "string_value" not in convert_module._plain_fields(uninterpreted)
    assert "identifier_value" in convert_module._plain_fields(uninterpreted)  # a string
    message = pb.ChatMessage.DESCRIPTOR  # and the chat messages have none of either kind today
    assert all(
        f.cpp_type != FieldDescriptor.CPPTYPE_ENUM and f.type != FieldDescriptor.TYPE_BYTES
        for d in (message, pb.CreateChatCompletionRequest.DESCRIPTOR)
        for f in d.fields
    )


_CONTENT = st.one_of(
    st.builds(lambda t: {"content_text": t}, st.text()),
    st.builds(lambda t: {"content": struct_pb2.Value(string_value=t)}, st.text()),
    st.builds(lambda x: {"content": struct_pb2.Value(number_value=x)}, st.floats(allow_nan=False)),
    st.just({"content": struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)}),
    st.builds(lambda t: {"content_parts": [pb.ContentPart(type="text", text=t)]}, st.text(max_size=3)),
    st.just({}),
)
_MESSAGE = st.builds(
    lambda role, name, content, extra: pb.ChatMessage(
        role=role, name=name, **content, **({"extra": extra} if extra else {})
    ),
    st.sampled_from(["user", "assistant", "system", "tool", ""]),
    st.text(max_size=3),
    _CONTENT,
    st.one_of(st.none(), st.none(), st.builds(lambda k: _struct({k: 1}), st.text(max_size=2))),
)


def _struct(obj: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(obj)
    return struct


_REQUEST_KWARGS = st.fixed_dictionaries(
    {"model": st.text(max_size=5), "messages": st.lists(_MESSAGE, max_size=3)},
    optional={
        "max_tokens": st.integers(min_value=0, max_value=2**31 - 1),
        "user": st.text(max_size=3),
        "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "temperature": st.floats(min_value=0, max_value=2),
        "stop": st.lists(st.text(max_size=2), max_size=2),
        "extra_body": st.builds(lambda k: _struct({k: True}), st.text(max_size=2)),
    },
)


@PROPERTY
@given(kwargs=_REQUEST_KWARGS)
def test_property_request_fast_path_equals_the_generic_walk(kwargs: dict[str, Any]) -> None:
    _same_body(pb.CreateChatCompletionRequest(**kwargs))
