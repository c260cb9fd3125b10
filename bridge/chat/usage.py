"""A stream's usage when the caller did not ask for it (pure, no IO).

The token metrics count every finished stream, so the bridge asks the upstream for the usage
(`stream_options.include_usage`) when the caller did not, and takes it out of each chunk before the
chunk reaches the caller: the caller's stream is what the upstream sends without the option, whatever
shape the usage came in.

Shapes seen: OpenAI's and the gateway's usage-only chunk (`"choices": []`) before `[DONE]`, with
`"usage": null` on every other chunk; LiteLLM's usage chunk with one empty choice
(`[{"index": 0, "delta": {}}]`); usage on the last content or finish chunk; usage on every chunk
(vLLM's `continuous_usage_stats`, cumulative: the last one counts); an upstream that ignores the option
(nothing to take out, nothing counted).
"""

from __future__ import annotations

from typing import Any

from bridge.http.client import JSONObject

__all__ = ["ask_for_usage", "carries_nothing", "without_usage"]


def ask_for_usage(body: dict[str, Any]) -> bool:
    """Sets `stream_options.include_usage` in the upstream `body` when the caller did not; True if the
    bridge added it (its usage must then be taken out of the reply: `without_usage`)."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    body["stream_options"] = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return True


def without_usage(chunk: JSONObject) -> JSONObject | None:
    """`chunk` as the upstream sends it without `include_usage`: its `usage` key removed (in place; a
    null one too), or None for a chunk that exists only to carry the usage (no choice carrying
    anything). A chunk that carried content, a role, a tool call or a finish reason is kept."""
    if chunk.pop("usage", None) is None:
        return chunk
    return None if carries_nothing(chunk) else chunk


def carries_nothing(chunk: JSONObject) -> bool:
    """Whether `chunk`, its usage taken out, carries nothing for the caller (no choice carrying
    anything): a chunk that exists only for the usage (`without_usage` returns None for it)."""
    choices = chunk.get("choices")
    if choices is None:
        return True
    if not isinstance(choices, list):
        return False  # not understood: kept, so the conversion reports it
    return all(isinstance(choice, dict) and _empty_choice(choice) for choice in choices)


def _empty_choice(choice: JSONObject) -> bool:
    """A choice with nothing but its index: every other value null, or an empty (or all-null) delta."""
    for key, value in choice.items():
        if key == "index" or value is None:
            continue
        if key == "delta" and isinstance(value, dict) and all(v is None for v in value.values()):
            continue
        return False
    return True
