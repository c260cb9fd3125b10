"""Deadlines expiring by the hundred, unary and streaming, against `prisme-bridge serve` as a process: the
caller gets DEADLINE_EXCEEDED, the upstream request is closed, and the server logs one clean access line per
call with the same code (issue 14: grpc logged "ExecuteBatchError raised in core by servicer method" and a
traceback when the bridge aborted a call its deadline had just ended, and the same event was logged as
DEADLINE_EXCEEDED or CANCELLED depending on who noticed first)."""

from __future__ import annotations

import asyncio
import re
import signal

import grpc

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from tests.helpers import chat_request, cli_env, every_transport, run_cli, wait_all_ended

# Every test that starts a bridge runs once per upstream transport.
upstream_transport = every_transport()

# The text access line: "... bridge.access: StreamChatCompletion DEADLINE_EXCEEDED service=... code='...'".
_ACCESS_LINE = re.compile(r"bridge\.access: (CreateChatCompletion|StreamChatCompletion) (\w+) ")
# Each expires while the bridge waits: for the reply's headers (slow-2000), or between chunks (endless).
_CASES = [("unary", "slow-2000"), ("stream", "slow-2000"), ("stream", "endless")]


async def _expire(stub: pb_grpc.ChatCompletionServiceStub, rpc: str, model: str) -> grpc.StatusCode:
    try:
        if rpc == "unary":
            await stub.CreateChatCompletion(chat_request(model=model), timeout=0.5)
        else:
            async for _ in stub.StreamChatCompletion(chat_request(model=model), timeout=0.5):
                pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_many_expiries_log_no_traceback_and_one_outcome(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_SHUTDOWN_GRACE="1")
    calls = [_CASES[i % len(_CASES)] for i in range(40)]
    async with run_cli("serve", "--listen", "127.0.0.1:0", "--log-format", "text", env=env) as bridge:
        port = (await bridge.wait_log(r"bridge listening on 127\.0\.0\.1:(\d+)")).group(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            codes = []
            for _ in range(4):
                codes += await asyncio.gather(*(_expire(stub, rpc, model) for rpc, model in calls))
        records = await wait_all_ended(mock_gateway, within=5)
        await bridge.stop(signal.SIGTERM, within=10)
        logs = await bridge.logs()
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert {r["outcome"] for r in records} == {"client_disconnected"}
    assert "Traceback" not in logs
    assert not [line for line in logs.splitlines() if " ERROR " in line]
    outcomes = [m.group(2) for m in _ACCESS_LINE.finditer(logs)]
    # Calls cancelled before their handler ran log nothing; every call that did logs the deadline.
    assert len(outcomes) >= len(codes) // 2
    assert set(outcomes) == {"DEADLINE_EXCEEDED"}
