"""Fault injection: the real bridge in front of the real mock gateway (or a bare TCP peer) misbehaving in
every way docs/reliability.md lists. Each failure ends with its documented code, reason and message, the
chunks that arrived before it are delivered, and liveness (health service "") stays SERVING throughout."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.rpc.server import GrpcServer
from tests.helpers import call_failing, chat_request, status_details

WORDS = [f"word{i} " for i in range(10)]


async def _assert_live(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ------------------------------------------------------------------------ nothing received is lost


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_chunks_sent_just_before_a_reset_are_all_delivered(start_bridge, transport: str) -> None:
    """The mock sends a role chunk and ten word chunks, then resets the connection at once: every stream
    gets all eleven chunks, in order, before its UNAVAILABLE (aiohttp's reader used to raise first and drop
    what it had buffered: most streams lost all of their chunks)."""
    bridge: GrpcServer = await start_bridge(upstream_transport=transport)
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
