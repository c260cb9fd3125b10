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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb

__all__ = [
    "chunk_from_upstream",
    "message_to_json",
    "request_to_upstream",
    "response_from_upstream",
    "struct_to_json",
    "value_to_json",
]

JSON = Any  # a json.loads() result
_EXTRA: Final = "extra"
_MAX_SAFE_INT: Final = 2**53
_STRUCT: Final = struct_pb2.Struct.DESCRIPTOR.full_name
_VALUE: Final = struct_pb2.Value.DESCRIPTOR.full_name
_INT_RANGES: Final = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS: Final = (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT)


# --- outbound: proto -> upstream JSON ------------------------------------------------------------------


def request_to_upstream(request: pb.CreateChatCompletionRequest, *, stream: bool) -> dict[str, JSON]:
    """The upstream JSON body for `request`; `stream` is decided by the RPC. Assumes a validated request."""
    body: dict[str, JSON] = message_to_json(request)
    extra_body = body.pop("extra_body", None)
    if extra_body:
        body.update(extra_body)
    body["stream"] = stream
    return body


def message_to_json(message: Message) -> JSON:
    """JSON of the set fields of `message`, keyed by proto field name (= upstream JSON key).

    An `extra` Struct is merged into the object (its keys win); a ToolChoice with `mode` is that string.
    """
    out: dict[str, JSON] = {}
    for field, value in message.ListFields():
        out[field.name] = _field_to_json(field, value)
    extra = out.pop(_EXTRA, None)
    special = _SPECIAL_OUT.get(message.DESCRIPTOR.full_name)
    result = special(out) if special else out
    if extra and isinstance(result, dict):
        result.update(extra)
    return result


def _field_to_json(field: FieldDescriptor, value: Any) -> JSON:
    if _is_map(field):
        value_field = _message_type(field).fields_by_name["value"]
        return {k: _single_to_json(value_field, v) for k, v in value.items()}
    if field.is_repeated:
        return [_single_to_json(field, v) for v in value]
    return _single_to_json(field, value)


def _single_to_json(field: FieldDescriptor, value: Any) -> JSON:
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        name = _message_type(field).full_name
        if name == _STRUCT:
            return struct_to_json(value)
        if name == _VALUE:
            return value_to_json(value)
        return message_to_json(value)
    if field.cpp_type in _FLOATS:
        return _number(value)
    return value


def struct_to_json(struct: struct_pb2.Struct) -> dict[str, JSON]:
    """A Struct as a plain dict, integral numbers as ints."""
    return {key: value_to_json(value) for key, value in struct.fields.items()}


def value_to_json(value: struct_pb2.Value) -> JSON:
    """A Value as plain JSON, integral numbers as ints."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_json(value.struct_value)
    if kind == "list_value":
        return [value_to_json(v) for v in value.list_value.values]
    if kind == "number_value":
        return _number(value.number_value)
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None  # null_value, or a Value with no kind set


def _number(x: float) -> int | float:
    # Struct and double fields hold doubles; upstream JSON schemas and logit biases want integers.
    if math.isfinite(x) and x.is_integer() and abs(x) <= _MAX_SAFE_INT:
        return int(x)
    return x


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


_SPECIAL_OUT: Final = {
    pb.ChatMessage.DESCRIPTOR.full_name: _typed_content_out,
    pb.Prediction.DESCRIPTOR.full_name: _typed_content_out,
    pb.ToolChoice.DESCRIPTOR.full_name: _tool_choice_out,
    pb.FunctionCall.DESCRIPTOR.full_name: _function_call_out,
    pb.CustomToolCall.DESCRIPTOR.full_name: _custom_tool_call_out,
    pb.ContentPart.DESCRIPTOR.full_name: _content_part_out,
}


def _is_map(field: FieldDescriptor) -> bool:
    return field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name  # only called on message fields
    return field.message_type


# --- inbound: upstream JSON -> proto -------------------------------------------------------------------


def response_from_upstream(obj: Mapping[str, JSON]) -> pb.CreateChatCompletionResponse:
    """A `chat.completion` JSON object as a proto; unknown or mistyped keys land in `extra`."""
    response = pb.CreateChatCompletionResponse()
    _fill(response, obj)
    return response


def chunk_from_upstream(obj: Mapping[str, JSON]) -> pb.StreamChatCompletionResponse:
    """A `chat.completion.chunk` JSON object as a proto; unknown or mistyped keys land in `extra`."""
    chunk = pb.StreamChatCompletionResponse()
    _fill(chunk, obj)
    return chunk


@dataclass(frozen=True, slots=True)
class _Field:
    """What `_fill` needs of a field, looked up once per message type (descriptor access is slow)."""

    name: str
    repeated: bool
    kind: int  # _SCALAR, _MESSAGE or _STRUCT
    coerce: Callable[[JSON], Any]  # scalars: the value as the field's type, or None if it does not fit


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: Mapping[str, _Field]  # by JSON key; `extra` itself is not a key upstream JSON can fill
    has_extra: bool
    aliases: Mapping[str, _Field]  # second JSON keys of some fields (_ALIASES)


_SCALAR, _MESSAGE, _STRUCT_KIND = range(3)
_PLANS: dict[type[Message], _Plan] = {}
# Upstream keys read into a field named otherwise, by message: vLLM (newer) and OpenRouter send the
# reasoning text as `reasoning`, DeepSeek and others as `reasoning_content` (docs/proto-design.md).
_REASONING: Final = {"reasoning": "reasoning_content"}
_ALIASES: Final[Mapping[str, Mapping[str, str]]] = {
    pb.ChatCompletionMessage.DESCRIPTOR.full_name: _REASONING,
    pb.ChatCompletionDelta.DESCRIPTOR.full_name: _REASONING,
}


def _plan(message_class: type[Message]) -> _Plan:
    plan = _PLANS.get(message_class)
    if plan is None:
        descriptor = cast("Descriptor", message_class.DESCRIPTOR)
        fields = {f.name: _field_plan(f) for f in descriptor.fields if f.name != _EXTRA}
        aliases = {alias: fields[name] for alias, name in _ALIASES.get(descriptor.full_name, {}).items()}
        plan = _Plan(fields, _EXTRA in descriptor.fields_by_name, aliases)
        _PLANS[message_class] = plan
    return plan


def _field_plan(field: FieldDescriptor) -> _Field:
    if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
        return _Field(field.name, field.is_repeated, _SCALAR, _coercer(field.cpp_type))
    kind = _STRUCT_KIND if _message_type(field).full_name == _STRUCT else _MESSAGE
    return _Field(field.name, field.is_repeated, kind, _no_coercion)


def _fill(message: Message, obj: Mapping[str, JSON]) -> bool:
    """Sets `message` from `obj`; returns False if something could be kept nowhere in `message`."""
    plan = _plan(type(message))
    leftovers: dict[str, JSON] = {}
    for key, value in obj.items():
        if value is None:
            continue  # null is absent (and an unknown null says nothing)
        field = plan.fields.get(key)
        if field is None and key in plan.aliases:
            field = plan.aliases[key]
            canonical = obj.get(field.name)
            if canonical is not None:
                if isinstance(value, str) and canonical == value:
                    continue  # the same text under both keys: kept once, by the canonical key
                field = None  # both keys, different values: the canonical one is typed, this one kept raw
        if field is None or not _set_field(message, field, value):
            leftovers[key] = value  # unknown, wrong JSON type, or a nested object that lost something
    if not leftovers:
        return True
    if not plan.has_extra:
        return False
    _update_struct(getattr(message, _EXTRA), leftovers)
    return True


def _set_field(message: Message, field: _Field, value: JSON) -> bool:
    if field.repeated:
        return isinstance(value, list) and _set_repeated(message, field, value)
    if field.kind == _SCALAR:
        scalar = field.coerce(value)
        if scalar is None:
            return False
        setattr(message, field.name, scalar)
        return True
    if not isinstance(value, Mapping):
        return False
    target = getattr(message, field.name)
    target.SetInParent()
    if field.kind == _STRUCT_KIND:
        _update_struct(target, value)
        return True
    return _fill(target, value)


def _set_repeated(message: Message, field: _Field, items: Iterable[JSON]) -> bool:
    container = getattr(message, field.name)
    if field.kind == _SCALAR:
        scalars = [field.coerce(item) for item in items]
        if any(s is None for s in scalars):
            return False
        container.extend(scalars)
        return True
    complete = True
    for item in items:
        if not isinstance(item, Mapping):
            return False
        complete = _fill(container.add(), item) and complete
    return complete


def _coercer(cpp_type: int) -> Callable[[JSON], Any]:
    """The function turning a JSON value into a scalar of `cpp_type` (None when it does not fit)."""
    if cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return _as_text
    if cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return _as_bool
    if cpp_type in _FLOATS:
        return _as_float
    low, high = _INT_RANGES[cpp_type]
    return lambda value: _as_int(value, low, high)


def _no_coercion(value: JSON) -> Any:
    return value


def _as_text(value: JSON) -> str | None:
    return _text(value) if isinstance(value, str) else None


def _as_bool(value: JSON) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_float(value: JSON) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_as_float(value)
    return None


def _as_int(value: JSON, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if low <= value <= high else None


def _int_as_float(value: int) -> float | None:
    try:
        return float(value)
    except OverflowError:  # JSON integers have no size limit; doubles do
        return None


def _text(value: str) -> str:
    """`value`, with lone UTF-16 surrogates (a JSON "\\ud83d" cut from its pair) made U+FFFD: proto
    strings must be valid UTF-8."""
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _update_struct(struct: struct_pb2.Struct, values: Mapping[str, JSON]) -> None:
    try:
        struct.update(values)
    except (OverflowError, UnicodeEncodeError):
        struct.update(_struct_safe(values))


def _struct_safe(value: JSON) -> JSON:
    """`value` with what a Struct can't hold made holdable: integers beyond a double as their decimal
    string, lone surrogates as U+FFFD."""
    if isinstance(value, Mapping):
        return {_text(k): _struct_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_struct_safe(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int) and not isinstance(value, bool) and _int_as_float(value) is None:
        return str(value)
    return value
