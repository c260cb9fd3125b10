"""Shared fixtures: the real mock gateway and the real bridge, on loopback, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from bridge.config import ServeSettings
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from bridge.server import BridgeServer, start_server

BridgeFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BRIDGE_* variable of the developer's shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def mock_gateway() -> AsyncIterator[MockGateway]:
    gateway = await start_mock_gateway("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
async def start_bridge(mock_gateway: MockGateway) -> AsyncIterator[BridgeFactory]:
    """Starts bridges in front of the mock gateway; settings override the defaults (port 0)."""
    started: list[BridgeServer] = []

    async def start(**overrides: Any) -> BridgeServer:
        values: dict[str, Any] = {"listen": "127.0.0.1:0", "upstream_url": mock_gateway.base_url}
        values.update(overrides)
        server = await start_server(ServeSettings(**values))
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(grace=0)


@pytest.fixture
async def bridge(start_bridge: BridgeFactory) -> BridgeServer:
    server: BridgeServer = await start_bridge()
    return server


@pytest.fixture
async def channel(bridge: BridgeServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.ChatCompletionServiceStub:
    return pb_grpc.ChatCompletionServiceStub(channel)


def chat_request(
    model: str = "echo", text: str = "Hello there, bridge", **fields: Any
) -> pb.CreateChatCompletionRequest:
    """A one-user-message request."""
    from google.protobuf import struct_pb2

    message = pb.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))
    return pb.CreateChatCompletionRequest(model=model, messages=[message], **fields)
