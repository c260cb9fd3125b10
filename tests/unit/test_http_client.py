"""Unit tests of bridge.http.client, each on every transport: the in-memory mock transport, and the aiohttp
and httpx transports in front of a loopback server answering with the same handler (tests/transports.py).
Integration suites run the whole bridge against the real mock gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest

from bridge import errors
from bridge.http.breaker import HedgePolicy
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.failover import UpstreamPool
from bridge.http.retry import RetryPolicy
from bridge.http.transports.base import LARGE_BODY, USER_AGENT, TransportSettings
from bridge.http.transports.mock import MockRequest, MockResponse, MockTransport
from bridge.upstream.errors import OPENAI_COMPATIBLE
from tests.helpers import error_info
from tests.transports import KINDS, MOCK, MOCK_BASE_URL, REAL_KINDS, transport_for

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CHUNK = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@asynccontextmanager
async def _client(kind: str, handler: Any, **settings: Any) -> AsyncIterator[HttpClient]:
    async with transport_for(kind, handler) as (transport, base_url):
        client = HttpClient(
            HttpSettings(base_url=base_url, **settings), errors=OPENAI_COMPATIBLE, transport=transport
        )
        yield client
        if isinstance(transport, MockTransport):
            assert transport.open_replies == 0  # every reply closed, whatever happened to it


async def _post(client: HttpClient, deadline: float | None = None) -> dict[str, Any]:
    reply = await client.request_json("POST", "/chat/completions", body=BODY, headers={}, deadline=deadline)
    return reply.body


async def _events(client: HttpClient, deadline: float | None = None) -> list[str]:
    received: list[str] = []
    await _read_into(received, client, deadline)
    return received


async def _read_into(received: list[str], client: HttpClient, deadline: float | None = None) -> None:
    """Reads a stream's events into `received` as they come (what arrived stays there if it fails)."""
    async with client.open_sse("/chat/completions", BODY, headers={}, deadline=deadline) as stream:
        async for batch in stream.batches():
            received += [event.data for event in batch]


# ------------------------------------------------------------------------------------------- unary JSON


async def test_huge_error_page_keeps_its_status_on_unary(kind: str) -> None:
    page = b"<html><title>Bad gateway</title>" + b"x" * 100_000 + b"</html>"
    async with _client(kind, lambda _: MockResponse(502, {"content-type": "text/html"}, page)) as client:
        with pytest.raises(errors.UpstreamHTTPError) as raised:
            await _post(client)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE  # the 502, not the body-size limit
    assert "Bad gateway" in raised.value.message


async def test_oversized_success_body_is_resource_exhausted(kind: str) -> None:
    reply = MockResponse.json({"id": "x" * 5000})
    async with _client(kind, lambda _: reply, max_body_bytes=1024) as client:
        with pytest.raises(errors.UpstreamProtocolError) as raised:
            await _post(client)
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_success_body_at_the_limit_is_read_whole(kind: str) -> None:
    document = b'{"id": "' + b"a" * (1024 - 10) + b'"}'
    assert len(document) == 1024
    reply = MockResponse(200, {"content-type": "application/json"}, [document[:500], document[500:]])
    async with _client(kind, lambda _: reply, max_body_bytes=1024) as client:
        body = await _post(client)
    assert len(body["id"]) == 1014


async def test_a_get_with_a_query_reaches_its_path_unchanged(kind: str) -> None:
    seen: list[MockRequest] = []

    def handler(request: MockRequest) -> MockResponse:
        seen.append(request)
        return MockResponse.json({"items": []})

    async with _client(kind, handler) as client:
        reply = await client.request_json(
            "GET",
            "/models/eu.anthropic/claude:0",
            query={"page": "2", "tags": "a,b"},
            headers={},
            deadline=None,
        )
    assert reply.body == {"items": []}
    assert seen[0].method == "GET"
    sent = urlsplit(seen[0].url)
    assert sent.path == "/v1/models/eu.anthropic/claude:0"  # the id's slash and colon as they are
    assert parse_qs(sent.query) == {"page": ["2"], "tags": ["a,b"]}
    assert seen[0].content == b""


async def test_a_json_body_is_sent_compact_with_its_content_type_and_the_user_agent(kind: str) -> None:
    seen: list[MockRequest] = []

    def handler(request: MockRequest) -> MockResponse:
        seen.append(request)
        return MockResponse.json({"ok": True})

    async with _client(kind, handler) as client:
        await client.request_json(
            "POST", "/chat/completions", body=BODY, headers={"Authorization": "Bearer k"}, deadline=None
        )
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["authorization"] == "Bearer k"
    assert seen[0].headers["user-agent"] == USER_AGENT
    assert seen[0].content == b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


async def test_a_large_body_arrives_whole_with_its_length(kind: str) -> None:
    seen: list[MockRequest] = []

    def handler(request: MockRequest) -> MockResponse:
        seen.append(request)
        return MockResponse.json({"ok": True})

    big = {"input": "x" * (LARGE_BODY + 1000)}
    async with _client(kind, handler) as client:
        await client.request_json("POST", "/embeddings", body=big, headers={}, deadline=None)
    assert seen[0].json() == big
    if kind != MOCK:  # sent in pieces, with its length: not chunked
        assert seen[0].headers["content-length"] == str(len(seen[0].content))


async def test_an_error_document_in_a_200_is_the_upstream_error(kind: str) -> None:
    document = {"error": {"message": "model overloaded", "code": "overloaded"}}
    async with _client(kind, lambda _: MockResponse.json(document)) as client:
        with pytest.raises(errors.UpstreamError) as raised:
            await _post(client)
    assert "model overloaded" in raised.value.message


async def test_a_redirect_is_never_followed(kind: str) -> None:
    seen: list[MockRequest] = []

    def handler(request: MockRequest) -> MockResponse:
        seen.append(request)
        return MockResponse(301, {"location": "https://elsewhere.example/v1/chat/completions"})

    async with _client(kind, handler) as client:
        with pytest.raises(errors.UpstreamHTTPError) as raised:
            await _post(client)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "UPSTREAM_REDIRECTED"
    assert len(seen) == 1


async def test_the_deadline_bounds_a_silent_upstream(kind: str) -> None:
    async def silent(_: MockRequest) -> MockResponse:
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    async with _client(kind, silent) as client:
        deadline = asyncio.get_running_loop().time() + 0.2
        with pytest.raises(errors.UpstreamTimeoutError) as raised:
            await _post(client, deadline)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_info(raised.value).reason == "DEADLINE_EXCEEDED"


async def _json_head_then_silence(started: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """The head of a JSON document, then silence (a reply whose body stalls)."""
    yield b'{"id": "chatcmpl-1", '
    if started is not None:
        started.set()
    await asyncio.Event().wait()


async def test_the_deadline_ends_a_unary_reply_whose_body_stalls_with_its_correlation_id(kind: str) -> None:
    # One deadline scope covers the whole attempt: past the reply's head, the error names the upstream's id,
    # and is not retried (a reply had begun).
    replies: list[MockRequest] = []

    def stalls(request: MockRequest) -> MockResponse:
        replies.append(request)
        headers = {"content-type": "application/json", "x-correlation-id": "corr-stall"}
        return MockResponse(200, headers, _json_head_then_silence())

    async with _client(kind, stalls, retry=RetryPolicy(retries=2, backoff=0.001)) as client:
        deadline = asyncio.get_running_loop().time() + 0.3
        with pytest.raises(errors.UpstreamTimeoutError) as raised:
            await _post(client, deadline)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_info(raised.value).reason == "DEADLINE_EXCEEDED"
    assert raised.value.correlation_id == "corr-stall"
    assert len(replies) == 1


@pytest.mark.parametrize("real", REAL_KINDS)
async def test_a_deadline_already_passed_ends_a_unary_request_before_any_reply(real: str) -> None:
    # (on the real transports: the mock's send never yields to the loop, so no timer can fire in it)
    async with _client(real, lambda _: MockResponse.json({"ok": 1})) as client:
        deadline = asyncio.get_running_loop().time() - 1
        with pytest.raises(errors.UpstreamTimeoutError) as raised:
            await _post(client, deadline)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.correlation_id is None


def _stalling_client(started: asyncio.Event) -> tuple[MockTransport, HttpClient]:
    """A client whose upstream answers 200 with the head of a JSON document, then stalls (`started` set)."""
    transport = MockTransport(
        lambda _: MockResponse(200, {"content-type": "application/json"}, _json_head_then_silence(started))
    )
    client = HttpClient(
        HttpSettings(base_url="http://gw.test/v1"), errors=OPENAI_COMPATIBLE, transport=transport
    )
    return transport, client


async def test_a_unary_request_cancelled_by_its_caller_stays_cancelled_and_closes_its_reply() -> None:
    # The caller's cancel inside the deadline's scope is the caller's: never turned into a deadline error.
    started = asyncio.Event()
    transport, client = _stalling_client(started)
    posting = asyncio.create_task(_post(client, asyncio.get_running_loop().time() + 30))
    await started.wait()
    posting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await posting
    assert transport.open_replies == 0


async def test_a_unary_request_cancelled_as_its_deadline_passes_stays_cancelled() -> None:
    # A cancel from outside that arrives while the deadline fires too: the cancel wins (as asyncio.timeout).
    started = asyncio.Event()
    transport, client = _stalling_client(started)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.05
    posting = asyncio.create_task(_post(client, deadline))
    await started.wait()
    loop.call_at(deadline, posting.cancel)  # scheduled after the guard's own timer for the same time
    with pytest.raises(asyncio.CancelledError):
        await posting
    assert transport.open_replies == 0


async def test_a_refused_request_is_retried_and_each_attempt_counted(kind: str) -> None:
    answers = [MockResponse.json({"error": {"message": "busy"}}, status=503), MockResponse.json({"ok": 1})]
    attempts: list[int] = []
    async with transport_for(kind, lambda _: answers.pop(0)) as (transport, base_url):
        settings = HttpSettings(base_url=base_url, retry=RetryPolicy(retries=2, backoff=0.001))
        client = HttpClient(
            settings, errors=OPENAI_COMPATIBLE, transport=transport, on_attempt=attempts.append
        )
        assert await _post(client) == {"ok": 1}
    assert attempts == [1, 2]


# -------------------------------------------------------------------------------------------- streams


async def test_a_stream_delivers_its_events_in_order_with_its_correlation_id(kind: str) -> None:
    reply = MockResponse.events(CHUNK, CHUNK, "[DONE]", headers={"x-correlation-id": "corr-1"})
    async with (
        _client(kind, lambda _: reply) as client,
        client.open_sse("/chat/completions", BODY, headers={}, deadline=None) as stream,
    ):
        assert (stream.status, stream.correlation_id) == (200, "corr-1")
        data = [event.data async for batch in stream.batches() for event in batch]
        assert not stream.ended_mid_event
    assert data == [CHUNK, CHUNK, "[DONE]"]


@pytest.mark.parametrize(
    "policy", [RetryPolicy(retries=0), RetryPolicy(retries=2, backoff=0.001)], ids=["no-retries", "retries"]
)
async def test_a_stream_is_one_attempt_unless_streams_are_retried(kind: str, policy: RetryPolicy) -> None:
    """Streams are not retried by default, whatever the retries: a refused stream is one request, counted
    as attempt 1, and its error is the upstream's own (no "after N attempts")."""
    requests: list[MockRequest] = []
    attempts: list[int] = []

    def busy(request: MockRequest) -> MockResponse:
        requests.append(request)
        return MockResponse.json({"error": {"message": "busy"}}, status=503)

    async with transport_for(kind, busy) as (transport, base_url):
        settings = HttpSettings(base_url=base_url, retry=policy)
        client = HttpClient(
            settings, errors=OPENAI_COMPATIBLE, transport=transport, on_attempt=attempts.append
        )
        with pytest.raises(errors.UpstreamHTTPError) as raised:
            await _events(client)
    assert (len(requests), attempts) == (1, [1])
    assert (raised.value.http_status, raised.value.attempts) == (503, 1)
    assert "attempts" not in raised.value.message


async def test_retry_streams_retries_a_stream_that_had_not_begun(kind: str) -> None:
    answers = [MockResponse.json({"error": {"message": "busy"}}, status=503), MockResponse.events(CHUNK)]
    attempts: list[int] = []
    async with transport_for(kind, lambda _: answers.pop(0)) as (transport, base_url):
        policy = RetryPolicy(retries=2, backoff=0.001, streams=True)
        client = HttpClient(
            HttpSettings(base_url=base_url, retry=policy),
            errors=OPENAI_COMPATIBLE,
            transport=transport,
            on_attempt=attempts.append,
        )
        assert await _events(client) == [CHUNK]
    assert attempts == [1, 2]


async def test_a_stream_cut_inside_an_event_says_so(kind: str) -> None:
    body = [f"data: {CHUNK}\n\n".encode(), b'data: {"choi']
    async with (
        _client(kind, lambda _: MockResponse(200, {"content-type": "text/event-stream"}, body)) as client,
        client.open_sse("/chat/completions", BODY, headers={}, deadline=None) as stream,
    ):
        data = [event.data async for batch in stream.batches() for event in batch]
        assert stream.ended_mid_event
    assert data == [CHUNK]


async def test_events_before_a_dropped_connection_arrive_then_the_failure(kind: str) -> None:
    pieces = [f"data: {CHUNK}\n\n".encode()] * 3
    reply = MockResponse(
        200,
        {"content-type": "text/event-stream", "x-correlation-id": "corr-2"},
        pieces,
        error=ConnectionResetError(104, "Connection reset by peer"),
    )
    received: list[str] = []
    async with _client(kind, lambda _: reply) as client:
        with pytest.raises(errors.UpstreamError) as raised:
            await _read_into(received, client)
    assert received == [CHUNK] * 3
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.correlation_id == "corr-2"


@pytest.mark.parametrize(
    ("reply", "code", "said"),
    [
        (MockResponse.json({"error": {"message": "bad model"}}, status=400), "INVALID_ARGUMENT", "bad model"),
        (
            MockResponse.json({"id": "x", "choices": []}),
            "INTERNAL",
            "JSON document instead of an event stream",
        ),
        (MockResponse(200, {"content-type": "text/html"}, b"<html>sign in</html>"), "INTERNAL", "HTML page"),
        # media types are case-insensitive (RFC 9110): a server's own spelling is still a page or a document
        (
            MockResponse(200, {"content-type": "Text/HTML; charset=UTF-8"}, b"<html>sign in</html>"),
            "INTERNAL",
            "HTML page",
        ),
        (
            MockResponse(200, {"content-type": "Application/JSON"}, b'{"error": {"message": "quota"}}'),
            "INTERNAL",
            "quota",
        ),
    ],
    ids=["error-status", "json-answer", "html-page", "html-page-uppercase", "json-error-uppercase"],
)
async def test_a_stream_that_does_not_begin_as_one_is_an_error(
    kind: str, reply: MockResponse, code: str, said: str
) -> None:
    async with _client(kind, lambda _: reply) as client:
        with pytest.raises(errors.UpstreamError) as raised:
            await _events(client)
    assert raised.value.code.name == code
    assert said in raised.value.message


async def _forever(started: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """One event, then silence."""
    yield f"data: {CHUNK}\n\n".encode()
    if started is not None:
        started.set()
    await asyncio.Event().wait()


async def test_a_silent_stream_ends_at_the_deadline_after_what_arrived(kind: str) -> None:
    reply = MockResponse(200, {"content-type": "text/event-stream", "x-correlation-id": "c-3"}, _forever())
    received: list[str] = []
    async with _client(kind, lambda _: reply) as client:
        deadline = asyncio.get_running_loop().time() + 0.5
        with pytest.raises(errors.UpstreamTimeoutError) as raised:
            await _read_into(received, client, deadline)
    assert received == [CHUNK]
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.correlation_id == "c-3"


# The read timeout (`--upstream-read-timeout`: the upstream's silence while a read waits) on the real
# transports' stream path; aiohttp's is the transport's lazy timer there (bridge.http.transports.aiohttp).
READ_TIMEOUT = 0.3


async def _stream_events(kind: str, body: AsyncIterator[bytes], pause: float = 0.0) -> list[str]:
    """The events of a stream answered with `body` under READ_TIMEOUT, no deadline; the reader stops
    reading for `pause` seconds after the first read."""
    reply = MockResponse(200, {"content-type": "text/event-stream", "x-correlation-id": "c-4"}, body)
    received: list[str] = []
    async with transport_for(kind, lambda _: reply, TransportSettings(read_timeout=READ_TIMEOUT)) as (
        transport,
        base_url,
    ):
        client = HttpClient(HttpSettings(base_url=base_url), errors=OPENAI_COMPATIBLE, transport=transport)
        async with client.open_sse("/chat/completions", BODY, headers={}, deadline=None) as stream:
            while (batch := await stream.read()) is not None:
                received += [event.data for event in batch]
                if pause and len(received) == 1:
                    await asyncio.sleep(pause)
    return received


async def _paced(count: int, gap: float, *, then_silent: bool = False) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield f"data: {CHUNK}\n\n".encode()
        await asyncio.sleep(gap)
    if then_silent:
        await asyncio.Event().wait()
    yield b"data: [DONE]\n\n"


@pytest.mark.parametrize("real", REAL_KINDS)
async def test_a_stream_longer_than_the_read_timeout_with_short_gaps_is_read_whole(real: str) -> None:
    # 12 events 0.05 s apart: the whole body takes twice the read timeout, no gap comes near it.
    received = await _stream_events(real, _paced(12, READ_TIMEOUT / 6))
    assert received == [CHUNK] * 12 + ["[DONE]"]


@pytest.mark.parametrize("real", REAL_KINDS)
async def test_a_reader_busy_elsewhere_is_not_the_upstream_s_silence(real: str) -> None:
    # The reader stops reading for three read timeouts while the upstream goes on sending (its bytes wait
    # in the buffer): the upstream was never silent, the stream is read whole.
    received = await _stream_events(real, _paced(12, READ_TIMEOUT / 6), pause=3 * READ_TIMEOUT)
    assert received == [CHUNK] * 12 + ["[DONE]"]


@pytest.mark.parametrize("real", REAL_KINDS)
async def test_a_stream_silent_for_the_read_timeout_ends_after_what_arrived(real: str) -> None:
    with pytest.raises(errors.UpstreamTimeoutError) as raised:
        await _stream_events(real, _paced(2, 0.0, then_silent=True))
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_info(raised.value).reason == "UPSTREAM_TIMEOUT"
    assert raised.value.message.startswith("timed out waiting for upstream data (127.0.0.1:")
    assert raised.value.correlation_id == "c-4"


async def _read_pool_into(received: list[str], pool: UpstreamPool, deadline: float) -> None:
    async with pool.open_sse("/chat/completions", BODY, headers={}, deadline=deadline) as stream:
        while (batch := await stream.read()) is not None:
            received += [event.data for event in batch]


async def test_the_deadline_ends_a_pool_s_stream_read_by_another_task_after_its_commit() -> None:
    # With hedging on, the stream is read up to its commit point in the attempt's own task, then by the
    # caller's: the deadline must cancel the task that waits then (the caller's), not the finished one.
    started = asyncio.Event()
    reply = MockResponse(200, {"content-type": "text/event-stream"}, _forever(started))
    client = HttpClient(
        HttpSettings(base_url=MOCK_BASE_URL),
        errors=OPENAI_COMPATIBLE,
        transport=MockTransport(lambda _: reply),
    )
    pool = UpstreamPool([client], retry=RetryPolicy(), hedge=HedgePolicy(after=30.0))
    received: list[str] = []
    deadline = asyncio.get_running_loop().time() + 0.3
    with pytest.raises(errors.UpstreamTimeoutError) as raised:
        await _read_pool_into(received, pool, deadline)
    assert received == [CHUNK]
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


# ------------------------------------------------------------------- the mock transport's own failures


async def test_a_refused_connection_is_unreachable_and_retried_before_any_reply() -> None:
    attempts: list[int] = []

    def refuse(_: MockRequest) -> MockResponse:
        if len(attempts) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return MockResponse.json({"ok": True})

    transport = MockTransport(refuse)
    settings = HttpSettings(base_url="http://gw.test/v1", retry=RetryPolicy(retries=2, backoff=0.001))
    client = HttpClient(settings, errors=OPENAI_COMPATIBLE, transport=transport, on_attempt=attempts.append)
    assert await _post(client) == {"ok": True}
    assert attempts == [1, 2, 3]
    once = HttpClient(
        HttpSettings(base_url="http://gw.test/v1"), errors=OPENAI_COMPATIBLE, transport=transport
    )
    attempts.clear()
    with pytest.raises(errors.UpstreamUnavailableError) as raised:
        await _post(once)
    info = error_info(raised.value)
    assert (info.reason, info.metadata["cause"]) == ("UPSTREAM_UNREACHABLE", "connection refused")
    assert raised.value.message == "could not connect to upstream (gw.test:80): connection refused"
    assert transport.open_replies == 0


async def test_a_cancelled_stream_closes_its_reply() -> None:
    started = asyncio.Event()

    async def endless(_: MockRequest) -> MockResponse:
        return MockResponse(200, {"content-type": "text/event-stream"}, _forever(started))

    transport = MockTransport(endless)
    client = HttpClient(
        HttpSettings(base_url="http://gw.test/v1"), errors=OPENAI_COMPATIBLE, transport=transport
    )
    reading = asyncio.create_task(_events(client))
    await started.wait()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert transport.open_replies == 0
