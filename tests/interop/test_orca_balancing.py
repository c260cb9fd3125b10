"""grpc-go's and grpc-java's weighted_round_robin balancers on the bridge's ORCA load reports (gRFC
A51, A58), without xDS: the policy set by service config, the addresses from a resolver.

Two `prisme-bridge serve` processes (--max-concurrent-rpcs 50, ORCA on by default) in front of the mock
gateway; one is held busy by 40 streams the mock sits on (its application utilization 41/50 while it
answers, the idle one 1/50). A client whose resolver lists both (as DNS lists a headless Service's pods)
sends unary calls one at a time: with weighted_round_robin (blackoutPeriod 1 s, weightUpdatePeriod 0.1 s,
set by clients/go's prisme.WeightedRoundRobin or clients/java's PrismeChannels.weightedRoundRobin) at
least 70 % of the calls counted after 5 s of settling reach the idle bridge; with plain round_robin, the
control, they split evenly. The clients: tests/interop/goorca (grpc-go, a manual resolver) and
clients/java's test class WeightedRoundRobinProbe (grpc-java with grpc-xds on its class path, a static
resolver). Nothing is skipped: CI installs Go, Java and Maven.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as chat_grpc
from bridge.mock_gateway import MockGateway
from tests.helpers import CliProcess, chat_request, cli_env, find_tool, run_cli, wait_request

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
GOORCA = ROOT / "tests" / "interop" / "goorca"
JAVA_CLIENT = ROOT / "clients" / "java"
JAVA_PROBE = "ai.prisme.llmgateway.client.WeightedRoundRobinProbe"
MAVEN_DEPENDENCY = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0"  # as scripts/bootstrap
SETTLE_S, CALLS = 5, 300
LIMIT = 50
BUSY_STREAMS = 40
HELD = "slow-600000"  # the mock holds these replies for ten minutes: streams in flight until cancelled


@pytest.fixture(scope="session")
def go_probe(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The Go client (ADDRESSES POLICY SETTLE_SECONDS CALLS, as the Java one)."""
    binary = tmp_path_factory.mktemp("goorca") / "goorca"
    subprocess.run([find_tool("go"), "build", "-o", str(binary), "."], cwd=GOORCA, check=True)
    return [str(binary)]


@pytest.fixture(scope="session")
def java_probe(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The Java client: clients/java's test classes (scripts/check's `mvn package` compiled them) on the
    test class path, grpc-xds included."""
    classes = JAVA_CLIENT / "target" / "test-classes"
    if not (classes / (JAVA_PROBE.replace(".", "/") + ".class")).is_file():
        subprocess.run([find_tool("mvn"), "-B", "-q", "test-compile"], cwd=JAVA_CLIENT, check=True)
    listing = tmp_path_factory.mktemp("java-classpath") / "classpath.txt"
    build_classpath = f"{MAVEN_DEPENDENCY}:build-classpath"
    options = ["-Dmdep.includeScope=test", f"-Dmdep.outputFile={listing}"]
    subprocess.run([find_tool("mvn"), "-B", "-q", build_classpath, *options], cwd=JAVA_CLIENT, check=True)
    path = [str(JAVA_CLIENT / "target" / "classes"), str(classes), listing.read_text().strip()]
    return [find_tool("java"), "-cp", ":".join(path), JAVA_PROBE]


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


async def _calls_per_bridge(probe: list[str], policy: str, *addresses: str) -> dict[str, int]:
    args = (",".join(addresses), policy, str(SETTLE_S), str(CALLS))  # both clients take these
    process = await asyncio.create_subprocess_exec(
        *probe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    counts: dict[str, int] = json.loads(stdout)
    assert set(counts) <= set(addresses)
    assert sum(counts.values()) == CALLS
    return counts


@pytest.mark.timeout(240)
@pytest.mark.parametrize("client", ["go", "java"])
async def test_weighted_round_robin_sends_most_calls_to_the_idle_bridge_round_robin_splits_evenly(
    client: str, request: pytest.FixtureRequest, mock_gateway: MockGateway
) -> None:
    probe: list[str] = request.getfixturevalue(f"{client}_probe")
    async with AsyncExitStack() as stack:
        idle = await stack.enter_async_context(_bridge(mock_gateway))
        busy = await stack.enter_async_context(_bridge(mock_gateway))
        await stack.enter_async_context(_held_streams(busy, mock_gateway, BUSY_STREAMS))

        weighted = await _calls_per_bridge(probe, "weighted_round_robin", busy, idle)
        plain = await _calls_per_bridge(probe, "round_robin", busy, idle)

    print(f"{client}: calls per bridge (idle {idle}): weighted_round_robin {weighted}, round_robin {plain}")
    assert weighted.get(idle, 0) >= 0.7 * CALLS, f"weighted_round_robin: {weighted} (idle {idle})"
    # The control: without weights, one call each in turn.
    assert abs(plain.get(idle, 0) - plain.get(busy, 0)) <= 0.1 * CALLS, f"round_robin: {plain}"
