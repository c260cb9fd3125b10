"""Fast JSON for the hot path (pure, no IO): orjson where it gives the same result as the standard library,
the standard library where it does not.

`loads` is `json.loads` for every input: orjson parses what it can (every valid JSON document without
NaN/Infinity literals or nesting beyond its limit, and without a run of 19 digits: orjson reads integers
beyond 64 bits as floats, so such a document, rare, goes to `json.loads`), and whatever it refuses is
handed to `json.loads`, which then returns its own result or raises its own error (ValueError,
UnicodeDecodeError, RecursionError), so callers see the standard library's behaviour, at orjson's speed on
ordinary documents. `dumps` writes compact UTF-8 JSON as `json.dumps(obj, ensure_ascii=False,
separators=(",", ":")).encode()` does, the same document: equal once parsed, and the same bytes except
for how some floats are spelt (orjson writes 1e-7 and 0.000015 where json writes 1e-07 and 1.5e-05, the
same numbers); anything orjson refuses (an integer beyond 64 bits, a NaN) goes through `json.dumps`.
tests/unit/test_jsoncodec.py checks both against the standard library, with hypothesis.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

__all__ = ["dumps", "loads"]

_loads: Final = orjson.loads
_dumps: Final = orjson.dumps
_DecodeError: Final = orjson.JSONDecodeError
_EncodeError: Final = orjson.JSONEncodeError
# 19 ASCII digits in a row: maybe an integer beyond 64 bits (orjson would make it a float), maybe a
# string's. Found by mapping every digit to "0" and searching for the run: a tenth of a regex's time.
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN: Final = b"0" * 19


def loads(data: bytes | str) -> Any:
    """`json.loads(data)`."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    # No long digit run (in line: once per chunk; `find`, as `in` first tries a bytes operand as an int
    # and the TypeError it makes and clears costs more than the search).
    if raw.translate(_DIGITS_TO_ZERO).find(_LONG_RUN) < 0:
        try:
            return _loads(raw)  # a str with a lone surrogate is not UTF-8: refused, then json.loads
        except _DecodeError:
            pass
    return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of `obj`: the document `json.dumps(obj, ensure_ascii=False, separators=(",", ":"))`
    writes (float spellings aside)."""
    try:
        # A copy to its size: orjson leaves its whole output buffer (4 KiB) allocated under a short bytes
        # object, and a stream's request body is held for the stream's life (bench/idle_memory.py).
        return memoryview(_dumps(obj)).tobytes()
    except _EncodeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
