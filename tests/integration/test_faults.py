"""Fault injection: the real bridge in front of the real mock gateway (or a bare TCP peer) misbehaving in
every way docs/reliability.md lists. Each failure ends with its documented code, reason and message, the
chunks that arrived before it are delivered, and liveness (health service "") stays SERVING throughout."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from bridge.rpc.server import GrpcServer
from tests.helpers import (
    call_failing,
    chat_request,
    collect,
    every_transport,
    free_port,
    status_details,
    wait_all_ended,
)

# Every test that starts a bridge runs once per upstream transport.
upstream_transport = every_transport()

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
INTERNAL = grpc.StatusCode.INTERNAL
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

WORDS = [f"word{i} " for i in range(10)]


async def _assert_live(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ------------------------------------------------------------------------ nothing received is lost


async def test_chunks_sent_just_before_a_reset_are_all_delivered(start_bridge) -> None:
    """The mock sends a role chunk and ten word chunks, then resets the connection at once: every stream
    gets all eleven chunks, in order, before its UNAVAILABLE (aiohttp's reader used to raise first and drop
    what it had buffered: most streams lost all of their chunks)."""
    bridge: GrpcServer = await start_bridge()
    request = chat_request(model="reset", text="".join(WORDS).strip())

    async def one(stub: pb_grpc.ChatCompletionServiceStub) -> None:
        error, received = await call_failing(stub, "stream", request, timeout=10)
        assert [c.choices[0].delta.content for c in received] == ["", *WORDS[:-1], WORDS[-1].strip()]
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert status_details(error)["ErrorInfo"].reason in (
            "UPSTREAM_STREAM_TRUNCATED",  # aiohttp: the chunked body was cut short
            "UPSTREAM_CONNECTION_LOST",  # httpcore: reading failed with ECONNRESET
        )

    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        for _ in range(15):
            await one(stub)
        await asyncio.gather(*(one(stub) for _ in range(15)))
        await _assert_live(channel)


# ----------------------------------------------------------------- each fault: its status and message

_REFUSED = "refused"  # stands for an upstream URL on a port nobody listens on
STREAM_START = ["", "Partial ", "answer"]  # what the mock's broken scripts send before they break
BIG = "x" * 2000  # one word: its chunk is larger than a 1 KiB --max-event-bytes


@dataclass(frozen=True)
class Fault:
    model: str
    rpc: str
    code: grpc.StatusCode
    reason: str
    message: str  # exact; {address} is the upstream's host:port
    received: tuple[str, ...] = ()  # the content of each chunk delivered before the failure
    settings: dict[str, Any] = field(default_factory=dict)
    text: str = "Hello there, bridge"
    # (reason, message) where the httpx transport (httpcore) tells the fault otherwise: it reports a body
    # cut short as the connection failing under the read, as it does for any failed read.
    httpx: tuple[str, str] | None = None


P = "upstream protocol error: "
CUT = "upstream response body cut short ({address})"
HTTPX_RESET = (
    "UPSTREAM_CONNECTION_LOST",
    "error reading from upstream ({address}): connection reset by peer",
)
SILENT = "timed out waiting for upstream data ({address})"
WORD_CHUNKS = ("", "Hello ", "there, ", "bridge")  # the echo of the default text, before the finish
LITELLM = "litellm.APIConnectionError: APIConnectionError: OpenAIException - Connection error."
REFUSED = "could not connect to upstream ({address}): connection refused"
FAULTS: dict[str, Fault] = {
    "connection-refused-unary": Fault(
        "echo", "unary", UNAVAILABLE, "UPSTREAM_UNREACHABLE", REFUSED + " (after 3 attempts)",
        settings={"upstream_url": _REFUSED},
    ),
    "connection-refused-stream": Fault(
        "echo", "stream", UNAVAILABLE, "UPSTREAM_UNREACHABLE", REFUSED, settings={"upstream_url": _REFUSED}
    ),
    "reset-mid-stream": Fault(
        "reset", "stream", UNAVAILABLE, "UPSTREAM_STREAM_TRUNCATED", CUT, WORD_CHUNKS, httpx=HTTPX_RESET
    ),
    "reset-mid-body": Fault(
        "reset", "unary", UNAVAILABLE, "UPSTREAM_STREAM_TRUNCATED", CUT, httpx=HTTPX_RESET
    ),
    "closed-mid-event": Fault(
        "truncated", "stream", UNAVAILABLE, "UPSTREAM_STREAM_TRUNCATED", CUT, STREAM_START,
        httpx=("UPSTREAM_CONNECTION_LOST", "upstream broke the connection ({address})"),
    ),
    "truncated-event": Fault(
        "truncated-eof", "stream", UNAVAILABLE, "UPSTREAM_STREAM_TRUNCATED",
        P + "stream ended in the middle of an event", STREAM_START,
    ),
    "no-end-of-stream": Fault(
        "no-finish", "stream", UNAVAILABLE, "UPSTREAM_STREAM_INCOMPLETE",
        P + "stream ended without [DONE] or a finish_reason", WORD_CHUNKS,
    ),
    "slow-headers-unary": Fault(
        "slow-2000", "unary", DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", SILENT, settings={"read_timeout": 0.3}
    ),
    "slow-headers-stream": Fault(
        "slow-2000", "stream", DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", SILENT, settings={"read_timeout": 0.3}
    ),
    "slow-body-unary": Fault(
        "stall-2000", "unary", DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", SILENT, settings={"read_timeout": 0.3}
    ),
    "slow-body-stream": Fault(
        "stall-2000", "stream", DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", SILENT, STREAM_START,
        settings={"read_timeout": 0.3},
    ),
    "malformed-json-chunk": Fault(
        "bad-json", "stream", INTERNAL, "UPSTREAM_INVALID_RESPONSE", P + "stream chunk is not valid JSON",
        STREAM_START,
    ),
    "malformed-json-reply": Fault(
        "bad-json", "unary", INTERNAL, "UPSTREAM_INVALID_RESPONSE", P + "reply is not valid JSON"
    ),
    "invalid-utf8-reply": Fault(
        "bad-utf8", "unary", INTERNAL, "UPSTREAM_INVALID_RESPONSE", P + "reply is not valid UTF-8"
    ),
    "event-over-the-size-cap": Fault(
        "echo", "stream", RESOURCE_EXHAUSTED, "UPSTREAM_RESPONSE_TOO_LARGE",
        P + "SSE line exceeds max_event_bytes=1024", ("",), settings={"max_event_bytes": 1024}, text=BIG,
    ),
    "reply-over-the-size-cap": Fault(
        "echo", "unary", RESOURCE_EXHAUSTED, "UPSTREAM_RESPONSE_TOO_LARGE",
        P + "reply body exceeds max_body_bytes=1024", settings={"max_event_bytes": 1024}, text=BIG,
    ),
    "html-200-unary": Fault(
        "html-200", "unary", INTERNAL, "UPSTREAM_INVALID_RESPONSE",
        P + "reply is not valid JSON (content-type text/html)",
    ),
    "html-200-stream": Fault(
        "html-200", "stream", INTERNAL, "UPSTREAM_INVALID_RESPONSE",
        P + "upstream answered a stream request with an HTML page instead of an event stream",
    ),
    "5xx-unary": Fault(
        "flaky-3-502", "unary", UNAVAILABLE, "UPSTREAM_UNAVAILABLE",
        "upstream HTTP 502: Mock error 502 (after 3 attempts)",
    ),
    "5xx-stream": Fault(
        "flaky-1-503", "stream", UNAVAILABLE, "UPSTREAM_UNAVAILABLE",
        "upstream HTTP 503: The model provider is unavailable",
    ),
    "connection-error-mid-stream": Fault(
        "litellm-stream-error", "stream", UNAVAILABLE, "UPSTREAM_UNAVAILABLE",
        f"upstream stream error: {LITELLM}", STREAM_START,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FAULTS))
async def test_each_fault_ends_with_its_documented_status(
    start_bridge, mock_gateway: MockGateway, name: str, upstream_transport: str
) -> None:
    fault = FAULTS[name]
    reason, message = (fault.reason, fault.message)
    if upstream_transport == "httpx" and fault.httpx is not None:
        reason, message = fault.httpx
    settings = dict(fault.settings)
    address = f"127.0.0.1:{mock_gateway.port}"
    if settings.get("upstream_url") == _REFUSED:
        address = f"127.0.0.1:{free_port()}"
        settings["upstream_url"] = f"http://{address}/v1"
    bridge: GrpcServer = await start_bridge(**settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        request = chat_request(model=fault.model, text=fault.text)
        error, received = await call_failing(stub, fault.rpc, request, timeout=10)
        assert error.code() == fault.code
        assert status_details(error)["ErrorInfo"].reason == reason
        assert error.details() == message.format(address=address)
        assert [c.choices[0].delta.content for c in received] == list(fault.received)
        await _assert_live(channel)
    records = await wait_all_ended(mock_gateway)
    assert all(r["outcome"] != "in_progress" for r in records)


async def test_invalid_utf8_in_a_stream_is_replaced_as_event_streams_are(stub, channel) -> None:
    """The WHATWG event stream rules decode invalid UTF-8 as U+FFFD: the stream goes on and ends OK."""
    chunks = await collect(stub.StreamChatCompletion(chat_request(model="bad-utf8"), timeout=10))
    assert [c.choices[0].delta.content for c in chunks] == [*STREAM_START, "caf\ufffd ", ""]
    await _assert_live(channel)


# --------------------------------------------------------------------------- faults that need a stage


async def test_a_burst_of_5xx_is_ridden_out_by_unary_calls_and_reported_to_streams(
    start_bridge, mock_gateway: MockGateway
) -> None:
    """Eight calls at once while the upstream fails its next eight requests: unary calls retry until it
    recovers (each call has more retries than the burst has failures, so every one must get through);
    streams, never retried, each get the 503."""
    bridge: GrpcServer = await start_bridge(retries=8, retry_backoff=0.01, retry_max_backoff=0.1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        replies = await asyncio.gather(
            *(
                stub.CreateChatCompletion(chat_request(model="flaky-8-503", text=f"call {i}"))
                for i in range(8)
            )
        )
        assert [r.choices[0].message.content for r in replies] == [f"call {i}" for i in range(8)]
        failures = await asyncio.gather(
            *(call_failing(stub, "stream", chat_request(model="flaky-8-502"), timeout=10) for _ in range(8))
        )
        assert {(e.code(), status_details(e)["ErrorInfo"].reason) for e, _ in failures} == {
            (UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
        }
        await _assert_live(channel)
    outcomes = [r["outcome"] for r in mock_gateway.requests() if r["model"] == "flaky-8-503"]
    assert (outcomes.count("error"), outcomes.count("completed")) == (8, 8)


async def test_the_bridge_recovers_when_the_upstream_restarts(start_bridge) -> None:
    upstream = await start_mock_gateway("127.0.0.1", 0)
    port = upstream.port
    bridge: GrpcServer = await start_bridge(upstream_url=upstream.base_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)

        async def both_answer() -> None:
            texts = [f"text {i}" for i in range(4)]
            replies = await asyncio.gather(
                *(stub.CreateChatCompletion(chat_request(text=t), timeout=10) for t in texts)
            )
            assert [r.choices[0].message.content for r in replies] == texts
            streams = await asyncio.gather(
                *(collect(stub.StreamChatCompletion(chat_request(text=t), timeout=10)) for t in texts)
            )
            assert ["".join(c.choices[0].delta.content for c in s) for s in streams] == texts

        await both_answer()  # the pool now holds keep-alive connections to the first process
        await upstream.close()
        for rpc in ("unary", "stream"):
            error, _ = await call_failing(stub, rpc, chat_request(), timeout=10)
            assert status_details(error)["ErrorInfo"].reason == "UPSTREAM_UNREACHABLE"
        await _assert_live(channel)
        upstream = await start_mock_gateway("127.0.0.1", port)  # the same address, a new process
        try:
            await both_answer()  # no restart of the bridge, no call lost to a stale connection
            await _assert_live(channel)
        finally:
            await upstream.close()


class _SilentPeer:
    """A TCP server that accepts connections and reads whatever comes, but never answers: an upstream
    that hung, or a connection half-open behind a dead peer. It counts the connections still open."""

    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _SilentPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            while await reader.read(65536):
                pass  # until the bridge gives up on it and closes it
        finally:
            writer.close()
            async with self._changed:
                self.open -= 1
                self._changed.notify_all()

    async def all_closed(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.open == 0)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_an_upstream_that_never_answers_times_out_and_its_connection_is_closed(
    start_bridge, rpc: str
) -> None:
    async with _SilentPeer() as peer:
        bridge: GrpcServer = await start_bridge(upstream_url=f"http://{peer.address}/v1", read_timeout=0.3)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            error, _ = await call_failing(stub, rpc, chat_request(), timeout=10)
            assert error.code() == DEADLINE_EXCEEDED
            assert status_details(error)["ErrorInfo"].reason == "UPSTREAM_TIMEOUT"
            assert error.details() == f"timed out waiting for upstream data ({peer.address})"
            # A deadline shorter than the read timeout ends the wait first.
            error, _ = await call_failing(stub, rpc, chat_request(), timeout=0.15)
            assert error.code() == DEADLINE_EXCEEDED
            await _assert_live(channel)
        async with asyncio.timeout(5):
            await peer.all_closed()  # each abandoned request's connection is closed, not left to the pool
        assert peer.accepted == 2  # a timeout is never retried: the upstream may still be working
