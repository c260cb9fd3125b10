"""bridge.upstream_call: the one path from a servicer to the upstream, unary and streaming, on the mock
transport: headers from the caller's metadata, the deadline, reply metadata, the upstream's facts reported
to the call being served; outside a served call it is an error, before anything is sent."""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bridge import errors
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.transports.mock import MockRequest, MockResponse, MockTransport
from bridge.rpc.call import RpcCall, enter_call
from bridge.upstream.errors import OPENAI_COMPATIBLE
from bridge.upstream.headers import RETURNED_HEADERS, AuthPolicy, HeaderPolicy
from bridge.upstream_call import UpstreamCaller

T = TypeVar("T")
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8, "cost": 0.25}
REPLY_HEADERS = {"x-correlation-id": "corr-9", "x-request-id": "req-9"}


class _Context:
    """What a servicer context gives the upstream path: metadata in, a deadline, initial metadata out."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), remaining: float | None = 30.0) -> None:
        self._metadata = metadata
        self._remaining = remaining
        self.sent: list[tuple[tuple[str, str], ...]] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._remaining

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.sent.append(metadata)


def _caller(handler: Callable[[MockRequest], MockResponse]) -> tuple[UpstreamCaller, list[MockRequest]]:
    seen: list[MockRequest] = []

    def recording(request: MockRequest) -> MockResponse:
        seen.append(request)
        return handler(request)

    client = HttpClient(
        HttpSettings(base_url="http://gw.test/v1"),
        errors=OPENAI_COMPATIBLE,
        transport=MockTransport(recording),
    )
    headers = HeaderPolicy(auth=AuthPolicy(mode="passthrough"), returned=RETURNED_HEADERS)
    return UpstreamCaller(client, headers), seen


async def _served(work: Callable[[], Awaitable[T]], *, streaming: bool = False) -> tuple[RpcCall, T]:
    """`work()` in a task serving a call, as the interceptor chain runs a handler; (the call, its result)."""
    call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion", streaming)

    async def serving() -> T:
        enter_call(call)
        return await work()

    return call, await asyncio.create_task(serving())


async def test_a_unary_request_reports_the_upstreams_facts_to_the_call_being_served() -> None:
    caller, seen = _caller(lambda _: MockResponse.json({"id": "x", "usage": USAGE}, headers=REPLY_HEADERS))
    context = _Context(metadata=(("authorization", "Bearer caller-key"),))
    call, reply = await _served(lambda: caller.call(context, "POST", "/chat/completions", body={"m": 1}))
    assert reply.body["id"] == "x"
    assert seen[0].headers["authorization"] == "Bearer caller-key"
    assert (call.upstream_status, call.correlation_id) == (200, "corr-9")
    assert (call.prompt_tokens, call.completion_tokens, call.cost) == (3, 5, 0.25)
    assert call.upstream_seconds is not None
    assert ("x-correlation-id", "corr-9") in context.sent[0]


async def test_a_stream_reports_the_upstreams_facts_and_its_usage_chunk() -> None:
    chunk = json.dumps({"choices": [], "usage": USAGE})
    caller, seen = _caller(lambda _: MockResponse.events(chunk, "[DONE]", headers=REPLY_HEADERS))
    context = _Context()

    async def read() -> list[str]:
        async with caller.stream(context, "/chat/completions", {"stream": True}) as events:
            data = [event.data async for batch in events.batches() for event in batch]
            caller.report_usage({"usage": USAGE})
            return data

    call, data = await _served(read, streaming=True)
    assert data == [chunk, "[DONE]"]
    assert seen[0].json() == {"stream": True}
    assert (call.upstream_status, call.correlation_id, call.prompt_tokens) == (200, "corr-9", 3)
    assert ("x-request-id", "req-9") in context.sent[0]


class _Refusing(_Context):
    """A caller gone before the reply's headers could be sent back."""

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        raise ConnectionResetError("the caller went away")


@pytest.mark.parametrize("ending", ["read", "refused", "metadata_failed"])
async def test_a_stream_tells_its_upstream_time_and_closes_its_reply_however_it_ends(ending: str) -> None:
    if ending == "refused":
        reply = MockResponse.json({"error": {"message": "busy"}}, status=503)
    else:
        reply = MockResponse.events("{}", "[DONE]", headers=REPLY_HEADERS)
    transport = MockTransport(lambda _: reply)
    client = HttpClient(
        HttpSettings(base_url="http://gw.test/v1"), errors=OPENAI_COMPATIBLE, transport=transport
    )
    caller = UpstreamCaller(client, HeaderPolicy(returned=RETURNED_HEADERS))
    context = _Refusing() if ending == "metadata_failed" else _Context()

    async def read() -> list[str]:
        async with caller.stream(context, "/chat/completions", {"stream": True}) as events:
            return [event.data async for batch in events.batches() for event in batch]

    async def attempt() -> BaseException | list[str]:
        try:
            return await read()
        except Exception as exc:  # what ended it, for the assertions below
            return exc

    call, outcome = await _served(attempt, streaming=True)
    expected = {"read": list, "refused": errors.UpstreamHTTPError, "metadata_failed": ConnectionResetError}
    assert isinstance(outcome, expected[ending])
    assert call.upstream_seconds is not None  # told on every path, as the access line and metrics read it
    assert transport.open_replies == 0  # the upstream's reply closed whatever ended the stream
    assert call.upstream_status == (None if ending == "refused" else 200)


async def test_calling_the_upstream_outside_a_served_call_is_an_error_before_anything_is_sent() -> None:
    caller, seen = _caller(lambda _: MockResponse.json({}))
    context: Any = _Context()
    with pytest.raises(RuntimeError, match="no RPC is being served"):
        await caller.call(context, "GET", "/models")
    with pytest.raises(RuntimeError, match="no RPC is being served"):
        async with caller.stream(context, "/chat/completions", {}):
            pass
    with pytest.raises(RuntimeError, match="no RPC is being served"):
        caller.report_usage({"usage": USAGE})
    assert seen == []


def test_only_the_upstream_caller_calls_the_upstream_client() -> None:
    """Every service reaches the upstream through UpstreamCaller: no other module calls the client's
    request methods (bridge.http, which defines them, aside)."""
    root = Path(__file__).parents[2] / "bridge"
    callers = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root.parent).as_posix()
        if relative.startswith("bridge/http/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("request_json", "open_sse"):
                callers.add(relative)
    assert callers == {"bridge/upstream_call.py"}
