"""Pure JSON <-> proto conversion for chat completions (no IO).

Outbound, `request_to_upstream` turns a CreateChatCompletionRequest into the upstream JSON body: only
fields that are set, under their exact JSON keys (proto field names are the upstream keys), with the
rewrites the proto needs (docs/proto-design.md): `content_parts` and `content_text` are sent as `content`,
`tool_choice.mode` as the bare string, `extra_body` merged into the top level and each object's `extra`
into that object.
Struct numbers are doubles; integral ones are sent as JSON integers so `"minItems": 1` stays 1.

Inbound, `response_from_upstream` / `chunk_from_upstream` fill a proto from parsed upstream JSON, tolerant
by design: `null` means unset, and a key the proto does not know, or a known key whose value has the
wrong JSON type, is kept in the nearest `extra` Struct (nothing is dropped but unknown nulls). A few fields
are read from a second key too (`reasoning` for `reasoning_content`, see _ALIASES).

The generic rules live in bridge.jsonproto; this module holds the chat contract's rewrites and aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from google.protobuf.message import Message

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.jsonproto import JSON, JsonMapping, struct_to_json, value_to_json

__all__ = [
    "chunk_from_upstream",
    "message_to_json",
    "request_to_upstream",
    "response_from_upstream",
    "struct_to_json",
    "value_to_json",
]


# --- outbound: proto -> upstream JSON ------------------------------------------------------------------


def request_to_upstream(request: pb.CreateChatCompletionRequest, *, stream: bool) -> dict[str, JSON]:
    """The upstream JSON body for `request`; `stream` is decided by the RPC. Assumes a validated request."""
    body = _MAPPING.request_body(request)
    body["stream"] = stream
    return body


def message_to_json(message: Message) -> JSON:
    """JSON of the set fields of `message`, keyed by proto field name (= upstream JSON key).

    An `extra` Struct is merged into the object (its keys win); a ToolChoice with `mode` is that string.
    """
    return _MAPPING.to_json(message)


def _typed_content_out(out: dict[str, JSON]) -> dict[str, JSON]:
    # The typed alternatives of `content` (validation allows one of them) are sent under its key.
    for key in ("content_parts", "content_text"):
        if key in out:
            out["content"] = out.pop(key)
    return out


def _tool_choice_out(out: dict[str, JSON]) -> JSON:
    mode = out.pop("mode", None)
    return mode if mode is not None else out


def _function_call_out(out: dict[str, JSON]) -> dict[str, JSON]:
    # The HTTP API requires both keys; "" is their proto default, so it would otherwise vanish.
    out.setdefault("name", "")
    out.setdefault("arguments", "")
    return out


def _custom_tool_call_out(out: dict[str, JSON]) -> dict[str, JSON]:
    out.setdefault("name", "")  # required by the HTTP API, like a function call's keys
    out.setdefault("input", "")
    return out


def _content_part_out(out: dict[str, JSON]) -> dict[str, JSON]:
    if out.get("type") == "text":
        out.setdefault("text", "")  # required by the HTTP API, even when empty
    return out


_REWRITES: Final = {
    pb.ChatMessage.DESCRIPTOR.full_name: _typed_content_out,
    pb.Prediction.DESCRIPTOR.full_name: _typed_content_out,
    pb.ToolChoice.DESCRIPTOR.full_name: _tool_choice_out,
    pb.FunctionCall.DESCRIPTOR.full_name: _function_call_out,
    pb.CustomToolCall.DESCRIPTOR.full_name: _custom_tool_call_out,
    pb.ContentPart.DESCRIPTOR.full_name: _content_part_out,
}


# --- inbound: upstream JSON -> proto -------------------------------------------------------------------


def response_from_upstream(obj: Mapping[str, JSON]) -> pb.CreateChatCompletionResponse:
    """A `chat.completion` JSON object as a proto; unknown or mistyped keys land in `extra`."""
    response = pb.CreateChatCompletionResponse()
    _MAPPING.fill(response, obj)
    return response


def chunk_from_upstream(obj: Mapping[str, JSON]) -> pb.StreamChatCompletionResponse:
    """A `chat.completion.chunk` JSON object as a proto; unknown or mistyped keys land in `extra`."""
    chunk = pb.StreamChatCompletionResponse()
    _MAPPING.fill(chunk, obj)
    return chunk


# Upstream keys read into a field named otherwise, by message: vLLM (newer) and OpenRouter send the
# reasoning text as `reasoning`, DeepSeek and others as `reasoning_content` (docs/proto-design.md).
_REASONING: Final = {"reasoning": "reasoning_content"}
_ALIASES: Final[Mapping[str, Mapping[str, str]]] = {
    pb.ChatCompletionMessage.DESCRIPTOR.full_name: _REASONING,
    pb.ChatCompletionDelta.DESCRIPTOR.full_name: _REASONING,
}

_MAPPING: Final = JsonMapping(rewrites=_REWRITES, aliases=_ALIASES)
