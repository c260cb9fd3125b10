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
are read from a second key too (`reasoning` for `reasoning_content`, see _ALIASES). The chunk of nearly
every stream event (text deltas: no tool calls, logprobs, usage, alias or unknown key) is built by direct
assignment (`_text_chunk`), and so is a reply of text choices (`_text_response`); every other one by
the generic walk; both give the same message (tests/unit/test_convert.py checks it on the golden vectors
and with hypothesis).

The generic rules live in bridge.jsonproto; this module holds the chat contract's rewrites and aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.jsonproto import JSON, JsonMapping, proto_text, struct_to_json, update_struct, value_to_json

__all__ = [
    "chunk_from_upstream",
    "generic_request_to_upstream",
    "message_to_json",
    "request_to_upstream",
    "response_from_upstream",
    "struct_to_json",
    "value_to_json",
]


# --- outbound: proto -> upstream JSON ------------------------------------------------------------------


def request_to_upstream(request: pb.CreateChatCompletionRequest, *, stream: bool) -> dict[str, JSON]:
    """The upstream JSON body for `request`; `stream` is decided by the RPC. Assumes a validated request."""
    body = _plain_request(request)
    if body is None:
        body = _MAPPING.request_body(request)
    body["stream"] = stream
    return body


def generic_request_to_upstream(request: pb.CreateChatCompletionRequest, *, stream: bool) -> dict[str, JSON]:
    """`request_to_upstream` by the generic walk alone (what the fast path must equal)."""
    body = _MAPPING.request_body(request)
    body["stream"] = stream
    return body


def _plain_fields(descriptor: Descriptor) -> frozenset[str]:
    """The fields the generic walk sends as they are: singular, neither messages nor floating point (those
    go through a conversion or a rewrite), nor enums or bytes (none today: if one is added, the walk
    decides how it is sent, not a value copied here as a number or bytes)."""
    skipped = (
        FieldDescriptor.CPPTYPE_MESSAGE,
        FieldDescriptor.CPPTYPE_FLOAT,
        FieldDescriptor.CPPTYPE_DOUBLE,
        FieldDescriptor.CPPTYPE_ENUM,
    )
    return frozenset(
        f.name
        for f in descriptor.fields
        if not f.is_repeated and f.cpp_type not in skipped and f.type != FieldDescriptor.TYPE_BYTES
    )


# The request's fast path: the plain top-level fields (model, counts, flags, strings) and messages of plain
# fields with their content as text (`content_text`, or a string `content` Value); anything else (floats,
# tools, content parts, extra, extra_body, ...) takes the generic walk.
_REQUEST_PLAIN: Final = _plain_fields(pb.CreateChatCompletionRequest.DESCRIPTOR)
_MESSAGE_PLAIN: Final = _plain_fields(pb.ChatMessage.DESCRIPTOR) - {"content_text"}


def _plain_request(request: pb.CreateChatCompletionRequest) -> dict[str, JSON] | None:
    """The upstream body of a request of plain fields and plain messages, the generic walk's, built
    directly; None for any other (the generic walk's)."""
    body: dict[str, JSON] = {}
    for field, value in request.ListFields():
        name = field.name
        if name == "messages":
            messages: list[JSON] = []
            for message in value:
                out = _plain_message(message)
                if out is None:
                    return None
                messages.append(out)
            body[name] = messages
        elif name in _REQUEST_PLAIN:
            body[name] = value
        else:
            return None
    return body


def _plain_message(message: pb.ChatMessage) -> dict[str, JSON] | None:
    out: dict[str, JSON] = {}
    content: JSON = None
    has_content = False
    for field, value in message.ListFields():
        name = field.name
        if name in _MESSAGE_PLAIN:
            out[name] = value
        elif name == "content_text" or (name == "content" and value.WhichOneof("kind") == "string_value"):
            content = value if name == "content_text" else value.string_value
            has_content = True
        else:
            return None
    if has_content:
        out["content"] = content  # last, where the generic walk's rewrite puts a typed content too
    return out


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
    response = _text_response(obj)
    if response is None:
        response = generic_response_from_upstream(obj)
    return response


def chunk_from_upstream(obj: Mapping[str, JSON]) -> pb.StreamChatCompletionResponse:
    """A `chat.completion.chunk` JSON object as a proto; unknown or mistyped keys land in `extra`."""
    chunk = _text_chunk(obj)
    if chunk is None:
        chunk = generic_chunk_from_upstream(obj)
    return chunk


def generic_chunk_from_upstream(obj: Mapping[str, JSON]) -> pb.StreamChatCompletionResponse:
    """`chunk_from_upstream` by the generic walk alone (what the fast path must equal)."""
    chunk = pb.StreamChatCompletionResponse()
    _MAPPING.fill(chunk, obj)
    return chunk


# The keys the fast path takes: the chunk's string and integer fields, its choices, and a null usage; a
# choice's index, delta, finish reason and null logprobs; a delta's string fields.
_CHUNK_STRINGS: Final = ("id", "object", "model", "system_fingerprint", "service_tier")
_CHUNK_KEYS: Final = frozenset({*_CHUNK_STRINGS, "created", "choices", "usage"})
_CHOICE_KEYS: Final = frozenset({"index", "delta", "finish_reason", "logprobs"})
_DELTA_STRINGS: Final = frozenset({"role", "content", "refusal", "reasoning_content"})
_INT32: Final = (-(2**31), 2**31 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)
_Chunk: Final = pb.StreamChatCompletionResponse


def _text_chunk(obj: Mapping[str, JSON]) -> pb.StreamChatCompletionResponse | None:
    """A text-delta chunk built by the message's own constructor (one C call fills it: cheaper than an
    assignment per field), once its keys and those of its choices and deltas are those taken here; None
    for any other shape (the generic walk's). The constructor checks each value's type and range as the
    generic walk would (a bool is not an int, a float not an integer, an int beyond its field's range, a
    string with a lone surrogate: each raises, and the generic walk then decides); null is absent."""
    if not obj.keys() <= _CHUNK_KEYS or obj.get("usage") is not None:
        return None  # a usage, or a key the generic walk keeps in `extra`
    choices = obj.get("choices")
    if choices is not None:
        if type(choices) is not list:
            return None
        for choice in choices:
            if (
                type(choice) is not dict
                or not choice.keys() <= _CHOICE_KEYS
                or choice.get("logprobs") is not None
            ):
                return None  # logprobs, or a key the generic walk keeps in `extra`
            delta = choice.get("delta")
            if delta is not None and (type(delta) is not dict or not delta.keys() <= _DELTA_STRINGS):
                return None
    try:
        return _Chunk(**obj)
    except (TypeError, ValueError):  # a value of another type or beyond its range (UnicodeError included)
        return None


def generic_response_from_upstream(obj: Mapping[str, JSON]) -> pb.CreateChatCompletionResponse:
    """`response_from_upstream` by the generic walk alone (what the fast path must equal)."""
    response = pb.CreateChatCompletionResponse()
    _MAPPING.fill(response, obj)
    return response


# The reply's fast path: the chunk's top-level keys, choices of `index`, `finish_reason`, null `logprobs`
# and a `message` of text fields, a usage of counts, prices, details and carbon (`_fill_usage`).
_REPLY_KEYS: Final = frozenset({*_CHUNK_STRINGS, "created"})  # the same top-level fields as a chunk
_REPLY_CHOICE_KEYS: Final = frozenset({"index", "message", "finish_reason", "logprobs"})


def _text_response(obj: Mapping[str, JSON]) -> pb.CreateChatCompletionResponse | None:
    """A reply of text choices by direct assignment; None for any other shape (the generic walk's)."""
    response = pb.CreateChatCompletionResponse()
    for key, value in obj.items():
        if value is None:
            continue
        if key == "choices":
            if type(value) is not list or not all(_add_reply_choice(response, choice) for choice in value):
                return None
        elif key == "usage":
            if type(value) is not dict:
                return None
            _fill_usage(response.usage, value)
        elif key not in _REPLY_KEYS or not _set_scalar(response, key, value):
            return None
    return response


def _add_reply_choice(response: pb.CreateChatCompletionResponse, choice: JSON) -> bool:
    if type(choice) is not dict or not _REPLY_CHOICE_KEYS.issuperset(choice):
        return False
    added = response.choices.add()
    for key, value in choice.items():
        if value is None:
            continue
        if key == "message":
            if type(value) is not dict or not _DELTA_STRINGS.issuperset(value):
                return False
            message = added.message
            message.SetInParent()
            for name, text in value.items():
                if text is not None and not _set_scalar(message, name, text):
                    return False
        elif key == "logprobs" or not _set_scalar(added, key, value):
            return False
    return True


def _fill_usage(usage: pb.Usage, obj: Mapping[str, JSON]) -> None:
    """`usage` from `obj` by direct assignment when it holds counts, prices and details only (what
    servers send), else by the generic walk."""
    usage.SetInParent()
    for key, value in obj.items():
        if value is None:
            continue
        if key in _USAGE_DETAILS:
            if type(value) is not dict:
                break
            details = getattr(usage, key)
            details.SetInParent()
            if not all(v is None or _set_count(details, k, v, _DETAIL_COUNTS) for k, v in value.items()):
                break
        elif key == "carbon":
            if type(value) is not dict:
                break
            usage.carbon.SetInParent()
            update_struct(usage.carbon, value)
        elif key in _USAGE_PRICES:
            if type(value) is int and -_EXACT < value < _EXACT:
                value = float(value)  # `duration_ms: 0`
            elif type(value) is not float:
                break
            setattr(usage, key, value)
        elif not _set_count(usage, key, value, _USAGE_COUNTS):
            break
    else:
        return
    usage.Clear()  # something the fast path does not take: the generic walk, from the start
    usage.SetInParent()
    _MAPPING.fill(usage, obj)


def _set_count(message: Message, key: str, value: JSON, counts: frozenset[str]) -> bool:
    if key not in counts or type(value) is not int or not _INT32[0] <= value <= _INT32[1]:
        return False
    setattr(message, key, value)
    return True


_USAGE_COUNTS: Final = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_USAGE_PRICES: Final = frozenset({"cost", "duration_ms"})  # doubles
_EXACT: Final = 2**53  # integers a double holds exactly (larger ones: the generic walk)
_USAGE_DETAILS: Final = frozenset({"prompt_tokens_details", "completion_tokens_details"})
_DETAIL_COUNTS: Final = frozenset(
    field.name
    for details in (pb.PromptTokensDetails, pb.CompletionTokensDetails)
    for field in details.DESCRIPTOR.fields
    if field.cpp_type == FieldDescriptor.CPPTYPE_INT32
)


def _set_scalar(message: Message, key: str, value: JSON) -> bool:
    """Sets the string or integer field `key` as the generic walk would; False for a value it would not
    take (the generic walk keeps it in `extra`)."""
    if type(value) is str:
        if key in _INTEGERS:
            return False
        setattr(message, key, value if value.isascii() else proto_text(value))
        return True
    low, high = _INTEGERS.get(key, (1, 0))
    if type(value) is not int or not low <= value <= high:
        return False
    setattr(message, key, value)
    return True


_INTEGERS: Final = {"created": _INT64, "index": _INT32}  # the reply's integer fields (the rest: strings)


# Upstream keys read into a field named otherwise, by message: vLLM (newer) and OpenRouter send the
# reasoning text as `reasoning`, DeepSeek and others as `reasoning_content` (docs/proto-design.md).
_REASONING: Final = {"reasoning": "reasoning_content"}
_ALIASES: Final[Mapping[str, Mapping[str, str]]] = {
    pb.ChatCompletionMessage.DESCRIPTOR.full_name: _REASONING,
    pb.ChatCompletionDelta.DESCRIPTOR.full_name: _REASONING,
}

_MAPPING: Final = JsonMapping(rewrites=_REWRITES, aliases=_ALIASES)
