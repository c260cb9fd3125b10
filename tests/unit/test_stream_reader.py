"""bridge.chat.stream.Chunks, the stream rules applied a read at a time (the handler's own read loop), on
the mock transport: the chunks of each read in order, nothing after [DONE], an error (an error event, a
chunk not understood) raised after the chunks its read completed before it, and how a body may end. The
chunks it gives equal those of a reader taking one event at a time (the rules as written in the module's
docstring), whatever the reads the body arrives in."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.chat import stream
from bridge.errors import BridgeError, Reason, UpstreamProtocolError, UpstreamStreamError
from bridge.http.client import EventStream, HttpClient, HttpSettings
from bridge.http.transports.mock import MockResponse, MockTransport
from bridge.rpc.call import RpcCall, enter_call
from bridge.upstream.errors import OPENAI_COMPATIBLE

ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
ERROR = {"error": {"message": "overloaded", "type": "server_error", "code": "500"}}


def _text(word: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}


def _event(doc: Any) -> bytes:
    return b"data: " + (doc if isinstance(doc, bytes) else json.dumps(doc).encode()) + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def _read_all(pieces: list[bytes]) -> tuple[list[list[Any]], BaseException | None]:
    """The chunks of each read of a body arriving as `pieces`, and what ended it (None: as it should)."""
    enter_call(RpcCall("/svc/Stream", response_streaming=True))
    transport = MockTransport(
        lambda request: MockResponse(200, {"content-type": "text/event-stream"}, pieces)
    )
    client = HttpClient(
        HttpSettings(base_url="http://gw.test/v1"), errors=OPENAI_COMPATIBLE, transport=transport
    )
    reads: list[list[Any]] = []
    async with client.open_sse("/chat/completions", {}, headers={}, deadline=None) as events:
        chunks = stream.Chunks(events)
        try:
            while chunks.reading():
                reads.append(chunks.take(await events.read()))
        except BridgeError as exc:
            return reads, exc
        assert not chunks.reading()  # once ended, it stays ended
    return reads, None


def _run(pieces: list[bytes]) -> tuple[list[list[Any]], BaseException | None]:
    return asyncio.run(_read_all(pieces))


def test_the_chunks_of_each_read_in_order_and_nothing_after_done() -> None:
    reads, ended = _run([_event(ROLE) + _event(_text("a")), _event(_text("b")) + DONE + _event(_text("x"))])
    assert ended is None
    assert reads == [[ROLE, _text("a")], [_text("b")]]


def test_an_error_event_comes_after_the_chunks_its_read_completed_before_it() -> None:
    reads, ended = _run([_event(ROLE) + _event(_text("a")) + _event(ERROR) + _event(_text("lost"))])
    assert reads == [[ROLE, _text("a")]]
    assert isinstance(ended, UpstreamStreamError)
    assert "overloaded" in str(ended)


def test_an_error_event_alone_in_its_read_is_raised_at_once() -> None:
    reads, ended = _run([_event(ROLE), b'event: error\ndata: {"message": "boom"}\n\n'])
    assert reads == [[ROLE]]
    assert isinstance(ended, UpstreamStreamError)


def test_a_chunk_not_understood_comes_after_the_chunks_before_it() -> None:
    reads, ended = _run([_event(_text("a")) + _event(b"{not json") + DONE])
    assert reads == [[_text("a")]]
    assert isinstance(ended, UpstreamProtocolError)
    assert ended.reason is Reason.UPSTREAM_INVALID_RESPONSE
    reads, ended = _run([_event(_text("a")) + _event(b"[1, 2]") + DONE])
    assert reads == [[_text("a")]]
    assert isinstance(ended, UpstreamProtocolError)


def test_a_chunk_naming_error_without_being_one_is_a_chunk() -> None:
    chunk = _text('the word "error" in a reply')
    reads, ended = _run([_event(chunk) + _event({**FINISH, "error": None}) + DONE])
    assert ended is None
    assert reads == [[chunk, {**FINISH, "error": None}]]


def test_other_event_types_and_comments_are_skipped() -> None:
    reads, ended = _run([b": keep-alive\n\nevent: ping\ndata: {}\n\n" + _event(_text("a")) + DONE])
    assert ended is None
    assert reads == [[_text("a")]]


def test_a_body_ending_without_done_is_accepted_only_after_a_finish_reason() -> None:
    reads, ended = _run([_event(_text("a")), _event(FINISH)])
    assert ended is None
    assert reads == [[_text("a")], [FINISH], []]  # the body's end: no chunk
    _, ended = _run([_event(_text("a"))])
    assert isinstance(ended, UpstreamProtocolError)
    assert ended.reason is Reason.UPSTREAM_STREAM_INCOMPLETE
    assert ended.code is grpc.StatusCode.UNAVAILABLE


def test_a_body_ending_inside_an_event_is_truncated_even_after_a_finish_reason() -> None:
    _, ended = _run([_event(FINISH) + b'data: {"choi'])
    assert isinstance(ended, UpstreamProtocolError)
    assert ended.reason is Reason.UPSTREAM_STREAM_TRUNCATED


# --- the same chunks and ending as the rules taken one event at a time, whatever the reads ---------------

_DOCS = st.sampled_from([ROLE, FINISH, ERROR, _text("a"), _text("é"), b"{bad", b"[]", b"[DONE]", None])


def _reference(body: bytes) -> tuple[list[Any], str]:
    """The rules one event at a time on a body of plain `data:` events: the chunks, and how it ends."""
    out: list[Any] = []
    finished = False
    events = body.split(b"\n\n")
    complete, rest = events[:-1], events[-1]
    for event in complete:
        if event == b": ping":
            continue
        data = event.removeprefix(b"data: ")
        if data == b"[DONE]":
            return out, "ok"
        try:
            doc = json.loads(data)
        except ValueError:
            return out, "invalid"
        if not isinstance(doc, dict):
            return out, "invalid"
        if doc.get("error"):
            return out, "error"
        finished = finished or any(c.get("finish_reason") for c in doc.get("choices", []))
        out.append(doc)
    if rest and rest != b": ping\n":  # a whole comment line is no unfinished event
        return out, "truncated"
    return out, "ok" if finished else "incomplete"


def _ending(ended: BaseException | None) -> str:
    if ended is None:
        return "ok"
    if isinstance(ended, UpstreamStreamError):
        return "error"
    assert isinstance(ended, UpstreamProtocolError)
    return {
        Reason.UPSTREAM_INVALID_RESPONSE: "invalid",
        Reason.UPSTREAM_STREAM_TRUNCATED: "truncated",
        Reason.UPSTREAM_STREAM_INCOMPLETE: "incomplete",
    }[ended.reason]


@settings(max_examples=150, deadline=None)
@given(
    docs=st.lists(_DOCS, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=6),
    cut_last=st.booleans(),
)
def test_property_the_reads_give_what_the_rules_give_one_event_at_a_time(
    docs: list[Any], cuts: list[int], cut_last: bool
) -> None:
    body = b"".join(b": ping\n\n" if doc is None else _event(doc) for doc in docs)
    if cut_last and body:
        body = body[:-1]  # ends inside its last event
    pieces, start = [], 0
    for cut in sorted(set(cuts)):
        if start < cut < len(body):
            pieces.append(body[start:cut])
            start = cut
    pieces.append(body[start:])
    expected, ending = _reference(body)
    reads, ended = _run([piece for piece in pieces if piece])
    assert [chunk for read in reads for chunk in read] == expected
    assert _ending(ended) == ending


def test_event_stream_read_and_batches_give_the_same_events() -> None:
    """EventStream.read and EventStream.batches give the same events (batches is read as an iterator)."""

    async def both() -> tuple[list[Any], list[Any]]:
        pieces = [_event(_text("a")) + _event(_text("b")), DONE]
        transport = MockTransport(lambda request: MockResponse(200, {}, pieces))
        client = HttpClient(
            HttpSettings(base_url="http://gw.test/v1"), errors=OPENAI_COMPATIBLE, transport=transport
        )
        async with client.open_sse("/c", {}, headers={}, deadline=None) as events:
            assert isinstance(events, EventStream)
            read = []
            while (batch := await events.read()) is not None:
                read.append(batch)
        async with client.open_sse("/c", {}, headers={}, deadline=None) as events:
            iterated = [batch async for batch in events.batches()]
        return read, iterated

    read, iterated = asyncio.run(both())
    assert read == iterated
    assert len(read) == 2


@pytest.mark.parametrize("shape", ["usage-only", "usage-on-finish", "no-usage", "null-usage", "empty-choice"])
def test_the_handlers_usage_removal_is_without_usage(shape: str) -> None:
    """The chat handler takes the usage out inline (`pop` + `carries_nothing`): the same as without_usage."""
    from bridge.chat.usage import carries_nothing, without_usage

    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    chunk: dict[str, Any] = {
        "usage-only": {"choices": [], "usage": usage},
        "usage-on-finish": {**FINISH, "usage": usage},
        "no-usage": _text("a"),
        "null-usage": {**_text("a"), "usage": None},
        "empty-choice": {"choices": [{"index": 0, "delta": {}}], "usage": usage},
    }[shape]
    inline = dict(chunk)
    dropped = inline.pop("usage", None) is not None and carries_nothing(inline)
    reference = without_usage(dict(chunk))
    assert (None if dropped else inline) == reference
