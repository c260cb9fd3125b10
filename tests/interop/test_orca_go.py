"""grpc-go's weighted_round_robin balancer on the bridge's ORCA load reports (gRFC A51, A58).

Two `prisme-bridge serve` processes (--max-concurrent-rpcs 50, ORCA on by default) in front of the mock
gateway; one is held busy by 40 streams the mock sits on (its application utilization 41/50 while it
answers, the idle one 1/50). tests/interop/goorca, a grpc-go client with a manual resolver listing both
(as DNS lists a headless Service's pods), sends unary calls one at a time: with clients/go's
prisme.WeightedRoundRobin (blackoutPeriod 1 s, weightUpdatePeriod 0.1 s) at least 70 % of the calls
counted after 5 s of settling reach the idle bridge; with plain round_robin, the control, they split
evenly. The Go side is built from tests/interop/goorca; nothing is skipped (CI installs Go).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as chat_grpc
from bridge.mock_gateway import MockGateway
from tests.helpers import CliProcess, chat_request, cli_env, run_cli, wait_request

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
GOORCA = ROOT / "tests" / "interop" / "goorca"
LIMIT = 50
BUSY_STREAMS = 40
HELD = "slow-600000"  # the mock holds these replies for ten minutes: streams in flight until cancelled


@pytest.fixture(scope="session")
def goorca(tmp_path_factory: pytest.TempPathFactory) -> str:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found on PATH: install Go (CI does; this test is never skipped)")
    binary = tmp_path_factory.mktemp("goorca") / "goorca"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=GOORCA, check=True)
    return str(binary)


@asynccontextmanager
async def _bridge(mock: MockGateway) -> AsyncIterator[str]:
    """`prisme-bridge serve` on a free port in front of `mock`; its address."""
    env = cli_env(BRIDGE_UPSTREAM_URL=mock.base_url)
    args = ("serve", "--listen", "127.0.0.1:0", "--max-concurrent-rpcs", str(LIMIT), "--log-format", "text")
    async with run_cli(*args, env=env) as bridge:
        port = (await bridge.wait_log(r"bridge listening on 127\.0\.0\.1:(\d+)")).group(1)
        # An access line per call: read on, or a full pipe would block the bridge's logging, and its calls.
        reading = asyncio.create_task(_read_logs(bridge))
        yield f"127.0.0.1:{port}"
        assert await bridge.stop(signal.SIGTERM, within=30) == 0
        await reading


async def _read_logs(bridge: CliProcess) -> None:
    assert bridge.process.stderr is not None
    while line := await bridge.process.stderr.readline():
        bridge.log.append(line.decode())


@asynccontextmanager
async def _held_streams(address: str, mock: MockGateway, count: int) -> AsyncIterator[None]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = chat_grpc.ChatCompletionServiceStub(channel)
        streams = [stub.StreamChatCompletion(chat_request(model=HELD)) for _ in range(count)]

        def held(_: object) -> bool:
            return sum(r["model"] == HELD and r["outcome"] == "in_progress" for r in mock.requests()) == count

        try:
            await wait_request(mock, held, within=30)
            yield
        finally:
            for stream in streams:
                stream.cancel()


async def _calls_per_bridge(goorca: str, policy: str, *addresses: str) -> dict[str, int]:
    process = await asyncio.create_subprocess_exec(
        goorca,
        "-addrs",
        ",".join(addresses),
        "-policy",
        policy,
        "-settle",
        "5s",
        "-calls",
        "300",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    counts: dict[str, int] = json.loads(stdout)
    assert set(counts) <= set(addresses)
    assert sum(counts.values()) == 300
    return counts


@pytest.mark.timeout(240)
async def test_weighted_round_robin_sends_most_calls_to_the_idle_bridge_round_robin_splits_evenly(
    goorca: str, mock_gateway: MockGateway
) -> None:
    async with AsyncExitStack() as stack:
        idle = await stack.enter_async_context(_bridge(mock_gateway))
        busy = await stack.enter_async_context(_bridge(mock_gateway))
        await stack.enter_async_context(_held_streams(busy, mock_gateway, BUSY_STREAMS))

        weighted = await _calls_per_bridge(goorca, "weighted_round_robin", busy, idle)
        plain = await _calls_per_bridge(goorca, "round_robin", busy, idle)

    print(f"calls per bridge (idle {idle}): weighted_round_robin {weighted}, round_robin {plain}")
    assert weighted.get(idle, 0) >= 0.7 * 300, f"weighted_round_robin: {weighted} (idle {idle})"
    # The control: without weights, one call each in turn.
    assert abs(plain.get(idle, 0) - plain.get(busy, 0)) <= 0.1 * 300, f"round_robin: {plain}"
