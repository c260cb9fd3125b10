"""Operating the bridge: health and readiness through a graceful stop, reflection as grpcurl sees it
(the real grpcurl binary), and many concurrent streams through one bridge."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.chat.service import SERVICE_NAME
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.http.transports.base import TransportSettings
from bridge.mock_gateway import MockGateway
from bridge.rpc.server import GrpcServer
from bridge.settings import ServeSettings
from tests.helpers import chat_request, wait_all_ended, wait_request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# ----------------------------------------------------------------------------------------------- health


async def test_health_check(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_readiness_goes_not_serving_when_a_graceful_stop_begins(
    bridge: GrpcServer, channel: grpc.aio.Channel, mock_gateway: MockGateway
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    stub = pb_grpc.ChatCompletionServiceStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    first = await asyncio.wait_for(watch.read(), 5)
    assert first.status == SERVING

    in_flight = stub.StreamChatCompletion(chat_request(model="endless"))
    assert (await asyncio.wait_for(in_flight.read(), 5)).choices[0].delta.role == "assistant"

    stopping = asyncio.create_task(bridge.stop(grace=10))
    update = await asyncio.wait_for(watch.read(), 5)
    assert update.status == NOT_SERVING
    assert not stopping.done()  # the endless stream holds the grace period open...
    for _ in range(2):  # ...and keeps flowing while the pod drains
        chunk = await asyncio.wait_for(in_flight.read(), 5)
        assert chunk.choices[0].delta.content == "tick "

    in_flight.cancel()
    watch.cancel()
    await asyncio.wait_for(stopping, 5)
    await wait_request(mock_gateway, lambda r: r["outcome"] == "client_disconnected", within=1.0)


# ------------------------------------------------------------------------------------------ concurrency


async def test_200_concurrent_streams_all_complete(stub) -> None:
    async def one(i: int) -> str:
        call = stub.StreamChatCompletion(chat_request(text=f"stream {i} says {i * 7} words"), timeout=30)
        chunks = [c async for c in call]
        assert await call.code() == grpc.StatusCode.OK
        assert chunks[-1].choices[0].finish_reason == "stop"
        return "".join(c.choices[0].delta.content for c in chunks)

    texts = await asyncio.gather(*(one(i) for i in range(200)))
    assert texts == [f"stream {i} says {i * 7} words" for i in range(200)]


def test_pool_default_allows_1000_streams() -> None:
    assert ServeSettings(upstream_url="http://gw.test/v1").upstream.max_connections >= 1000
    assert TransportSettings().max_connections >= 1000


async def test_300_streams_open_upstream_at_once(bridge: GrpcServer, stub, mock_gateway: MockGateway) -> None:
    # "slow-10000" holds each upstream request open without sending anything: 300 "endless" streams would
    # push 6000 ticks/s through this one test process and take far longer than the pool check needs.
    calls = [stub.StreamChatCompletion(chat_request(model="slow-10000"), timeout=30) for _ in range(300)]
    try:
        await wait_request(mock_gateway, lambda r: r["id"] == 300, within=10)
        open_now = sum(r["outcome"] == "in_progress" for r in mock_gateway.requests())
        assert open_now == 300, f"{open_now} upstream requests open at once, not 300"
    finally:
        for call in calls:
            call.cancel()
    records = await wait_all_ended(mock_gateway, within=5)
    assert {r["outcome"] for r in records} == {"client_disconnected"}
    assert {await call.code() for call in calls} == {grpc.StatusCode.CANCELLED}
