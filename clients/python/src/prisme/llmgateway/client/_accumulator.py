"""Folds the chunks of StreamChatCompletion into the CreateChatCompletionResponse a unary call returns.

The rules (the same in the Go and Java clients, checked by the shared vectors in clients/testdata):
- Identity fields (id, created, model, system_fingerprint, service_tier; a message's role; a tool call's
  id and type, the name of its function or custom tool) keep their first non-empty value, so Azure's
  empty first chunk and providers that repeat an id do no harm. `object` is "chat.completion".
- Text fields (content, refusal, reasoning_content; a function's arguments, a custom tool call's input)
  are the concatenation of their fragments, and set as soon as one fragment set them, even to "" (a
  tool-call-only answer keeps an unset content, as the unary reply does).
- Choices are merged by `index` and tool calls by their own `index`; both lists come out in index order,
  whatever index they start at. A tool call has the `function` and/or `custom` object its fragments
  carried; without a type it is "custom" if they carried only `custom`, else "function"; a "function"
  call always has its function object and a "custom" call its custom object, as in a unary reply.
- finish_reason and usage: the last value wins (usage whole, token details included). Logprobs entries
  are appended in order.
- `extra` objects (of the chunk, choice, delta, tool call, function, custom tool call and logprobs) are
  merged key by key into the same level of the reply, a later value winning; a chunk's `obfuscation`
  (random padding of each chunk) is dropped. Delta keys without a typed field, such as `annotations` or
  `audio`, thus stay in the message's `extra`.
- Defaults a unary reply always has: role "assistant".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from google.protobuf import struct_pb2

from prisme.llmgateway.v1 import chat_completion_pb2 as pb

__all__ = ["STREAM_ONLY_KEYS", "StreamAccumulator", "accumulate"]

# Delta fields appended fragment by fragment into the message field of the same name. A new text field of
# ChatCompletionDelta (and ChatCompletionMessage) only needs its name here.
TEXT_FIELDS: Final = ("content", "refusal", "reasoning_content")
# Chunk-level extra keys that mean nothing once the chunks are folded.
STREAM_ONLY_KEYS: Final = frozenset({"obfuscation"})


def _merge_struct(
    target: struct_pb2.Struct, source: struct_pb2.Struct, drop: frozenset[str] = frozenset()
) -> None:
    for key, value in source.fields.items():
        if key not in drop:
            target.fields[key].CopyFrom(value)


@dataclass
class _Part:
    """A tool call's `function` or `custom` object: its name, its text (`arguments` or `input`) and extra."""

    text_field: str
    seen: bool = False  # some fragment carried this object
    name: str = ""
    pieces: list[str] = field(default_factory=list)
    extra: struct_pb2.Struct = field(default_factory=struct_pb2.Struct)

    def add(self, fragment: pb.FunctionCallDelta | pb.CustomToolCallDelta) -> None:
        self.seen = True
        self.name = self.name or fragment.name
        self.pieces.append(getattr(fragment, self.text_field))
        _merge_struct(self.extra, fragment.extra)

    def build(self, target: pb.FunctionCall | pb.CustomToolCall) -> None:
        target.name = self.name
        setattr(target, self.text_field, "".join(self.pieces))
        target.SetInParent()  # present even when empty, as in a unary reply
        if self.extra.fields:
            target.extra.CopyFrom(self.extra)


@dataclass
class _ToolCall:
    id: str = ""
    type: str = ""
    function: _Part = field(default_factory=lambda: _Part("arguments"))
    custom: _Part = field(default_factory=lambda: _Part("input"))
    extra: struct_pb2.Struct = field(default_factory=struct_pb2.Struct)

    def add(self, delta: pb.ToolCallDelta) -> None:
        self.id = self.id or delta.id
        self.type = self.type or delta.type
        if delta.HasField("function"):
            self.function.add(delta.function)
        if delta.HasField("custom"):
            self.custom.add(delta.custom)
        _merge_struct(self.extra, delta.extra)

    def build(self) -> pb.ToolCall:
        kind = self.type or ("custom" if self.custom.seen and not self.function.seen else "function")
        call = pb.ToolCall(id=self.id, type=kind)
        if self.function.seen or kind != "custom":
            self.function.build(call.function)
        if self.custom.seen or kind == "custom":
            self.custom.build(call.custom)
        if self.extra.fields:
            call.extra.CopyFrom(self.extra)
        return call


@dataclass
class _Choice:
    index: int
    role: str = ""
    texts: dict[str, list[str]] = field(default_factory=dict)  # only the fields some fragment set
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str = ""
    logprobs: pb.ChoiceLogprobs | None = None
    extra: struct_pb2.Struct = field(default_factory=struct_pb2.Struct)
    message_extra: struct_pb2.Struct = field(default_factory=struct_pb2.Struct)

    def add(self, choice: pb.ChatCompletionChunkChoice) -> None:
        delta = choice.delta
        self.role = self.role or delta.role
        for name in TEXT_FIELDS:
            if delta.HasField(name):
                self.texts.setdefault(name, []).append(getattr(delta, name))
        for fragment in delta.tool_calls:
            self.tool_calls.setdefault(fragment.index, _ToolCall()).add(fragment)
        _merge_struct(self.message_extra, delta.extra)
        self.finish_reason = choice.finish_reason or self.finish_reason
        if choice.HasField("logprobs"):
            if self.logprobs is None:
                self.logprobs = pb.ChoiceLogprobs()
            self.logprobs.content.extend(choice.logprobs.content)
            self.logprobs.refusal.extend(choice.logprobs.refusal)
            _merge_struct(self.logprobs.extra, choice.logprobs.extra)
        _merge_struct(self.extra, choice.extra)

    def build(self) -> pb.ChatCompletionChoice:
        message = pb.ChatCompletionMessage(role=self.role or "assistant")
        for name, parts in self.texts.items():
            setattr(message, name, "".join(parts))
        message.tool_calls.extend(self.tool_calls[i].build() for i in sorted(self.tool_calls))
        if self.message_extra.fields:
            message.extra.CopyFrom(self.message_extra)
        choice = pb.ChatCompletionChoice(index=self.index, message=message, finish_reason=self.finish_reason)
        if self.logprobs is not None:
            choice.logprobs.CopyFrom(self.logprobs)
        if self.extra.fields:
            choice.extra.CopyFrom(self.extra)
        return choice


class StreamAccumulator:
    """Folds StreamChatCompletionResponse chunks, in order, into a CreateChatCompletionResponse.

    >>> acc = StreamAccumulator()
    >>> for chunk in stream:        # doctest: +SKIP
    ...     acc.add(chunk)
    >>> acc.response().choices[0].message.content  # doctest: +SKIP

    Ask for `stream_options.include_usage` to get the usage a unary reply carries.
    """

    def __init__(self) -> None:
        self._head = pb.CreateChatCompletionResponse(object="chat.completion")
        self._choices: dict[int, _Choice] = {}
        self._usage: pb.Usage | None = None
        self._chunks = 0

    @property
    def chunks(self) -> int:
        """How many chunks were added."""
        return self._chunks

    def add(self, chunk: pb.StreamChatCompletionResponse) -> None:
        """Folds one chunk in."""
        self._chunks += 1
        head = self._head
        head.id = head.id or chunk.id
        head.created = head.created or chunk.created
        head.model = head.model or chunk.model
        for name in ("system_fingerprint", "service_tier"):
            if not head.HasField(name) and getattr(chunk, name):
                setattr(head, name, getattr(chunk, name))
        _merge_struct(head.extra, chunk.extra, STREAM_ONLY_KEYS)
        if chunk.HasField("usage"):
            self._usage = chunk.usage
        for choice in chunk.choices:
            self._choices.setdefault(choice.index, _Choice(choice.index)).add(choice)

    def response(self) -> pb.CreateChatCompletionResponse:
        """The message folded so far (a new message on every call)."""
        response = pb.CreateChatCompletionResponse()
        response.CopyFrom(self._head)
        if not response.extra.fields:
            response.ClearField("extra")
        response.choices.extend(self._choices[i].build() for i in sorted(self._choices))
        if self._usage is not None:
            response.usage.CopyFrom(self._usage)
        return response


def accumulate(chunks: Iterable[pb.StreamChatCompletionResponse]) -> pb.CreateChatCompletionResponse:
    """Folds a whole stream (any iterable of chunks, e.g. a ChatStream) into one response."""
    accumulator = StreamAccumulator()
    for chunk in chunks:
        accumulator.add(chunk)
    return accumulator.response()
