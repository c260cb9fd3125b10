"""Operating the bridge: health and readiness through a graceful stop, reflection as grpcurl sees it
(the real grpcurl binary), and many concurrent streams through one bridge."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.config import ServeSettings
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.server import BridgeServer
from bridge.service import SERVICE_NAME
from bridge.upstream import UpstreamSettings
from tests.conftest import chat_request
from tests.test_integration_errors import poll

GOLDEN = Path(__file__).parent / "golden" / "request_full.json"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def find_grpcurl() -> str:
    """The grpcurl binary; the CI installs it, so its absence is a failure, not a skip."""
    found = shutil.which("grpcurl")
    if found:
        return found
    candidates = [Path("/root/go/bin/grpcurl")]
    go = shutil.which("go")
    if go:
        gopath = subprocess.run(
            [go, "env", "GOPATH"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if gopath:
            candidates.append(Path(gopath) / "bin" / "grpcurl")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(
        "grpcurl not found on PATH, in /root/go/bin or $(go env GOPATH)/bin; install it to run this test"
    )


async def grpcurl(*args: str, stdin: bytes | None = None, limit: float = 15) -> tuple[int, str, str]:
    """Runs grpcurl without blocking the event loop the bridge is serving on: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        find_grpcurl(),
        *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


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
    bridge: BridgeServer, channel: grpc.aio.Channel, mock_gateway: MockGateway
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
    assert await poll(lambda: mock_gateway.requests()[-1]["outcome"] == "client_disconnected", within=1.0)


# ------------------------------------------------------------------------------------ reflection/grpcurl


async def test_reflection_lists_the_services(bridge: BridgeServer) -> None:
    code, out, err = await grpcurl("-plaintext", f"127.0.0.1:{bridge.port}", "list")
    assert code == 0, err
    assert set(out.split()) == {SERVICE_NAME, HEALTH, REFLECTION}


async def test_describe_shows_the_methods(bridge: BridgeServer) -> None:
    code, out, err = await grpcurl("-plaintext", f"127.0.0.1:{bridge.port}", "describe", SERVICE_NAME)
    assert code == 0, err
    assert "rpc CreateChatCompletion" in out
    assert "returns ( stream .prisme.llmgateway.v1.StreamChatCompletionResponse )" in out


async def test_describe_shows_the_proto_comments(bridge: BridgeServer) -> None:
    address = f"127.0.0.1:{bridge.port}"
    code, out, err = await grpcurl("-plaintext", address, "describe", SERVICE_NAME)
    assert code == 0, err
    assert "Chat completions through the Prisme.ai LLM gateway" in out
    assert "Streams the answer" in out
    code, out, err = await grpcurl("-plaintext", address, "describe", "prisme.llmgateway.v1.ChatMessage")
    assert code == 0, err
    assert "Author role" in out
    assert "Typed alternative to `content` for plain text" in out
    # Contract v1: the new fields and the gateway's own meanings are documented where callers look.
    request = "prisme.llmgateway.v1.CreateChatCompletionRequest"
    code, out, err = await grpcurl("-plaintext", address, "describe", request)
    assert code == 0, err
    assert "propagates to agent-to-agent (A2A) flows" in out
    assert "At most 128 characters" in out
    assert "safety_identifier (abuse detection) and prompt_cache_key" in out
    assert '"xhigh"' in out
    assert "map<string, string> metadata = 25;" in out
    code, out, err = await grpcurl(
        "-plaintext", address, "describe", "prisme.llmgateway.v1.ChatCompletionMessage"
    )
    assert code == 0, err
    assert "or `reasoning` (newer vLLM" in out
    assert "repeated .prisme.llmgateway.v1.Annotation annotations = 6;" in out


async def test_golden_request_pastes_into_grpcurl(bridge: BridgeServer, mock_gateway: MockGateway) -> None:
    body = json.loads(GOLDEN.read_text())
    del body["stream_options"]  # only valid on StreamChatCompletion
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        json.dumps(body, ensure_ascii=False),
        f"127.0.0.1:{bridge.port}",
        f"{SERVICE_NAME}/CreateChatCompletion",
    )
    assert code == 0, err
    response = json.loads(out)
    assert response["object"] == "chat.completion"
    assert response["choices"][0]["message"]["content"] == "Merci ! Et demain ?"
    # The upstream received exactly the pasted body (plus the stream flag the RPC decides).
    assert mock_gateway.requests()[-1]["body"] == {**body, "stream": False}


async def test_golden_request_streams_through_grpcurl_from_stdin(bridge: BridgeServer) -> None:
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        "@",
        f"127.0.0.1:{bridge.port}",
        f"{SERVICE_NAME}/StreamChatCompletion",
        stdin=GOLDEN.read_bytes(),
    )
    assert code == 0, err
    chunks = [json.loads(part) for part in out.replace("}\n{", "}\x00{").split("\x00")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices")) == (
        "Merci ! Et demain ?"
    )
    assert "usage" in chunks[-1]
    assert "choices" not in chunks[-1]


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
    assert ServeSettings.model_fields["max_connections"].default >= 1000
    assert UpstreamSettings.__dataclass_fields__["max_connections"].default >= 1000


async def test_300_streams_open_upstream_at_once(
    bridge: BridgeServer, stub, mock_gateway: MockGateway
) -> None:
    # "slow-10000" holds each upstream request open without sending anything: 300 "endless" streams would
    # push 6000 ticks/s through this one test process and take far longer than the pool check needs.
    assert bridge.upstream.settings.max_connections >= 1000
    calls = [stub.StreamChatCompletion(chat_request(model="slow-10000"), timeout=30) for _ in range(300)]
    try:
        all_open = await poll(
            lambda: sum(r["outcome"] == "in_progress" for r in mock_gateway.requests()) == 300, within=10
        )
        assert all_open, f"{len(mock_gateway.requests())} upstream requests seen, not 300 at once"
    finally:
        for call in calls:
            call.cancel()
    assert await poll(
        lambda: all(r["outcome"] == "client_disconnected" for r in mock_gateway.requests()), within=5
    )
    assert {await call.code() for call in calls} == {grpc.StatusCode.CANCELLED}
