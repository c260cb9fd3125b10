"""Every default service of the bridge is reported by health (readiness, through a graceful stop) and
listed by reflection, with no wiring of its own: build_server covers whatever default_services returns."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bridge.chat.service import SERVICE_NAME as CHAT
from bridge.embeddings.service import SERVICE_NAME as EMBEDDINGS
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as chat_grpc
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2, model_pb2
from bridge.gen.prisme.llmgateway.v1 import embedding_service_pb2_grpc as embedding_grpc
from bridge.gen.prisme.llmgateway.v1 import model_service_pb2_grpc as model_grpc
from bridge.models.service import SERVICE_NAME as MODELS
from bridge.rpc.call import ORCA_SERVICE
from bridge.rpc.server import GrpcServer
from tests.helpers import chat_request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = (CHAT, MODELS, EMBEDDINGS)
HAIKU = "bedrock/anthropic.claude-3-haiku"


def test_the_service_names() -> None:
    assert SERVICES == (
        "prisme.llmgateway.v1.ChatCompletionService",
        "prisme.llmgateway.v1.ModelService",
        "prisme.llmgateway.v1.EmbeddingService",
    )


async def test_each_service_is_ready(bridge: GrpcServer, channel: grpc.aio.Channel) -> None:
    assert bridge.services == (*SERVICES, ORCA_SERVICE)  # the load reports' (--orca, on by default)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICES):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == SERVING, service


async def test_each_service_goes_not_serving_when_a_graceful_stop_begins(
    bridge: GrpcServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(service=s)) for s in (MODELS, EMBEDDINGS)]
    for watch in watches:
        assert (await asyncio.wait_for(watch.read(), 5)).status == SERVING
    # An endless chat stream holds the grace period open while the readiness updates arrive.
    in_flight = chat_grpc.ChatCompletionServiceStub(channel).StreamChatCompletion(
        chat_request(model="endless")
    )
    await asyncio.wait_for(in_flight.read(), 5)
    stopping = asyncio.create_task(bridge.stop(grace=10))
    for watch in watches:
        assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
        watch.cancel()
    in_flight.cancel()
    await asyncio.wait_for(stopping, 5)


async def test_reflection_lists_each_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = [s.name async for reply in replies for s in reply.list_services_response.service]
    assert set(SERVICES) <= set(listed)
    for service in (MODELS, EMBEDDINGS):  # and serves their descriptors, comments included (grpcurl describe)
        ask = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
        (reply,) = [r async for r in stub.ServerReflectionInfo(iter([ask]))]
        assert reply.file_descriptor_response.file_descriptor_proto


# ------------------------------------------------------------- what every service shares with chat


async def _call_models_and_embeddings(channel: grpc.aio.Channel) -> list[tuple[tuple[str, str], ...]]:
    """GetModel (an id with "/"), ListModels, CreateEmbedding, and a throttled CreateEmbedding; the
    initial metadata of the three that succeed."""
    ids = (("x-correlation-id", "corr-services-1"),)
    models = model_grpc.ModelServiceStub(channel)
    embeddings = embedding_grpc.EmbeddingServiceStub(channel)
    texts = ["one two three", "four"]
    starts = [  # one after the other: a call starts when its stub method is called
        lambda: models.GetModel(model_pb2.GetModelRequest(model_id=HAIKU), metadata=ids, timeout=10),
        lambda: models.ListModels(model_pb2.ListModelsRequest(page_size=2), timeout=10),
        lambda: embeddings.CreateEmbedding(
            embedding_pb2.CreateEmbeddingRequest(model="text-embedding-mock", input=texts), timeout=10
        ),
    ]
    metadata = []
    for start in starts:
        call = start()
        await call
        metadata.append(tuple(await call.initial_metadata()))
    with pytest.raises(grpc.aio.AioRpcError):
        await embeddings.CreateEmbedding(
            embedding_pb2.CreateEmbeddingRequest(model="error-429", input=["x"]), timeout=10
        )
    return metadata


async def test_response_headers_apply_to_every_service(start_bridge: Any) -> None:
    bridge = await start_bridge(response_headers="server")  # aiohttp's Server header, not returned by default
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        replies = await _call_models_and_embeddings(channel)
    for metadata in map(dict, replies):
        assert "aiohttp" in metadata["server"]
        assert metadata["x-correlation-id"]  # the defaults stay
    assert dict(replies[0])["x-correlation-id"] == "corr-services-1"


async def test_access_lines_carry_the_upstream_facts(
    bridge: GrpcServer, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    await _call_models_and_embeddings(channel)
    lines = [r.fields for r in caplog.records if r.name == "bridge.access"]  # type: ignore[attr-defined]
    get, listed, embedded, throttled = lines
    assert (get["method"], get["model"], get["upstream_status"], get["correlation_id"]) == (
        "GetModel",
        HAIKU,  # the model a GetModel is about, as `model` is for the others
        200,
        "corr-services-1",
    )
    assert (listed["method"], listed["upstream_status"], "model" in listed) == ("ListModels", 200, False)
    assert (embedded["model"], embedded["upstream_status"], embedded["prompt_tokens"]) == (
        "text-embedding-mock",
        200,
        4,
    )
    assert (throttled["code"], throttled["upstream_status"]) == ("RESOURCE_EXHAUSTED", 429)
