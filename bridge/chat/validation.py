"""Pure checks of a chat completion request before anything is sent upstream.

Only what is plainly wrong whatever the upstream is (missing model, no messages, an empty role, shapes the
JSON body cannot express) is rejected here; value ranges are the upstream's call, and its 400 reaches the
caller as INVALID_ARGUMENT anyway. Field paths follow AIP-193 style: `messages[2].content`.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from bridge.errors import FieldViolation
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb

__all__ = ["validate_request"]

_RESERVED_EXTRA_KEYS = frozenset({"stream"})
_FREE_JSON = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
_NOT_FINITE = "must be a finite number"


def validate_request(request: pb.CreateChatCompletionRequest, *, streaming: bool) -> list[FieldViolation]:
    """Every violation in `request` (empty when it may be sent upstream)."""
    violations: list[FieldViolation] = []
    if not request.model:
        violations.append(("model", 'must not be empty: name the model to use, e.g. "gpt-4o"'))
    if not request.messages:
        violations.append(("messages", "must contain at least one message"))
    for i, message in enumerate(request.messages):
        violations += _message_violations(f"messages[{i}]", message)
    for i, tool in enumerate(request.tools):
        # Other tool types carry their settings in `extra`; a function needs its name.
        if tool.type in ("", "function") and not tool.function.name:
            violations.append((f"tools[{i}].function.name", "must not be empty"))
    if request.HasField("tool_choice"):
        violations += _tool_choice_violations(request.tool_choice)
    if request.HasField("stream_options") and not streaming:
        violations.append(("stream_options", "is only valid on StreamChatCompletion; remove it"))
    violations += _extra_body_violations(request, streaming=streaming)
    violations += _nested_violations("", request)
    return violations


def _message_violations(path: str, message: pb.ChatMessage) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not message.role:
        violations.append(
            (f"{path}.role", "must not be empty: use system, developer, user, assistant or tool")
        )
    if message.HasField("content") and message.content_parts:
        violations.append((f"{path}.content_parts", "set either content or content_parts, not both"))
    if message.HasField("content"):
        violations += _content_violations(f"{path}.content", message.content)
    for j, part in enumerate(message.content_parts):
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


def _tool_choice_violations(choice: pb.ToolChoice) -> list[FieldViolation]:
    if choice.mode and (choice.type or choice.HasField("function") or choice.HasField("extra")):
        return [("tool_choice", "set either mode or the object form (type, function, extra), not both")]
    if not choice.mode and not choice.type:
        return [("tool_choice", 'set mode ("auto", "none", "required") or type + function')]
    return []


def _extra_body_violations(
    request: pb.CreateChatCompletionRequest, *, streaming: bool
) -> list[FieldViolation]:
    # At the top level a repeated field is rejected, not overridden: nothing fills extra_body for the
    # caller, so a duplicate there is a mistake (unlike a nested `extra`, see _nested_violations).
    set_fields = {field.name for field, _ in request.ListFields()} - {"extra_body"}
    violations: list[FieldViolation] = []
    for key in sorted(request.extra_body.fields):
        if key in _RESERVED_EXTRA_KEYS:
            violations.append((f"extra_body.{key}", "is decided by the RPC (StreamChatCompletion streams)"))
        elif key == "stream_options" and not streaming:
            violations.append((f"extra_body.{key}", "is only valid on StreamChatCompletion; remove it"))
        elif key in set_fields:
            violations.append((f"extra_body.{key}", f"duplicates the field {key}; set it in one place"))
    return violations


def _nested_violations(path: str, message: Message) -> list[FieldViolation]:
    """NaN or infinite numbers (JSON has none) anywhere below `message`.

    A nested `extra` may repeat a field set beside it, and wins: a received object that was only partly
    understood (its typed fields filled as far as they fit, the original kept in `extra`) replays as is.
    """
    violations: list[FieldViolation] = []
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        kind = field.message_type
        if kind is None:
            if isinstance(value, float) and not math.isfinite(value):
                violations.append((where, _NOT_FINITE))
        elif kind.GetOptions().map_entry:
            violations += [(f"{where}[{k}]", _NOT_FINITE) for k, v in value.items() if not _finite(v)]
        elif kind.full_name in _FREE_JSON:
            if not _finite(value):
                violations.append((where, "contains a NaN or infinite number, which JSON cannot carry"))
        elif field.is_repeated:
            for i, item in enumerate(value):
                violations += _nested_violations(f"{where}[{i}].", item)
        else:
            violations += _nested_violations(f"{where}.", value)
    return violations


def _finite(value: Any) -> bool:
    """False if a number in `value` (a float, Struct, Value or ListValue) is NaN or infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, struct_pb2.Struct):
        return all(_finite(v) for v in value.fields.values())
    if isinstance(value, struct_pb2.ListValue):
        return all(_finite(v) for v in value.values)
    if isinstance(value, struct_pb2.Value):
        kind = value.WhichOneof("kind")
        return kind not in ("number_value", "struct_value", "list_value") or _finite(getattr(value, kind))
    return True
