"""Limits and load shedding on the real bridge: --max-concurrent-rpcs, message sizes, connection age."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bridge.app import default_interceptors
from bridge.chat.service import SERVICE_NAME
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.rpc.call import Context, RpcCall
from bridge.rpc.interceptors import Interceptor
from bridge.settings import ServeSettings
from tests.helpers import call_failing, chat_request, status_details, wait_request

# ------------------------------------------------------------------------------- --max-concurrent-rpcs


@contextlib.asynccontextmanager
async def _stub(start_bridge: Any, **settings: Any) -> AsyncIterator[Any]:
    """A stub on a new bridge started with the flat `settings`."""
    bridge = await start_bridge(**settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield pb_grpc.ChatCompletionServiceStub(channel), channel


async def _open_streams(stub: Any, count: int) -> list[Any]:
    """`count` endless streams, each past its first chunk (so its call is being served)."""
    calls = [stub.StreamChatCompletion(chat_request(model="endless"), timeout=30) for _ in range(count)]
    for call in calls:
        await asyncio.wait_for(call.read(), 5)
    return calls


async def _end(calls: list[Any], mock: MockGateway) -> None:
    """Cancels `calls` and waits until the upstream saw each of them go (the bridge has ended them)."""
    ended = {r["id"] for r in mock.requests() if r["outcome"] == "client_disconnected"}
    for call in calls:
        call.cancel()
    await wait_request(
        mock,
        lambda r: (
            len(ended | {x["id"] for x in mock.requests() if x["outcome"] == "client_disconnected"})
            >= len(ended) + len(calls)
        ),
        within=5,
    )


async def test_the_call_over_the_cap_fails_at_once_and_never_goes_upstream(
    start_bridge: Any, mock_gateway: MockGateway
) -> None:
    async with _stub(start_bridge, max_concurrent_rpcs=2) as (stub, channel):
        streams = await _open_streams(stub, 2)
        # A 1 s deadline: a queued call would end DEADLINE_EXCEEDED; a refused one comes back well before.
        for rpc in ("unary", "stream", "unary"):  # refusals do not free a slot either
            error, _ = await call_failing(stub, rpc, chat_request(), timeout=1.0)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            assert "--max-concurrent-rpcs" in (error.details() or "")
            info = status_details(error)["ErrorInfo"]
            assert (info.reason, info.domain) == ("OVERLOADED", "grpc-bridge.prisme.ai")
            assert dict(info.metadata) == {}
        assert len(mock_gateway.requests()) == 2

        # Health and reflection are exempt: probes must not fail because the bridge is busy.
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1.0)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = [s.name async for reply in listing for s in reply.list_services_response.service]
        assert SERVICE_NAME in services

        await _end(streams[:1], mock_gateway)  # one slot frees...
        reply = await stub.CreateChatCompletion(chat_request(text="room again"), timeout=5)
        assert reply.choices[0].message.content == "room again"
        await _end(streams[1:], mock_gateway)


async def test_slots_are_returned_by_every_way_a_call_ends(
    start_bridge: Any, mock_gateway: MockGateway
) -> None:
    async with _stub(start_bridge, max_concurrent_rpcs=2) as (stub, _):
        for _ in range(3):  # cancelled streams, refusals, errors, deadlines, successes, round after round
            streams = await _open_streams(stub, 2)
            await call_failing(stub, "unary", chat_request(), timeout=1.0)
            await _end(streams, mock_gateway)
            await call_failing(stub, "unary", chat_request(model="error-500"), timeout=5)
            await call_failing(stub, "stream", chat_request(model="stream-error"), timeout=5)
            await call_failing(stub, "unary", chat_request(model="slow-2000"), timeout=0.2)
            await stub.CreateChatCompletion(chat_request(), timeout=5)
        # Still exactly two slots: two streams fit, a third call does not.
        streams = await _open_streams(stub, 2)
        error, _ = await call_failing(stub, "unary", chat_request(), timeout=1.0)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await _end(streams, mock_gateway)


# ------------------------------------------------------------------------------------- message sizes


async def test_a_request_over_the_receive_limit_is_refused_before_the_upstream(
    start_bridge: Any, mock_gateway: MockGateway
) -> None:
    async with _stub(start_bridge, max_receive_message_bytes=4096) as (stub, _):
        await stub.CreateChatCompletion(chat_request(text="x" * 3000), timeout=5)  # under it: served
        error, _ = await call_failing(stub, "unary", chat_request(text="x" * 5000), timeout=5)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(mock_gateway.requests()) == 1


async def test_a_reply_over_the_send_limit_fails_rather_than_being_sent(start_bridge: Any) -> None:
    async with _stub(start_bridge, max_send_message_bytes=4096) as (stub, _):
        await stub.CreateChatCompletion(chat_request(text="y " * 1000), timeout=5)
        error, _ = await call_failing(stub, "unary", chat_request(text="y " * 2500), timeout=5)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# ------------------------------------------------------------------------------------ connection age


class _Peers(Interceptor):
    """Records each call's client address: a new port means a new connection."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @contextlib.asynccontextmanager
    async def around(self, call: RpcCall, context: Context) -> AsyncIterator[None]:
        self.seen.append((call.name, context.peer()))
        yield


@contextlib.asynccontextmanager
async def _endless_on_aged_connection(
    start_bridge: Any, mock: MockGateway, age: float, grace: float
) -> AsyncIterator[tuple[Any, Any, _Peers]]:
    """(stub, an endless stream, the peers seen) on a bridge whose connections age after `age` s."""
    peers = _Peers()
    settings = ServeSettings(upstream_url=mock.base_url)
    bridge = await start_bridge(
        max_connection_age=age,
        max_connection_age_grace=grace,
        interceptors=[peers, *default_interceptors(settings)],
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        stream = stub.StreamChatCompletion(chat_request(model="endless"), timeout=30)
        try:
            yield stub, stream, peers
        finally:
            stream.cancel()


async def _read_for(call: Any, seconds: float) -> int:
    """Reads `call` for about `seconds` (the endless stream ticks every 50 ms); chunks read."""
    return sum([1 async for _ in _chunks(call, round(seconds / 0.05))])


async def _chunks(call: Any, count: int) -> AsyncIterator[Any]:
    for _ in range(count):
        yield await asyncio.wait_for(call.read(), 5)


async def test_an_aged_connection_moves_new_calls_while_its_stream_finishes(
    start_bridge: Any, mock_gateway: MockGateway
) -> None:
    aged = _endless_on_aged_connection(start_bridge, mock_gateway, age=0.5, grace=60)
    async with aged as (stub, stream, peers):
        await _read_for(stream, 1.5)  # well past the age (+10 % jitter): GOAWAY has been sent
        await stub.CreateChatCompletion(chat_request(), timeout=5)
        assert await _read_for(stream, 0.5) > 0  # the stream on the old connection is still served
    (stream_peer,) = [peer for name, peer in peers.seen if name == "StreamChatCompletion"]
    (unary_peer,) = [peer for name, peer in peers.seen if name == "CreateChatCompletion"]
    assert unary_peer != stream_peer  # the client reconnected: it can land on another replica


async def test_an_aged_connection_is_closed_after_its_grace(
    start_bridge: Any, mock_gateway: MockGateway
) -> None:
    aged = _endless_on_aged_connection(start_bridge, mock_gateway, age=0.3, grace=0.3)
    async with aged as (_, stream, _):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _read_for(stream, 20)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
