"""Draining on SIGTERM, in order: readiness NOT_SERVING while calls are still accepted (--drain-delay),
then the graceful stop (--shutdown-grace) in which a stream already in flight completes. Run as the real
`prisme-bridge serve` subprocess; the order is observed, never timed."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.chat.service import SERVICE_NAME
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.rpc.server import GrpcServer
from tests.helpers import chat_request, cli_env, collect, run_cli, wait_request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_LISTENING = r"bridge listening on 127\.0\.0\.1:(\d+)"


def _fresh_channel(address: str) -> grpc.aio.Channel:
    """A channel with its own connection, as a new probe or a new client has."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def _status(address: str, service: str) -> int:
    async with _fresh_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


async def _unary(address: str, text: str) -> str:
    async with _fresh_channel(address) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        reply = await stub.CreateChatCompletion(chat_request(text=text), timeout=10)
    return str(reply.choices[0].message.content)


async def test_sigterm_drains_then_stops_with_grace_and_the_stream_in_flight_completes(
    mock_gateway: MockGateway,
) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url)
    argv = ("serve", "--listen", "127.0.0.1:0", "--drain-delay", "120", "--shutdown-grace", "60")
    async with run_cli(*argv, env=env) as bridge:
        address = f"127.0.0.1:{(await bridge.wait_log(_LISTENING)).group(1)}"
        async with _fresh_channel(address) as channel:
            # slow-3000: the upstream answers 3 s after the request, so the stream is in flight throughout
            stream = pb_grpc.ChatCompletionServiceStub(channel).StreamChatCompletion(
                chat_request(model="slow-3000", text="finishes after SIGTERM"), timeout=60
            )
            chunks = asyncio.create_task(collect(stream))
            await wait_request(mock_gateway, lambda r: r["model"] == "slow-3000", within=10)

            bridge.process.send_signal(signal.SIGTERM)
            await bridge.wait_log("draining: readiness NOT_SERVING, calls still accepted for 120.0 s")
            # a NEW probe sees the drain; liveness stays SERVING; NEW calls are still served
            assert await _status(address, SERVICE_NAME) == NOT_SERVING
            assert await _status(address, "") == SERVING
            assert await _unary(address, "accepted while draining") == "accepted while draining"

            # a second signal ends the delay; the stop begins and new calls are refused...
            bridge.process.send_signal(signal.SIGTERM)
            await bridge.wait_log("drain delay cut short")
            await bridge.wait_log(r"shutting down \(grace 60 s\)")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _unary(address, "too late")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # ...while the stream in flight completes within the grace period
            received = await chunks
            assert await stream.code() == grpc.StatusCode.OK
        assert "".join(c.choices[0].delta.content for c in received) == "finishes after SIGTERM"
        assert received[-1].choices[0].finish_reason == "stop"
        assert await bridge.wait_exit(within=30) == 0


async def test_the_drain_delay_ends_by_itself(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_DRAIN_DELAY="0.2")
    async with run_cli("serve", "--listen", "127.0.0.1:0", env=env) as bridge:
        await bridge.wait_log(_LISTENING)
        bridge.process.send_signal(signal.SIGTERM)
        assert await bridge.wait_exit(within=20) == 0
        logs = await bridge.logs()
    assert logs.index("draining:") < logs.index("shutting down")
    assert "cut short" not in logs


async def test_begin_drain_keeps_liveness_and_serves_new_calls(bridge: GrpcServer) -> None:
    address = f"127.0.0.1:{bridge.port}"
    await bridge.begin_drain()
    assert await _status(address, SERVICE_NAME) == NOT_SERVING
    assert await _status(address, "") == SERVING
    assert await _unary(address, "still here") == "still here"
    await bridge.stop(grace=1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _unary(address, "gone")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
