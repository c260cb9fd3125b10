"""bridge.upstream.usage: token counts and cost read defensively (they feed counters, which only go up)."""

from __future__ import annotations

import pytest

from bridge.upstream.usage import Usage, usage_of


def test_usage_of_a_reply() -> None:
    doc = {"usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42, "cost": 0.0021}}
    assert usage_of(doc) == Usage(12, 30, 0.0021)


@pytest.mark.parametrize("doc", [{}, {"usage": None}, {"usage": "12"}, {"usage": [1, 2]}])
def test_no_usage(doc: dict[str, object]) -> None:
    assert usage_of(doc) is None


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 3}, Usage(3, None, None)),
        ({"prompt_tokens": -1, "completion_tokens": True, "cost": -0.5}, Usage(None, None, None)),
        ({"prompt_tokens": 2.5, "completion_tokens": "7", "cost": "0.1"}, Usage(None, None, None)),
        ({"cost": float("nan")}, Usage(None, None, None)),
        ({"cost": float("inf")}, Usage(None, None, None)),
        ({"cost": 2, "completion_tokens": 0}, Usage(None, 0, 2.0)),
    ],
)
def test_values_of_the_wrong_type_sign_or_finiteness_are_absent(
    usage: dict[str, object], expected: Usage
) -> None:
    assert usage_of({"usage": usage}) == expected
