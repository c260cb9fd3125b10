"""The accumulator on the shared vectors (clients/testdata/accumulator), and its finer points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from prisme.llmgateway.client import StreamAccumulator, accumulate
from prisme.llmgateway.v1 import chat_completion_pb2 as pb

VECTORS = Path(__file__).resolve().parents[2] / "testdata" / "accumulator"


def _vectors() -> list[Path]:
    paths = sorted(VECTORS.glob("*.json"))
    assert len(paths) >= 10, f"accumulator vectors missing under {VECTORS}"
    return paths


def _load(path: Path) -> tuple[list[pb.StreamChatCompletionResponse], pb.CreateChatCompletionResponse]:
    vector: dict[str, Any] = json.loads(path.read_text())
    chunks = [json_format.ParseDict(c, pb.StreamChatCompletionResponse()) for c in vector["chunks"]]
    return chunks, json_format.ParseDict(vector["expected"], pb.CreateChatCompletionResponse())


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: p.stem)
def test_vector(path: Path) -> None:
    chunks, expected = _load(path)
    got = accumulate(chunks)
    assert json_format.MessageToDict(got) == json_format.MessageToDict(expected)
    assert got == expected  # field presence too (an unset content is not "")


def test_response_is_a_snapshot_and_grows() -> None:
    chunks, expected = _load(VECTORS / "content.json")
    accumulator = StreamAccumulator()
    for chunk in chunks[:3]:
        accumulator.add(chunk)
    partial = accumulator.response()
    assert partial.choices[0].message.content == "The quick"
    assert not partial.HasField("usage")
    for chunk in chunks[3:]:
        accumulator.add(chunk)
    assert partial.choices[0].message.content == "The quick"  # not mutated by later chunks
    assert accumulator.response() == expected
    assert accumulator.chunks == len(chunks)


def test_repeated_id_and_name_are_not_concatenated() -> None:
    # Some servers repeat id and name in every fragment of a tool call.
    fragment = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    chunk = json_format.ParseDict(
        {"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]}, pb.StreamChatCompletionResponse()
    )
    call = accumulate([chunk, chunk]).choices[0].message.tool_calls[0]
    assert (call.id, call.type, call.function.name, call.function.arguments) == (
        "call_1",
        "function",
        "f",
        "{}{}",
    )


def test_chunk_extra_keeps_all_but_obfuscation() -> None:
    chunk = json_format.ParseDict(
        {"extra": {"obfuscation": "pad", "x_provider": {"a": 1}}}, pb.StreamChatCompletionResponse()
    )
    assert json_format.MessageToDict(accumulate([chunk]).extra) == {"x_provider": {"a": 1}}
