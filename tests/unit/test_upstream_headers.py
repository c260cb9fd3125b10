"""Reply headers are the upstream's bytes: reading one never raises, an id is sanitised before anything sees
it, and a value gRPC metadata cannot carry is dropped (named, so it is counted), never failing the call."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.http.redirect import redirect_error
from bridge.upstream.errors import error_from_http_response
from bridge.upstream.headers import (
    MAX_RETURNED_BYTES,
    MAX_RETURNED_VALUE_BYTES,
    RETURNED_HEADERS,
    HeaderPolicy,
    ReplyMetadata,
    _within_bounds,
    correlation_id,
    reply_metadata,
    retry_delay,
)
from tests.helpers import rich_status


def test_printable_ascii_values_are_returned_in_the_order_of_the_returned_names() -> None:
    headers = {"X-Request-Id": "r-1", "x-ratelimit-remaining-requests": "99", "content-type": "x"}
    reply = reply_metadata(headers)
    assert reply.metadata == (("x-request-id", "r-1"), ("x-ratelimit-remaining-requests", "99"))
    assert reply.dropped == ()


@pytest.mark.parametrize(
    "value",
    ["r\udce9q-1", "réq-1", "a\x1bb", "tab\there", "x" * (MAX_RETURNED_VALUE_BYTES + 1)],
    ids=["surrogate-escaped-byte", "utf-8", "escape", "tab", "too-long"],
)
def test_a_value_grpc_cannot_carry_is_dropped_and_named(value: str) -> None:
    reply = reply_metadata({"x-request-id": value, "x-ratelimit-limit-requests": "100"})
    assert reply.metadata == (("x-ratelimit-limit-requests", "100"),)
    assert reply.dropped == ("x-request-id",)


def test_all_returned_values_together_stay_within_the_budget() -> None:
    headers = dict.fromkeys(RETURNED_HEADERS, "v" * MAX_RETURNED_VALUE_BYTES)
    reply = reply_metadata(headers)
    assert sum(len(name) + len(value) for name, value in reply.metadata) <= MAX_RETURNED_BYTES
    assert len(reply.metadata) == 3
    assert reply.dropped == RETURNED_HEADERS[3:]


@pytest.mark.parametrize(
    ("value", "named"),
    [("r\udce9q-1", r"r\xe9q-1"), ("a\x1b[31mRED", r"a\x1b[31mRED"), ("iak_acme_key-1", "[REDACTED]")],
)
def test_the_correlation_id_is_sanitised_where_it_is_read(value: str, named: str) -> None:
    assert correlation_id({"x-correlation-id": value}) == named


def test_an_id_that_sanitises_to_nothing_gives_way_to_the_next_header() -> None:
    assert correlation_id({"x-correlation-id": "  ", "x-request-id": "r-2"}) == "r-2"


# Header values as an HTTP/1.1 client library hands them over: any byte a parser accepts in a value (obs-text
# included), decoded as aiohttp does (UTF-8, surrogate escapes for the rest) or as httpx does (Latin-1).
_RAW_VALUES = st.binary(max_size=300).filter(lambda raw: b"\r" not in raw and b"\n" not in raw)
_VALUES = _RAW_VALUES.map(lambda raw: raw.decode("utf-8", "surrogateescape")) | _RAW_VALUES.map(
    lambda raw: raw.decode("latin-1")
)
_NAMES = st.sampled_from(
    [*RETURNED_HEADERS, "retry-after", "retry-after-ms", "llm_provider-retry-after", "location", "x-other"]
)
_HEADERS = st.dictionaries(_NAMES, _VALUES, max_size=12)


def _reply_metadata_by_lookups(headers: list[tuple[str, str]], returned: tuple[str, ...]) -> ReplyMetadata:
    """The former reply_metadata (a lookup per returned name in the lower-cased headers, then the general
    path's bounds), as the reference for the one-pass one and its fast path."""
    lowered = {name.lower(): value for name, value in headers}
    return _within_bounds([(name, value) for name in returned if (value := lowered.get(name)) is not None])


_CASED_NAMES = _NAMES.flatmap(lambda name: st.sampled_from([name, name.upper(), name.title()]))
_SHORT_VALUES = st.sampled_from(["r-1", "", " spaced ", "a\x1bb", "réq", "v" * 900, "x" * 1100])
_RETURNED = st.lists(st.sampled_from([*RETURNED_HEADERS, "x-other", "location"]), unique=True).map(tuple)


@given(
    headers=st.lists(st.tuples(_CASED_NAMES, _VALUES | _SHORT_VALUES), max_size=14),
    returned=_RETURNED | st.just(RETURNED_HEADERS),
)
def test_reply_metadata_in_one_pass_equals_a_lookup_per_returned_name(
    headers: list[tuple[str, str]], returned: tuple[str, ...]
) -> None:
    # Any case, repeated headers (the last value counts), values dropped or over the budget, any order.
    expected = _reply_metadata_by_lookups(headers, returned)
    assert HeaderPolicy(returned=returned).reply_metadata(_MultiHeaders(headers)) == expected
    assert reply_metadata(_MultiHeaders(headers), returned) == expected


class _MultiHeaders(dict[str, str]):
    """Reply headers that may repeat a name (as aiohttp's CIMultiDictProxy), iterated in their order."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        super().__init__(items)
        self._items = items

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return self._items


def test_a_header_named_twice_in_returned_comes_back_once() -> None:
    reply = HeaderPolicy(returned=("x-a", "x-request-id", "x-a")).reply_metadata(
        {"X-A": "1", "x-request-id": "r"}
    )
    assert reply == ReplyMetadata((("x-a", "1"), ("x-request-id", "r")))


def test_no_returned_names_returns_nothing() -> None:
    assert HeaderPolicy(returned=()).reply_metadata({"x-request-id": "r-1"}) == ReplyMetadata(())


@given(headers=_HEADERS, status=st.integers(100, 999))
def test_reading_any_reply_headers_never_raises_and_every_status_can_be_sent(
    headers: dict[str, str], status: int
) -> None:
    reply = reply_metadata(headers)
    for _, value in reply.metadata:
        assert value.isascii()
        assert value.isprintable()
    retry_delay(headers)
    request_id = correlation_id(headers)
    assert request_id is None or (request_id.isascii() and request_id.isprintable())
    if 300 <= status < 400:
        error = redirect_error(
            status, headers, url="http://gw/v1/chat/completions", path="/chat/completions", host="gw",
            correlation_id=request_id,
        )  # fmt: skip
    else:
        error = error_from_http_response(status, headers, b'{"error": {"message": "x"}}', host="gw")
    status_sent = error.to_status()  # grpc core refuses a trailer that is not printable ASCII
    for _, value in status_sent.trailing_metadata:
        assert isinstance(value, bytes) or (value.isascii() and value.isprintable())
    rich_status(error)  # and the details decode
