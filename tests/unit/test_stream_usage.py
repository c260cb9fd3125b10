"""bridge.chat.usage: the usage the bridge asks for is taken out of every shape an upstream sends it in."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.chat.usage import ask_for_usage, without_usage

USAGE = {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def _chunk(choices: Any, **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices, **extra}


def _delta(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


@pytest.mark.parametrize(
    ("body", "added", "options"),
    [
        ({}, True, {"include_usage": True}),
        ({"stream_options": {"include_usage": False}}, True, {"include_usage": True}),
        (
            {"stream_options": {"continuous_usage_stats": True}},
            True,
            {"continuous_usage_stats": True, "include_usage": True},
        ),
        ({"stream_options": {"include_usage": True}}, False, {"include_usage": True}),
    ],
)
def test_asks_for_usage_unless_the_caller_did(body: dict[str, Any], added: bool, options: Any) -> None:
    assert ask_for_usage(body) is added
    assert body["stream_options"] == options


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(_chunk([], usage=USAGE), id="openai-no-choices"),
        pytest.param(_chunk([{"index": 0, "delta": {}}], usage=USAGE), id="litellm-empty-choice"),
        pytest.param(_chunk([_delta({"content": None, "role": None})], usage=USAGE), id="all-null-choice"),
        pytest.param(_chunk(None, usage=USAGE), id="null-choices"),
        pytest.param({"id": "c1", "usage": USAGE}, id="no-choices-key"),
    ],
)
def test_a_chunk_there_only_for_the_usage_is_dropped(chunk: dict[str, Any]) -> None:
    assert without_usage(chunk) is None


@pytest.mark.parametrize(
    "choice",
    [
        pytest.param(_delta({"content": "word "}), id="content"),
        pytest.param(_delta({"content": ""}), id="empty-content"),
        pytest.param(_delta({"role": "assistant"}), id="role"),
        pytest.param(_delta({}, "stop"), id="finish"),
        pytest.param(_delta({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}), id="tool-call"),
        pytest.param({**_delta({}), "logprobs": {"content": []}}, id="logprobs"),
    ],
)
def test_a_chunk_carrying_anything_else_keeps_it_and_loses_the_usage(choice: dict[str, Any]) -> None:
    chunk = _chunk([choice], usage=USAGE)
    assert without_usage(chunk) == _chunk([choice])


@pytest.mark.parametrize("usage", [None, "absent"])
def test_a_chunk_without_usage_is_the_same_without_the_null(usage: Any) -> None:
    chunk = (
        _chunk([_delta({"content": "x"})])
        if usage == "absent"
        else _chunk([_delta({"content": "x"})], usage=None)
    )
    assert without_usage(chunk) == _chunk([_delta({"content": "x"})])
    # an empty chunk without usage is the upstream's own (Azure's filter results): kept
    azure = _chunk([], prompt_filter_results=[])
    assert without_usage(dict(azure)) == azure


def test_choices_not_understood_are_kept_for_the_conversion_to_report() -> None:
    assert without_usage(_chunk("nonsense", usage=USAGE)) == _chunk("nonsense")
    assert without_usage(_chunk(["nonsense"], usage=USAGE)) == _chunk(["nonsense"])
