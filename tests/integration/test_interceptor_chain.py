"""The interceptor chain's two ways of running (bridge.rpc.interceptors): plain hooks in one try/finally
when no interceptor needs `around`, nested context managers otherwise; both give every interceptor the
same view of the call, its final code included."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.rpc.access import AccessLog
from bridge.rpc.call import Context, RpcCall
from bridge.rpc.callers import CallerAuthorization
from bridge.rpc.chain import _Active
from bridge.rpc.interceptors import ErrorMapping, Interceptor
from bridge.rpc.limits import ConcurrencyLimit
from bridge.rpc.tracing import Tracing
from bridge.upstream.headers import AuthPolicy
from tests.helpers import call_failing, chat_request

Events = list[tuple[str, str, str]]


class _Hooks(Interceptor):
    def __init__(self, name: str, events: Events) -> None:
        self.name, self.events = name, events
        self.ended = asyncio.Event()  # set as each call ends here (the client may have its status before)

    def call_started(self, call: RpcCall, context: Context) -> object:
        self.events.append((self.name, "started", call.name))
        return self.name

    def call_ended(self, call: RpcCall, started: object) -> None:
        assert started == self.name
        self.events.append((self.name, "ended", call.code.name))
        self.ended.set()


class _Around(Interceptor):
    def __init__(self, events: Events) -> None:
        self.events = events

    @contextlib.asynccontextmanager
    async def around(self, call: RpcCall, context: Context) -> AsyncIterator[None]:
        self.events.append(("around", "started", call.name))
        try:
            yield
        finally:
            self.events.append(("around", "ended", call.code.name))


class _Nothing(Interceptor):
    """Overrides nothing: costs nothing."""


def test_the_usual_chain_runs_as_plain_hooks() -> None:
    nothing, access, tracing = _Nothing(), AccessLog(), Tracing()
    active = _Active.of((tracing, nothing, access, ErrorMapping()))
    assert active.plain
    assert active.hooked == (tracing, access)
    assert isinstance(active.mapping, ErrorMapping)
    assert not _Active.of((_Around([]), access, ErrorMapping())).plain
    # who may call, pinned before error mapping when the bridge has a key to guard: its hook refuses
    callers = CallerAuthorization(AuthPolicy(api_key="iak_test_key"))
    guarded = _Active.of((tracing, access, callers, ErrorMapping()))
    assert guarded.plain
    assert guarded.hooked == (tracing, access, callers)
    # --max-concurrent-rpcs: the limit takes and returns its slot in hooks, so the chain stays plain
    limit = ConcurrencyLimit(4)
    limited = _Active.of((tracing, access, limit, callers, ErrorMapping()))
    assert limited.plain
    assert limited.hooked == (tracing, access, limit, callers)


@pytest.mark.parametrize("around", [False, True], ids=["plain", "nested"])
@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_hooks_see_the_call_and_its_final_code_either_way(
    start_bridge: Any, around: bool, rpc: str
) -> None:
    events: Events = []
    outer = _Hooks("outer", events)
    interceptors: list[Interceptor] = [outer, _Nothing(), _Hooks("inner", events)]
    if around:
        interceptors.insert(1, _Around(events))
    bridge = await start_bridge(interceptors=interceptors)
    method = "CreateChatCompletion" if rpc == "unary" else "StreamChatCompletion"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        if rpc == "unary":
            await stub.CreateChatCompletion(chat_request(), timeout=10)
        else:
            assert [chunk async for chunk in stub.StreamChatCompletion(chat_request(), timeout=10)]
        await asyncio.wait_for(outer.ended.wait(), 10)
        outer.ended.clear()
        error, _ = await call_failing(stub, rpc, chat_request(model="error-404"), timeout=10)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        await asyncio.wait_for(outer.ended.wait(), 10)
    names = ["outer", "around", "inner"] if around else ["outer", "inner"]
    for code in ("OK", "NOT_FOUND"):
        call = [(name, "started", method) for name in names]
        call += [(name, "ended", code) for name in reversed(names)]
        assert events[: len(call)] == call
        del events[: len(call)]
    assert events == []


@pytest.mark.parametrize("around", [False, True], ids=["plain", "nested"])
async def test_a_hook_that_refuses_ends_the_call_with_its_status_either_way(
    start_bridge: Any, around: bool
) -> None:
    """The limit refuses in `call_started`: ErrorMapping ends the call on the plain path, the hooks' scope
    (Interceptor.around) in a chain that nests context managers; no slot is taken or given back."""
    events: Events = []
    outer, limit = _Hooks("outer", events), ConcurrencyLimit(1)
    limit.in_flight = 1  # full: the next call is refused
    interceptors: list[Interceptor] = [outer, limit]
    if around:
        interceptors.insert(1, _Around(events))
    bridge = await start_bridge(interceptors=interceptors)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        error, _ = await call_failing(stub, "unary", chat_request(), timeout=10)
        await asyncio.wait_for(outer.ended.wait(), 10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-concurrent-rpcs" in (error.details() or "")
    assert limit.in_flight == 1
    assert events[-1] == ("outer", "ended", "RESOURCE_EXHAUSTED")
