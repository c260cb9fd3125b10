"""Pure checks of a chat completion request before anything is sent upstream.

Only what is plainly wrong whatever the upstream is (missing model, no messages, an empty role, shapes the
JSON body cannot express, either/or fields set together, the gateway's documented length limits) is
rejected here; value ranges are the upstream's call, and its 400 reaches the caller as INVALID_ARGUMENT
anyway. Field paths follow AIP-193 style: `messages[2].content`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Final

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from bridge.errors import FieldViolation
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.jsonproto import extra_body_violations, non_finite_field, too_long

__all__ = ["validate_request"]

_STREAM_ONLY = "is only valid on StreamChatCompletion; remove it"
# Limits the Prisme gateway documents for its chat endpoint (characters, i.e. code points).
_MAX_MODEL_LENGTH = 256
_MAX_TASK_ID_LENGTH = 128
# Tool types whose settings live in a typed field (others carry theirs in `extra`).
_TOOL_BODIES = ("function", "custom")
# ToolChoice object-form fields: one per choice type, at most one set.
_CHOICE_BODIES = ("function", "custom", "allowed_tools")
# A function name as the contract documents it (FunctionDefinition.name), OpenAI's and Anthropic's rule.
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SCHEMA_EXAMPLE = '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}'


def validate_request(request: pb.CreateChatCompletionRequest, *, streaming: bool) -> list[FieldViolation]:
    """Every violation in `request` (empty when it may be sent upstream)."""
    # One walk over the fields that are set: each one's own checks are looked up below, and its numbers
    # checked on the way (only numbers JSON cannot carry are checked below the top level: a nested `extra`
    # may repeat a field set beside it, and wins, so a partly understood object replays as is).
    present: dict[str, Any] = {}
    non_finite: list[FieldViolation] = []
    message_violations: list[FieldViolation] = []
    for field, value in request.ListFields():
        name = field.name
        present[name] = value
        if name == "messages":  # each message's own walk checks its numbers too, in the same place
            for i, message in enumerate(value):
                message_violations += _message_violations(f"messages[{i}]", message, non_finite)
        else:
            non_finite_field(non_finite, "", field, value)
    violations: list[FieldViolation] = []
    model = present.get("model", "")
    if not model:
        violations.append(("model", 'must not be empty: name the model to use, e.g. "gpt-4o"'))
    if len(model) > _MAX_MODEL_LENGTH:
        violations += too_long("model", model, _MAX_MODEL_LENGTH)
    if "task_id" in present:
        violations += too_long("task_id", present["task_id"], _MAX_TASK_ID_LENGTH)
    if "messages" not in present:
        violations.append(("messages", "must contain at least one message"))
    violations += message_violations
    for i, tool in enumerate(present.get("tools", ())):
        violations += _tool_violations(f"tools[{i}]", tool)
    if "tool_choice" in present:
        violations += _tool_choice_violations(present["tool_choice"])
    if "prediction" in present:
        violations += _prediction_violations(present["prediction"])
    if "stream_options" in present and not streaming:
        violations.append(("stream_options", _STREAM_ONLY))
    if "extra_body" in present:
        violations += _extra_body_violations(request, present, streaming=streaming)
    return violations + non_finite


def _set_names(message: Message, names: tuple[str, ...]) -> list[str]:
    """Those of the fields `names` that are set in `message` (a repeated field: when not empty)."""
    fields = message.DESCRIPTOR.fields_by_name
    return [
        name
        for name in names
        if (bool(getattr(message, name)) if fields[name].is_repeated else message.HasField(name))
    ]


def _one_of(path: str, message: Message, names: tuple[str, ...]) -> list[FieldViolation]:
    """Either/or fields (plain fields, not a oneof): a violation at the second one set, if any."""
    set_names = _set_names(message, names)
    if len(set_names) < 2:
        return []
    return [(f"{path}.{set_names[1]}", f"set only one of {', '.join(names)}")]


_CONTENT_FORMS: Final = ("content", "content_parts", "content_text")


def _message_violations(
    path: str, message: pb.ChatMessage, non_finite: list[FieldViolation]
) -> list[FieldViolation]:
    """The message's violations; its NaN or infinite numbers are added to `non_finite` on the way."""
    present: dict[str, Any] = {}
    prefix = f"{path}."
    for field, value in message.ListFields():
        present[field.name] = value
        non_finite_field(non_finite, prefix, field, value)
    violations: list[FieldViolation] = []
    if not present.get("role"):
        violations.append(
            (f"{path}.role", "must not be empty: use system, developer, user, assistant or tool")
        )
    forms = [name for name in _CONTENT_FORMS if name in present]
    if len(forms) > 1:  # as _one_of: at the second one set
        violations.append((f"{path}.{forms[1]}", f"set only one of {', '.join(_CONTENT_FORMS)}"))
    if "content" in present:
        violations += _content_violations(f"{path}.content", present["content"])
    for j, part in enumerate(present.get("content_parts", ())):
        if not part.type:
            violations.append((f"{path}.content_parts[{j}].type", "must not be empty: use text or image_url"))
    return violations


def _content_violations(path: str, content: struct_pb2.Value) -> list[FieldViolation]:
    kind = content.WhichOneof("kind")
    if kind in ("string_value", "null_value"):
        return []
    if kind != "list_value":
        return [(path, "must be a string, an array of content parts, or null")]
    violations: list[FieldViolation] = []
    for j, part in enumerate(content.list_value.values):
        type_ = part.struct_value.fields.get("type") if part.HasField("struct_value") else None
        if type_ is None or not type_.string_value:
            violations.append(
                (f"{path}[{j}]", 'must be an object with a string "type", e.g. {"type": "text"}')
            )
    return violations


def _tool_violations(path: str, tool: pb.Tool) -> list[FieldViolation]:
    both = _one_of(path, tool, _TOOL_BODIES)
    if both:
        return both
    if tool.HasField("custom") and tool.type != "custom":
        return [(f"{path}.type", 'must be "custom" when custom is set')]
    if tool.type == "custom":
        body, name = "custom", tool.custom.name
    elif tool.type in ("", "function"):
        body, name = "function", tool.function.name
    else:
        return []  # other tool types carry their settings in `extra`
    # A function or custom tool needs its name, typed or in the raw object `extra` sends instead.
    if not name and body not in tool.extra.fields:
        return [(f"{path}.{body}.name", "must not be empty")]
    if body != "function":
        return []
    violations: list[FieldViolation] = []
    if name and not _FUNCTION_NAME.fullmatch(name):
        violations.append((f"{path}.function.name", "must be 1 to 64 letters, digits, underscores or dashes"))
    if tool.function.HasField("parameters"):
        violations += _schema_violations(f"{path}.function.parameters", tool.function.parameters)
    return violations


def _schema_violations(path: str, schema: struct_pb2.Struct) -> list[FieldViolation]:
    """The JSON Schema of a function's arguments: always an object of named arguments (every provider
    calls a function with one), so what is plainly not that schema's shape is refused here."""
    fields = schema.fields
    violations: list[FieldViolation] = []
    kind = fields.get("type")
    if kind is not None and kind.WhichOneof("kind") != "list_value" and kind.string_value != "object":
        violations.append((f"{path}.type", f'must be "object" (the arguments), e.g. {_SCHEMA_EXAMPLE}'))
    properties = fields.get("properties")
    if properties is not None and properties.WhichOneof("kind") != "struct_value":
        violations.append((f"{path}.properties", "must be an object: argument name -> its JSON Schema"))
    required = fields.get("required")
    if required is not None and not (
        required.WhichOneof("kind") == "list_value"
        and all(item.WhichOneof("kind") == "string_value" for item in required.list_value.values)
    ):
        violations.append((f"{path}.required", "must be a list of argument names (strings)"))
    return violations


def _tool_choice_violations(choice: pb.ToolChoice) -> list[FieldViolation]:
    object_form = choice.type or _set_names(choice, _CHOICE_BODIES) or choice.HasField("extra")
    if choice.mode and object_form:
        return [("tool_choice", "set either mode or the object form (type, function, custom, ...), not both")]
    if not choice.mode and not choice.type:
        return [("tool_choice", 'set mode ("auto", "none", "required") or type + function')]
    violations = _one_of("tool_choice", choice, _CHOICE_BODIES)
    for i, tool in enumerate(choice.allowed_tools.tools):
        violations += _tool_violations(f"tool_choice.allowed_tools.tools[{i}]", tool)
    return violations


def _prediction_violations(prediction: pb.Prediction) -> list[FieldViolation]:
    violations = _one_of("prediction", prediction, ("content", "content_text"))
    if prediction.HasField("content"):
        violations += _content_violations("prediction.content", prediction.content)
    return violations


_RESERVED_STREAMING: Final = {"stream": "is decided by the RPC (StreamChatCompletion streams)"}
_RESERVED_UNARY: Final = {**_RESERVED_STREAMING, "stream_options": _STREAM_ONLY}


def _extra_body_violations(
    request: pb.CreateChatCompletionRequest, set_fields: Collection[str], *, streaming: bool
) -> list[FieldViolation]:
    return extra_body_violations(request, _RESERVED_STREAMING if streaming else _RESERVED_UNARY, set_fields)
