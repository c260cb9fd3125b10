"""The `usage` object of an OpenAI-compatible reply or stream chunk, read defensively (pure).

Token counts and the gateway's `usage.cost` feed counters, which only go up: a value of the wrong type,
negative or not finite is treated as absent rather than trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Usage", "usage_of"]


@dataclass(frozen=True, slots=True)
class Usage:
    """What an upstream reported spending on a request; None where it said nothing usable."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None


def usage_of(document: Mapping[str, Any]) -> Usage | None:
    """The usage `document` (a reply or a chunk) carries, or None (absent, null, or not an object)."""
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), _amount(usage))


def _count(value: Any) -> int | None:
    # bool is an int to Python, not to JSON.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _amount(usage: Mapping[str, Any]) -> float | None:
    value = usage.get("cost")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None
