"""Overload: five times --max-concurrent-rpcs in callers at once. The excess is refused at once with
RESOURCE_EXHAUSTED (never queued), the calls admitted get exactly their answers, and the process keeps
answering throughout and afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.rpc.server import GrpcServer
from tests.helpers import chat_request, collect, status_details

CAP = 8
HOLD = "slow-3000"  # each admitted call holds its slot while the upstream takes 3 s to answer


async def _call(stub: pb_grpc.ChatCompletionServiceStub, i: int, done: list[int]) -> tuple[str, Any]:
    """Call i (unary when even, a stream when odd) with its own text: ("ok", text) or ("refused", error)."""
    request = chat_request(model=HOLD, text=f"caller {i} speaks")
    try:
        if i % 2 == 0:
            reply = await stub.CreateChatCompletion(request, timeout=30)
            text = reply.choices[0].message.content
        else:
            chunks = await collect(stub.StreamChatCompletion(request, timeout=30))
            text = "".join(c.choices[0].delta.content for c in chunks)
    except grpc.aio.AioRpcError as error:
        return "refused", error
    finally:
        done.append(i)
    return "ok", text


async def test_five_times_the_cap_refuses_the_excess_at_once_and_answers_the_rest(
    start_bridge, mock_gateway: MockGateway
) -> None:
    bridge: GrpcServer = await start_bridge(max_concurrent_rpcs=CAP)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        done: list[int] = []
        calls = [asyncio.create_task(_call(stub, i, done)) for i in range(5 * CAP)]
        # While CAP calls hold every slot, the process still answers: probes, and refusals.
        while len(done) < 4 * CAP:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED, timeout=0.05)
        outcomes = await asyncio.gather(*calls)

        admitted = {i: result for i, (kind, result) in enumerate(outcomes) if kind == "ok"}
        refused = [result for kind, result in outcomes if kind == "refused"]
        assert len(admitted) == CAP
        assert all(text == f"caller {i} speaks" for i, text in admitted.items())
        assert len(refused) == 4 * CAP
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert status_details(error)["ErrorInfo"].reason == "OVERLOADED"
        # Refused at once, not queued: every refusal came back before any admitted call's answer.
        assert set(done[: 4 * CAP]) == set(range(5 * CAP)) - set(admitted)
        assert len(mock_gateway.requests()) == CAP  # the excess never reached the upstream

        # The slots are all free again: a full round of calls is admitted.
        again = await asyncio.gather(
            *(stub.CreateChatCompletion(chat_request(text=f"again {i}"), timeout=10) for i in range(CAP))
        )
        assert [r.choices[0].message.content for r in again] == [f"again {i}" for i in range(CAP)]
