"""bridge.jsoncodec: orjson where it agrees with the standard library, the standard library elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import jsoncodec

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits too: orjson refuses those
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
)
NO_FLOATS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.text()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
)


def _outcome(parse: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", parse(data)
    except Exception as exc:  # the kind of error is what must agree
        return type(exc).__name__, None


@settings(max_examples=300)
@given(value=JSON_VALUES)
def test_loads_equals_json_loads_on_any_document(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert jsoncodec.loads(text) == json.loads(text)
    assert jsoncodec.loads(text.encode()) == json.loads(text.encode())


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=40), st.text(max_size=40)))
def test_loads_equals_json_loads_on_any_input_errors_included(data: bytes | str) -> None:
    assert _outcome(jsoncodec.loads, data) == _outcome(json.loads, data)


@pytest.mark.parametrize(
    "data",
    [
        b"NaN",
        b"[Infinity, -Infinity]",
        b"1" * 30,
        b"[" * 2000 + b"]" * 2000,
        b'{"a": 1, "a": 2}',
        b"\xff",
        b"",
    ],
)
def test_loads_answers_as_json_loads_where_orjson_refuses(data: bytes) -> None:
    expected = _outcome(json.loads, data)
    got = _outcome(jsoncodec.loads, data)
    assert got[0] == expected[0]
    if expected[0] == "ok":
        assert json.dumps(got[1]) == json.dumps(expected[1])  # NaN != NaN: compare their spelling


@settings(max_examples=300)
@given(value=JSON_VALUES)
def test_dumps_writes_the_same_document(value: Any) -> None:
    assert json.loads(jsoncodec.dumps(value)) == value


@settings(max_examples=300)
@given(value=NO_FLOATS)
def test_dumps_without_floats_writes_the_same_bytes(value: Any) -> None:
    assert jsoncodec.dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
