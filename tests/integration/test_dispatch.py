"""How grpc.aio reaches the bridge's handlers (bridge.rpc.server, bridge.rpc.chain): the interceptor chain
wraps each handler where it is registered, so grpc.aio runs no interceptor of its own on each call; however
a service registers (registered methods, generic handlers, or both as generated code does), its calls run
inside the chain; a plain grpc.aio interceptor given to build_server still runs, outside the chain; and a
served call leaves no cyclic garbage of the bridge's own."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.rpc.call import HEALTH_SERVICE, Context, RpcCall
from bridge.rpc.interceptors import Interceptor
from bridge.rpc.server import GrpcServer, ServerConfig, Service, build_server
from tests.helpers import chat_request

Request = health_pb2.HealthCheckRequest
Reply = health_pb2.HealthCheckResponse
Events = list[tuple[str, str]]


class _Recorder(Interceptor):
    """A chain interceptor (plain hooks) that notes each call it runs for; not for health."""

    skip_services = frozenset({HEALTH_SERVICE})

    def __init__(self, events: Events) -> None:
        self.events = events

    def call_started(self, call: RpcCall, context: Context) -> object:
        self.events.append(("chain", call.method))
        return None


class _GrpcRecorder(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in grpc-stubs only
    """A plain grpc.aio interceptor (as OpenTelemetry's is): notes each call grpc asks it about."""

    def __init__(self, events: Events) -> None:
        self.events = events

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        self.events.append(("grpc", handler_call_details.method))
        return await continuation(handler_call_details)


@dataclass(frozen=True)
class _Checker:
    """A service with one unary method, `Check`, registered the ways `registered` and `generic` say."""

    name: str
    registered: bool = True
    generic: bool = True

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Check": grpc.unary_unary_rpc_method_handler(
                self.check,
                request_deserializer=Request.FromString,
                response_serializer=Reply.SerializeToString,
            )
        }
        if self.generic:
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.name, handlers),))
        if self.registered:
            server.add_registered_method_handlers(self.name, handlers)  # type: ignore[attr-defined]

    async def check(self, request: Any, context: Any) -> Any:
        return Reply(status=Reply.SERVING)


@contextmanager
def _grpc_servers_made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The `interceptors` argument of each grpc.aio.server(...) made meanwhile."""
    made: list[Any] = []
    real = grpc.aio.server

    def server(*args: Any, **kwargs: Any) -> grpc.aio.Server:
        made.append(kwargs.get("interceptors"))
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(grpc.aio, "server", server)
        yield made


def _built(monkeypatch: pytest.MonkeyPatch, services: list[Service], **parts: Any) -> tuple[GrpcServer, Any]:
    """build_server(services, parts) on a free port, and the interceptors it gave grpc.aio.server."""
    with _grpc_servers_made(monkeypatch) as made:
        built = build_server(ServerConfig(listen="127.0.0.1:0"), services=services, **parts)
    assert len(made) == 1
    return built, made[0]


@asynccontextmanager
async def _served(built: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            yield channel
    finally:
        await built.stop(0)


async def _check(channel: grpc.aio.Channel, method: str, raw: bytes | None = None) -> grpc.StatusCode:
    """The code of one call to `method`: a well-formed request, or `raw` bytes as the message."""
    serializer = Request.SerializeToString if raw is None else None
    call = channel.unary_unary(method, request_serializer=serializer, response_deserializer=Reply.FromString)
    try:
        reply = await call(Request() if raw is None else raw, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    assert reply.status == Reply.SERVING
    return grpc.StatusCode.OK


async def test_the_default_bridge_gives_grpc_no_interceptor(
    start_bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpc.aio runs an interceptor on every call just to find its handler (a coroutine per interceptor
    and per continuation); the chain is in the handlers instead."""
    with _grpc_servers_made(monkeypatch) as made:
        bridge = await start_bridge()
    assert made  # the main server first (a --health-listen one would come after)
    assert not made[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        reply = await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(
            chat_request(), timeout=10
        )
    assert reply.choices


async def test_every_way_of_registering_runs_inside_the_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    events: Events = []
    services: list[Service] = [
        _Checker("t.Registered", generic=False),
        _Checker("t.Generic", registered=False),
        _Checker("t.Both"),
    ]
    built, given = _built(monkeypatch, services, interceptors=[_Recorder(events)])
    assert given is None
    async with _served(built) as channel:
        for service in ("t.Registered", "t.Generic", "t.Both"):
            method = f"/{service}/Check"
            assert await _check(channel, method) == grpc.StatusCode.OK
            # not a request message: the chain's lenient deserializer, then error mapping
            assert await _check(channel, method, raw=b"\xff") == grpc.StatusCode.INVALID_ARGUMENT
            assert await _check(channel, f"/{service}/Unknown") == grpc.StatusCode.UNIMPLEMENTED
            assert events == [("chain", method)] * 2, service
            events.clear()
        assert await _check(channel, "/t.Nobody/Check") == grpc.StatusCode.UNIMPLEMENTED
        # health and reflection are registered through the chain too; this interceptor skips health
        health = await health_pb2_grpc.HealthStub(channel).Check(Request(service=""), timeout=10)
        assert health.status == Reply.SERVING
        assert events == []


async def test_a_plain_grpc_interceptor_still_runs_outside_the_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    events: Events = []
    outside = _GrpcRecorder(events)
    built, given = _built(
        monkeypatch, [_Checker("t.Both")], interceptors=[_Recorder(events)], grpc_interceptors=[outside]
    )
    assert given == [outside]
    async with _served(built) as channel:
        assert await _check(channel, "/t.Both/Check") == grpc.StatusCode.OK
        assert await _check(channel, "/t.Both/Unknown") == grpc.StatusCode.UNIMPLEMENTED
    assert events == [
        ("grpc", "/t.Both/Check"),
        ("chain", "/t.Both/Check"),
        ("grpc", "/t.Both/Unknown"),
    ]


CALLS: Final = 40


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_a_served_call_leaves_no_cyclic_garbage_of_the_bridges(start_bridge: Any, rpc: str) -> None:
    """Every object a call leaves in a reference cycle costs the collector: over CALLS calls (client,
    bridge and mock gateway all in this process) the only cycles collected are grpc.aio's own, one per
    call (grpcio 1.85's `_find_method_handler` coroutine keeps its local closure in its own scope, with
    the call's `_HandlerCallDetails` and metadata). Named transport: httpx's leaves cycles of its own."""
    bridge = await start_bridge(upstream_transport="aiohttp")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)

        async def call() -> None:
            if rpc == "unary":
                assert (await stub.CreateChatCompletion(chat_request(), timeout=10)).choices
            else:
                assert [chunk async for chunk in stub.StreamChatCompletion(chat_request(), timeout=10)]

        for _ in range(5):  # first calls make what lives on (connections, caches)
            await call()
        with _cyclic_garbage() as garbage:
            for _ in range(CALLS):
                await call()
    grpcs = _grpc_dispatch_cycles(garbage)
    assert [_name(o) for o in garbage if id(o) not in grpcs] == []
    assert len(grpcs) <= CALLS * 16  # grpc's own: a handful of objects per call (5 here), nothing growing


@contextmanager
def _cyclic_garbage() -> Iterator[list[Any]]:
    """The objects in reference cycles made in the block (no collection runs meanwhile), after it."""
    garbage: list[Any] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # the collector keeps what it finds unreachable in gc.garbage
    try:
        gc.garbage.clear()
        yield garbage
        gc.collect()
        garbage.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _grpc_dispatch_cycles(garbage: list[Any]) -> set[int]:
    """Ids of the objects of grpc.aio's own per-call cycle: the `_find_method_handler` scope, its
    `query_handlers` closure, the `_HandlerCallDetails` and its metadata tuple and items."""
    ids: set[int] = set()
    for thing in garbage:
        kind = type(thing).__name__
        if kind == "_HandlerCallDetails":
            ids.add(id(thing))
            for metadata in gc.get_referents(thing):
                if isinstance(metadata, tuple):
                    ids.add(id(metadata))
                    ids.update(id(item) for item in metadata)
        elif kind.endswith("_find_method_handler") or getattr(thing, "__name__", "") == "query_handlers":
            ids.add(id(thing))
    return ids


def _name(thing: Any) -> str:
    return f"{type(thing).__module__}.{type(thing).__qualname__}"
