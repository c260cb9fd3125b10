"""Tests for bridge.sse: WHATWG event-stream interpretation on bytes.

Every vector goes through ``_decode_all_ways``: whole, byte by byte and at seeded random split
points, and all feedings must agree before the result is compared.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.http.sse import ServerSentEvent, SSEDecoder, SSEError, SSEEventTooLarge

E = ServerSentEvent
Outcome = tuple[list[ServerSentEvent], bool]

_SEEDS = range(5)


def _decode_chunks(chunks: Iterable[bytes], **kwargs: Any) -> Outcome:
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events, decoder.finish()


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _random_chunks(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, 5, 8, 13))
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def _chunkings(data: bytes) -> list[list[bytes]]:
    return [[data], _bytewise(data), *(_random_chunks(data, seed) for seed in _SEEDS)]


def _decode_all_ways(data: bytes, **kwargs: Any) -> Outcome:
    outcomes = [_decode_chunks(chunks, **kwargs) for chunks in _chunkings(data)]
    for outcome in outcomes[1:]:
        assert outcome == outcomes[0]
    return outcomes[0]


Vector = tuple[bytes, list[ServerSentEvent], bool]


def _check(vector: Vector) -> None:
    data, events, clean = vector
    assert _decode_all_ways(data) == (events, clean)


def _params(table: dict[str, Vector]) -> list[Any]:
    return [pytest.param(vector, id=name) for name, vector in table.items()]


# --------------------------------------------------------------------------- vectors

LINE_ENDS: dict[str, Vector] = {
    "lf": (b"data: a\n\ndata: b\n\n", [E("a"), E("b")], True),
    "cr": (b"data: a\r\rdata: b\r\r", [E("a"), E("b")], True),
    "crlf": (b"data: a\r\n\r\ndata: b\r\n\r\n", [E("a"), E("b")], True),
    "mixed": (b"data: a\r\ndata: b\rdata: c\n\r\n", [E("a\nb\nc")], True),
    # LF then CR is two line ends (the CR is a blank line), unlike CRLF.
    "lf-cr-is-two": (b"data: a\n\rdata: b\n\n", [E("a"), E("b")], True),
    # wpt eventsource/format-newlines
    "wpt-newlines": (b"data:test\r\ndata\ndata:test\r\n\r", [E("test\n\ntest")], True),
}

BOM: dict[str, Vector] = {
    "leading": (b"\xef\xbb\xbfdata: a\n\n", [E("a")], True),
    # wpt eventsource/format-bom: only the first BOM is stripped; the second one becomes
    # part of the field name "\ufeffdata", which is unknown.
    "wpt-bom": (b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n", [E("1"), E("3")], True),
    "wpt-bom-2": (b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3\n\n", [E("2"), E("3")], True),
    "not-after-first-line": (b"\n\xef\xbb\xbfdata: a\n\n", [], True),
    "kept-in-data": (b"\xef\xbb\xbfdata: \xef\xbb\xbfx\n\n", [E("\ufeffx")], True),
    "only-bom": (b"\xef\xbb\xbf", [], True),
    "partial-bom-is-data": (b"\xef\xbb", [], False),
}

_LONG = b"x" * 5000
COMMENTS: dict[str, Vector] = {
    "keep-alives": (b": ping\ndata: a\n: OPENROUTER PROCESSING\n\n", [E("a")], True),
    "comments-do-not-dispatch": (b": a\n\n:\n\n: b\n\n", [], True),
    # wpt eventsource/format-comments
    "wpt-comments": (
        b"data:1\r:\x00\n:\r\ndata:2\n:" + _LONG + b"\rdata:3\n:data:fail\r:" + _LONG + b"\ndata:4\n\n",
        [E("1\n2\n3\n4")],
        True,
    ),
}

FIELDS: dict[str, Vector] = {
    "no-colon-is-empty-value": (b"data\n\ndata\ndata\n\n", [E(""), E("\n")], True),
    "one-space-removed-only": (
        b"data:a\n\ndata: a\n\ndata:  a\n\n",
        [E("a"), E("a"), E(" a")],
        True,
    ),
    "split-on-first-colon-only": (b"data: a:b: c\n\n", [E("a:b: c")], True),
    # wpt eventsource/format-leading-space: a tab is not removed
    "wpt-leading-space": (b"data:\ttest\rdata: \ndata:test\n\n", [E("\ttest\n\ntest")], True),
    # wpt eventsource/format-field-parsing (plus the dispatching blank line)
    "wpt-field-parsing": (
        b"data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\ndata:3\r"
        b"data:\r\n data:32\ndata:4\n\n",
        [E("\x00\n 2\n1\n3\n\n4")],
        True,
    ),
    "unknown-fields": (b"foo: bar\ndata: a\nData: b\n data: c\ndata : d\n\n", [E("a")], True),
    "event-type": (
        b"event: add\ndata: 1\n\nevent: remove\ndata: 2\n\ndata: 3\n\n",
        [E("1", "add"), E("2", "remove"), E("3")],
        True,
    ),
    "empty-event-is-message": (b"event: a\nevent:\ndata: x\n\n", [E("x")], True),
    # wpt eventsource/format-null-character
    "nul-in-data": (b"data:\x00\n\n", [E("\x00")], True),
}

DISPATCH: dict[str, Vector] = {
    "spec-stock-example": (b"data: YHOO\ndata: +2\ndata: 10\n\n", [E("YHOO\n+2\n10")], True),
    "spec-id-example": (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        [E("first event", id="1"), E("second event", id=""), E(" third event", id="")],
        True,
    ),
    "spec-empty-data-example": (b"data\n\ndata\ndata\n\ndata:", [E(""), E("\n")], False),
    "spec-space-example": (b"data:test\n\ndata: test\n\n", [E("test"), E("test")], True),
    # openai-python and old httpx-sse dispatch these; the spec does not.
    "no-data-no-dispatch": (b"event: ping\n\nevent: completion\n\n", [], True),
    "type-reset-after-dataless-block": (b"event: ping\n\ndata: a\n\n", [E("a")], True),
    "extra-blank-lines": (b"\n\ndata: a\n\n\n\n\r\n", [E("a")], True),
    "json-escaped-newlines-stay": (b'data: {"a": "x\\n\\ny"}\n\n', [E('{"a": "x\\n\\ny"}')], True),
}

ID_RETRY: dict[str, Vector] = {
    "id-sticky": (
        b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
        [E("a", id="1"), E("b", id="1"), E("c", id="")],
        True,
    ),
    "id-updates-without-dispatch": (b"id: 7\n\ndata: a\n\n", [E("a", id="7")], True),
    "id-with-nul-ignored": (
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [E("a", id="1"), E("b", id="1")],
        True,
    ),
    "retry-digits": (b"retry: 1000\ndata: a\n\n", [E("a", retry=1000)], True),
    "retry-last-wins": (b"retry: 1\nretry: 2\ndata: a\n\n", [E("a", retry=2)], True),
    "retry-per-event": (b"retry: 5\n\ndata: a\n\n", [E("a")], True),
    "retry-bogus-ignored": (
        b"retry: 10x\ndata: a\n\nretry: -1\ndata: b\n\nretry:  1\ndata: c\n\n"
        b"retry: \xd9\xa3\ndata: d\n\nretry\ndata: e\n\nretry:\ndata: f\n\n",
        [E("a"), E("b"), E("c"), E("d"), E("e"), E("f")],
        True,
    ),
    # wpt eventsource/format-data-before-final-empty-line
    "wpt-data-before-final-empty-line": (
        b"retry:1000\ndata:test1\n\nid:test\ndata:test2",
        [E("test1", retry=1000)],
        False,
    ),
}

_SEPARATORS = "a\u2028b\u2029c\u0085d\x0be\x0cf\x1cg\x1dh\x1ei"
UNICODE: dict[str, Vector] = {
    "multibyte": (
        'data: {"content":"известни 🎉"}\n\n'.encode(),
        [E('{"content":"известни 🎉"}')],
        True,
    ),
    # str.splitlines() would break on every one of these.
    "unicode-separators-are-data": (f"data: {_SEPARATORS}\n\n".encode(), [E(_SEPARATORS)], True),
    "u2028-in-json": (
        b'data: {"content":" \xe2\x80\xa8"}\n\ndata: {"content":"foo"}\n\n',
        [E('{"content":" \u2028"}'), E('{"content":"foo"}')],
        True,
    ),
    "invalid-utf8-replaced": (b"data: a\xffb\xc3\n\n", [E("a\ufffdb\ufffd")], True),
    "invalid-utf8-field-name": (b"\xff\xfe: x\nevent: \xff\ndata: ok\n\n", [E("ok", "\ufffd")], True),
    "truncated-multibyte-before-lf": (b"data: \xe2\x82\n\n", [E("\ufffd")], True),
}

FINISH: dict[str, Vector] = {
    "empty-stream": (b"", [], True),
    "clean": (b"data: a\n\n", [E("a")], True),
    "mid-line": (b"data: a\n\ndata: b", [E("a")], False),
    "data-without-blank-line": (b"data: a\n\ndata: b\n", [E("a")], False),
    "trailing-cr-ends-line": (b"data: a\n\r", [E("a")], True),
    "trailing-cr-after-data": (b"data: a\r", [], False),
    "comment-line-complete": (b"data: a\n\n: ping\r", [E("a")], True),
    "comment-line-partial": (b"data: a\n\n: ping", [E("a")], False),
    # A data-less block can never be dispatched, so nothing is lost.
    "fields-without-data": (b"data: a\n\nevent: x\nid: 2\n", [E("a")], True),
}


# --------------------------------------------------------------------------- tests


class TestHelpers:
    def test_chunkings_really_split(self) -> None:
        chunkings = _chunkings(b"data: abcdefghijkl\r\n\r\n")
        assert len({tuple(c) for c in chunkings}) == len(chunkings)
        assert all(b"".join(c) == b"data: abcdefghijkl\r\n\r\n" for c in chunkings)


class TestLineEnds:
    @pytest.mark.parametrize("vector", _params(LINE_ENDS))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)

    def test_crlf_split_across_chunks_is_one_line_end(self) -> None:
        chunks = [b"data: a\r", b"\n", b"data: b\r", b"\ndata: c\r\n\r", b"\n", b"data: d\r", b"\r"]
        assert _decode_chunks(chunks) == ([E("a\nb\nc"), E("d")], True)

    def test_cr_at_chunk_end_dispatches_immediately(self) -> None:
        decoder = SSEDecoder()
        assert decoder.feed(b"data: a\n") == []
        assert decoder.feed(b"\r") == [E("a")]
        assert decoder.feed(b"\n") == []
        assert decoder.feed(b"data: b\n\n") == [E("b")]

    def test_empty_chunks_are_harmless(self) -> None:
        chunks = [b"", b"data: a\r", b"", b"\n", b"", b"\n", b""]
        assert _decode_chunks(chunks) == ([E("a")], True)


class TestBOM:
    @pytest.mark.parametrize("vector", _params(BOM))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)

    def test_bom_split_across_chunks(self) -> None:
        assert _decode_chunks([b"\xef", b"\xbb", b"\xbfdata: a\n\n"]) == ([E("a")], True)


class TestComments:
    @pytest.mark.parametrize("vector", _params(COMMENTS))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)


class TestFields:
    @pytest.mark.parametrize("vector", _params(FIELDS))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)


class TestDispatch:
    @pytest.mark.parametrize("vector", _params(DISPATCH))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)


class TestIdAndRetry:
    @pytest.mark.parametrize("vector", _params(ID_RETRY))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)

    def test_last_event_id_property_commits_on_blank_line(self) -> None:
        decoder = SSEDecoder()
        assert decoder.last_event_id is None
        decoder.feed(b"id: 1\n")
        assert decoder.last_event_id is None
        decoder.feed(b"\n")
        assert decoder.last_event_id == "1"


class TestUnicode:
    @pytest.mark.parametrize("vector", _params(UNICODE))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)

    def test_multibyte_split_like_openai_python(self) -> None:
        chunks = [
            b'data: {"content":"',
            b"\xd0",
            b"\xb8\xd0\xb7\xd0",
            b"\xb2\xd0\xb5\xd1\x81\xd1\x82\xd0\xbd\xd0\xb8",
            b'"}\n',
            b"\n",
        ]
        events, clean = _decode_chunks(chunks)
        assert clean
        assert [json.loads(e.data) for e in events] == [{"content": "известни"}]


def _chunk(content: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choices = [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None)}]
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_1",
        "choices": extra.pop("choices", choices),
        **extra,
    }


_OPENAI_PAYLOADS = [
    {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []},
    _chunk(""),
    _chunk("Bonjour"),
    _chunk(" \u2028 été\n"),
    _chunk("!", finish_reason="stop"),
    _chunk(choices=[], usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}),
]


def _openai_stream(newline: str) -> bytes:
    parts = [": OPENROUTER PROCESSING", ""]
    for payload in _OPENAI_PAYLOADS:
        parts += [f"data: {json.dumps(payload, ensure_ascii=False)}", ""]
        parts += [": keep-alive", ""]
    parts += ["data: [DONE]", "", ""]
    return newline.join(parts).encode()


class TestOpenAIStreams:
    @pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
    def test_chat_completion_chunks_then_done(self, newline: str) -> None:
        events, clean = _decode_all_ways(_openai_stream(newline))
        assert clean
        assert [e.event for e in events] == ["message"] * (len(_OPENAI_PAYLOADS) + 1)
        assert events[-1].data == "[DONE]"
        assert [json.loads(e.data) for e in events[:-1]] == _OPENAI_PAYLOADS
        choices = [c for e in events[:-1] for c in json.loads(e.data)["choices"]]
        assert "".join(c["delta"].get("content", "") for c in choices) == "Bonjour \u2028 été\n!"

    def test_vllm_error_payload_then_done(self) -> None:
        error = {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}}
        stream = f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
        events, clean = _decode_all_ways(stream)
        assert clean
        assert [e.data for e in events] == [json.dumps(error), "[DONE]"]

    def test_named_error_event(self) -> None:
        stream = b'event: error\ndata: {"type":"overloaded_error"}\n\n'
        assert _decode_all_ways(stream) == ([E('{"type":"overloaded_error"}', "error")], True)

    def test_closed_mid_chunk_is_reported(self) -> None:
        stream = _openai_stream("\n")
        truncated = stream[: stream.index(b"[DONE]") - 30]
        events, clean = _decode_all_ways(truncated)
        assert not clean
        assert len(events) == len(_OPENAI_PAYLOADS) - 1


class TestFinish:
    @pytest.mark.parametrize("vector", _params(FINISH))
    def test_vectors(self, vector: Vector) -> None:
        _check(vector)

    def test_unfinished_event_is_discarded_and_decoder_reusable(self) -> None:
        decoder = SSEDecoder()
        assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\nevent: x\ndata: lost\n") == [E("a", id="1")]
        assert decoder.finish() is False
        assert decoder.last_event_id == "1"
        # Reconnection: a new stream may start with its own BOM; nothing of the lost event leaks.
        assert decoder.feed(b"\xef\xbb\xbfdata: b\n\n") == [E("b", id="1")]
        assert decoder.finish() is True

    def test_finish_twice(self) -> None:
        decoder = SSEDecoder()
        decoder.feed(b"data: a")
        assert decoder.finish() is False
        assert decoder.finish() is True

    def test_pending_cr_does_not_eat_next_streams_lf(self) -> None:
        decoder = SSEDecoder()
        decoder.feed(b"data: a\r")
        decoder.finish()
        assert decoder.feed(b"\ndata: b\n\n") == [E("b")]


class TestLimits:
    def test_long_line_raises_naming_limit(self) -> None:
        for chunks in _chunkings(b"data: " + b"x" * 20 + b"\n\n"):
            with pytest.raises(SSEEventTooLarge, match="max_event_bytes=10") as info:
                _decode_chunks(chunks, max_event_bytes=10)
            assert info.value.limit == 10

    def test_partial_line_is_bounded_before_its_end(self) -> None:
        decoder = SSEDecoder(max_event_bytes=10)
        decoder.feed(b"data: 1234")
        with pytest.raises(SSEEventTooLarge, match="line"):
            decoder.feed(b"5")

    def test_comment_lines_count(self) -> None:
        with pytest.raises(SSEEventTooLarge):
            _decode_chunks([b":" + b"x" * 20 + b"\n"], max_event_bytes=10)

    def test_accumulated_data_raises(self) -> None:
        # Each line (11 bytes) and two joined values (11 bytes) fit; a third value does not.
        assert _decode_all_ways(b"data: 12345\ndata: 12345\n\n", max_event_bytes=11) == (
            [E("12345\n12345")],
            True,
        )
        for chunks in _chunkings(b"data: 12345\ndata: 12345\ndata: 12345\n\n"):
            with pytest.raises(SSEEventTooLarge, match="event data exceeds max_event_bytes=11"):
                _decode_chunks(chunks, max_event_bytes=11)

    def test_events_before_an_oversized_line_are_handed_out_with_the_error(self) -> None:
        """Nothing received is lost: the events a chunk completed before its oversized line come with
        the error, for the caller to deliver first."""
        decoder = SSEDecoder(max_event_bytes=16)
        with pytest.raises(SSEEventTooLarge) as info:
            decoder.feed(b"data: one\n\ndata: two\n\ndata: " + b"x" * 20 + b"\n\n")
        assert info.value.events == [E("one"), E("two")]
        with pytest.raises(SSEEventTooLarge) as info:
            SSEDecoder(max_event_bytes=16).feed(b"data: " + b"x" * 20)
        assert info.value.events == []

    def test_size_resets_between_events(self) -> None:
        stream = b"data: 12345\n\n" * 50
        assert _decode_all_ways(stream, max_event_bytes=11) == ([E("12345")] * 50, True)

    def test_default_limit_is_16_mib(self) -> None:
        decoder = SSEDecoder()
        decoder.feed(b"x" * (16 * 1024 * 1024))
        with pytest.raises(SSEEventTooLarge, match=str(16 * 1024 * 1024)):
            decoder.feed(b"x")

    def test_error_hierarchy_and_bad_limit(self) -> None:
        assert issubclass(SSEEventTooLarge, SSEError)
        assert issubclass(SSEError, Exception)
        with pytest.raises(ValueError, match="positive"):
            SSEDecoder(max_event_bytes=0)


def _timed_feed(
    data: bytes, size: int, decoder: SSEDecoder | None = None
) -> tuple[list[ServerSentEvent], float]:
    decoder = decoder or SSEDecoder()
    events: list[ServerSentEvent] = []
    start = time.perf_counter()
    for i in range(0, len(data), size):
        events.extend(decoder.feed(data[i : i + size]))
    assert decoder.finish()
    return events, time.perf_counter() - start


def _rescans(buffer_bytes: int, times: int) -> float:
    """Seconds that `times` scans of a `buffer_bytes` buffer take on this machine, now: the least a decoder
    that rescans its buffer per chunk (or per line) spends. Measured, not assumed: the bounds below are
    fractions of it, so a loaded machine slows both sides alike."""
    buffer = b"y" * buffer_bytes
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            buffer.find(b"\r")
        samples.append((time.perf_counter() - start) / 20)
    return min(samples) * times


class TestPerformance:
    """Linear decoding, proved against the quadratic decoders it rules out: each workload takes the
    linear decoder about a second at most, and a decoder that rescans its buffer per chunk or per line
    at least five times as long as the bound (`_rescans`, measured in the same run; issue 19: no bound
    guesses the machine's speed)."""

    def test_5mb_event_in_7_byte_chunks(self) -> None:
        payload = b"x" * 5_000_000
        chunks = len(payload) // 7
        events, elapsed = _timed_feed(b"data: " + payload + b"\n\n", 7)
        assert [len(e.data) for e in events] == [len(payload)]
        assert elapsed < _rescans(len(payload) // 2, chunks) / 5  # on average half the buffer per chunk

    def test_1_byte_chunks_onto_a_large_pending_event(self) -> None:
        # Each chunk costs O(1) here; rescanning or copying the 20 MB buffer per chunk costs ~1 ms.
        pending = 20_000_000
        decoder = SSEDecoder(max_event_bytes=32 * 1024 * 1024)
        assert decoder.feed(b"data: " + b"y" * pending) == []
        start = time.perf_counter()
        for _ in range(20_000):
            assert not decoder.feed(b"z")
        elapsed = time.perf_counter() - start
        assert [len(e.data) for e in decoder.feed(b"\r\n\r\n")] == [pending + 20_000]
        assert decoder.finish()
        assert elapsed < _rescans(pending, 20_000) / 5

    def test_many_short_lines_in_one_chunk(self) -> None:
        # Searching CR and LF separately from each line start would rescan to the end per line: here the
        # 20 MB event after the short ones, for each of them.
        tail = 20_000_000
        data = b"data: x\n\n" * 20_000 + b"data: " + b"y" * tail + b"\n\n"
        decoder = SSEDecoder(max_event_bytes=32 * 1024 * 1024)
        events, elapsed = _timed_feed(data, len(data), decoder)
        assert len(events) == 20_001
        assert elapsed < _rescans(tail, 20_000) / 5


# --------------------------------------------------------------------------- properties

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)
_EVENTS = st.lists(
    st.tuples(
        st.lists(_TEXT, min_size=1, max_size=3),  # data lines
        st.none() | _TEXT.filter(bool),  # event type
        st.none() | _TEXT.filter(lambda s: "\x00" not in s),  # id
        st.booleans(),  # preceded by a comment
    ),
    max_size=8,
)


def _serialise(events: list[Any], newline: str, bom: bool) -> tuple[bytes, list[ServerSentEvent]]:
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    last_id = None
    for data_lines, event, event_id, comment in events:
        if comment:
            lines.append(": keep-alive")
        if event is not None:
            lines.append(f"event: {event}")
        if event_id is not None:
            lines.append(f"id: {event_id}")
            last_id = event_id
        lines += [f"data: {line}" for line in data_lines]
        lines.append("")
        expected.append(E("\n".join(data_lines), event or "message", last_id))
    body = "".join(line + newline for line in lines).encode()
    return (b"\xef\xbb\xbf" if bom else b"") + body, expected


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


_SYNTAX = [b"data", b"event", b"id", b"retry", b":", b" ", b"\r", b"\n", b"\r\n", b"1", b"x", b"\x00"]
# BOM, invalid UTF-8, a U+2028 split over two tokens, NEL
_AWKWARD = [b"\xef\xbb\xbf", b"\xff", b"\xe2\x80", b"\xa8", b"\xc2\x85"]
_SSE_TOKENS = st.sampled_from([*_SYNTAX, *_AWKWARD])
_VALUE = st.lists(_SSE_TOKENS, max_size=6).map(b"".join)
_LINE = st.tuples(
    st.sampled_from([b"", b"data", b"event", b"id", b"retry", b"dat", b"\xef\xbb\xbfdata", b"\xff"]),
    st.sampled_from([b"", b":", b": ", b":  "]),
    _VALUE,
    st.sampled_from([b"\n", b"\r", b"\r\n", b""]),
).map(b"".join)
_NOISE = (
    st.binary(max_size=300)
    | st.lists(_SSE_TOKENS, max_size=80).map(b"".join)
    | st.lists(_LINE, max_size=30).map(b"".join)
)


def _outcome(chunks: list[bytes], limit: int) -> Outcome | str:
    try:
        return _decode_chunks(chunks, max_event_bytes=limit)
    except SSEEventTooLarge:
        return "too large"


class TestProperties:
    @settings(deadline=None, max_examples=200)
    @given(
        events=_EVENTS,
        newline=st.sampled_from(["\n", "\r", "\r\n"]),
        bom=st.booleans(),
        cuts=st.lists(st.integers(min_value=0), max_size=30),
    )
    def test_serialised_events_round_trip(
        self, events: list[Any], newline: str, bom: bool, cuts: list[int]
    ) -> None:
        data, expected = _serialise(events, newline, bom)
        assert _decode_chunks(_split(data, cuts)) == (expected, True)
        assert _decode_chunks(_bytewise(data)) == (expected, True)

    @settings(deadline=None, max_examples=300)
    @given(
        data=_NOISE,
        cuts=st.lists(st.integers(min_value=0), max_size=30),
        limit=st.sampled_from([1, 8, 64, 16 * 1024 * 1024]),
    )
    def test_arbitrary_bytes_never_crash_and_chunking_is_invariant(
        self, data: bytes, cuts: list[int], limit: int
    ) -> None:
        whole = _outcome([data], limit)
        assert _outcome(_split(data, cuts), limit) == whole
        assert _outcome(_bytewise(data), limit) == whole
        if limit > len(data):
            assert whole != "too large"
        if isinstance(whole, tuple):
            for event in whole[0]:
                assert "\r" not in event.data
                assert event.event


# --------------------------------------------------------------------------- fast path = full rules

_VECTORS = {
    f"{table}/{name}": vector
    for table, vectors in (
        ("line_ends", LINE_ENDS), ("bom", BOM), ("comments", COMMENTS), ("fields", FIELDS),
        ("dispatch", DISPATCH), ("id_retry", ID_RETRY), ("unicode", UNICODE), ("finish", FINISH),
    )
    for name, vector in vectors.items()
}  # fmt: skip


def _by_path(chunks: list[bytes], limit: int, *, full_rules: bool) -> tuple[list[ServerSentEvent], object]:
    """Every event handed out and how the stream ended (finish(), or the error), decoding `chunks` with
    `feed` (its bytes fast path where it applies) or with the full WHATWG rules only."""
    decoder = SSEDecoder(max_event_bytes=limit)
    feed = decoder._feed if full_rules else decoder.feed
    events: list[ServerSentEvent] = []
    try:
        for chunk in chunks:
            if chunk:
                events += feed(chunk)
    except SSEEventTooLarge as exc:
        return events + exc.events, str(exc)
    return events, decoder.finish()


def _same_both_paths(chunks: list[bytes], limit: int = 16 * 1024 * 1024) -> None:
    assert _by_path(chunks, limit, full_rules=False) == _by_path(chunks, limit, full_rules=True)


class _FastPathOnly(SSEDecoder):
    __slots__ = ()

    def _feed(self, chunk: bytes) -> list[ServerSentEvent]:
        raise AssertionError(f"the full rules were needed for {chunk!r}")


class TestFastPath:
    """`feed` cuts plain `data: ...` events out as bytes and hands the rest to the full rules: on every
    golden vector, OpenAI-style streams and fuzzed bytes, however chunked, both give the same events."""

    @pytest.mark.parametrize("vector", _params(_VECTORS))
    def test_golden_vectors(self, vector: Vector) -> None:
        for chunks in _chunkings(vector[0]):
            _same_both_paths(chunks)

    def test_openai_stream_takes_the_fast_path(self) -> None:
        body = b"".join(b'data: {"n": %d}\n\n' % i for i in range(50)) + b"data: [DONE]\n\n"
        decoder = _FastPathOnly()
        cut = body.index(b"\n\n", 100) + 2  # reads that end between events
        events = decoder.feed(body[:cut]) + decoder.feed(body[cut:])
        assert [e.data for e in events] == [f'{{"n": {i}}}' for i in range(50)] + ["[DONE]"]
        for chunks in _chunkings(body):
            _same_both_paths(chunks)

    @settings(deadline=None, max_examples=300)
    @given(
        events=_EVENTS,
        newline=st.sampled_from(["\n", "\r", "\r\n"]),
        bom=st.booleans(),
        cuts=st.lists(st.integers(min_value=0), max_size=30),
    )
    def test_serialised_events(self, events: list[Any], newline: str, bom: bool, cuts: list[int]) -> None:
        data, _ = _serialise(events, newline, bom)
        _same_both_paths(_split(data, cuts))

    @settings(deadline=None, max_examples=300)
    @given(
        data=_NOISE,
        cuts=st.lists(st.integers(min_value=0), max_size=30),
        limit=st.sampled_from([1, 8, 64, 16 * 1024 * 1024]),
    )
    def test_arbitrary_bytes(self, data: bytes, cuts: list[int], limit: int) -> None:
        _same_both_paths(_split(data, cuts), limit)
