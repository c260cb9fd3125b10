"""Metrics: the real bridge with `--metrics-listen`, scraped over HTTP after real calls to the mock gateway.

Rows for OK and error codes of both RPCs (go-grpc-prometheus names and labels), messages counted live,
upstream durations by status, tokens and cost per model with the model labels bounded, and no secret or
content in any label.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bridge.chat.service import SERVICE_NAME
from bridge.embeddings.service import SERVICE_NAME as EMBEDDING_SERVICE
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2, model_pb2
from bridge.gen.prisme.llmgateway.v1 import embedding_service_pb2_grpc as embedding_grpc
from bridge.gen.prisme.llmgateway.v1 import model_service_pb2_grpc as model_grpc
from bridge.mock_gateway.bodies import USAGE_SHAPES
from bridge.models.service import SERVICE_NAME as MODEL_SERVICE
from bridge.rpc.server import GrpcServer
from tests.helpers import call_failing, chat_request, collect, free_port

UNARY = {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "CreateChatCompletion"}
STREAM = {"grpc_type": "server_stream", "grpc_service": SERVICE_NAME, "grpc_method": "StreamChatCompletion"}
USAGE = pb.StreamOptions(include_usage=True)
SECRET_KEY = "sk-metrics-secret-0123456789"
SECRET_CONTENT = "CONTENT-SENTINEL-7f3a"


class Scrape:
    """One scrape of /metrics: its text, and its samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items())

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


@pytest.fixture
async def metered(
    start_bridge: Any,
) -> AsyncIterator[tuple[GrpcServer, str, pb_grpc.ChatCompletionServiceStub]]:
    """A bridge with its metrics endpoint, its /metrics URL and a stub."""
    port = free_port()
    bridge = await start_bridge(metrics_listen=f"127.0.0.1:{port}", metrics_max_models=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield bridge, f"http://127.0.0.1:{port}/metrics", pb_grpc.ChatCompletionServiceStub(channel)


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def test_rows_for_ok_and_error_codes_of_both_rpcs(metered) -> None:
    _, url, stub = metered
    for _ in range(2):
        await stub.CreateChatCompletion(chat_request(), timeout=10)
    await call_failing(stub, "unary", chat_request(model="error-429"), timeout=10)
    await call_failing(stub, "unary", chat_request(model=""), timeout=10)  # refused before the upstream
    ok_chunks = await collect(stub.StreamChatCompletion(chat_request(text="one two three"), timeout=10))
    _, partial = await call_failing(stub, "stream", chat_request(model="stream-error"), timeout=10)
    await call_failing(stub, "stream", chat_request(model="error-503"), timeout=10)

    m = await scrape(url)
    assert m.value("grpc_server_started_total", **UNARY) == 4
    assert m.value("grpc_server_handled_total", **UNARY, grpc_code="OK") == 2
    assert m.value("grpc_server_handled_total", **UNARY, grpc_code="ResourceExhausted") == 1
    assert m.value("grpc_server_handled_total", **UNARY, grpc_code="InvalidArgument") == 1
    assert m.value("grpc_server_handling_seconds_count", **UNARY) == 4
    assert m.value("grpc_server_msg_received_total", **UNARY) == 4
    assert m.value("grpc_server_msg_sent_total", **UNARY) == 2  # a reply per OK call, as go-grpc-prometheus

    assert m.value("grpc_server_started_total", **STREAM) == 3
    assert m.value("grpc_server_handled_total", **STREAM, grpc_code="OK") == 1
    assert m.value("grpc_server_handled_total", **STREAM, grpc_code="Internal") == 1
    assert m.value("grpc_server_handled_total", **STREAM, grpc_code="Unavailable") == 1
    assert m.value("grpc_server_msg_sent_total", **STREAM) == len(ok_chunks) + len(partial)
    assert m.value("grpc_server_msg_received_total", **STREAM) == 3
    for rpc in (UNARY, STREAM):
        assert m.value("prisme_bridge_rpcs_in_flight", grpc_method=rpc["grpc_method"]) == 0

    upstream = "prisme_bridge_upstream_request_duration_seconds_count"
    assert m.value(upstream, grpc_method="CreateChatCompletion", status="200") == 2
    assert m.value(upstream, grpc_method="CreateChatCompletion", status="429") == 1
    assert m.value(upstream, grpc_method="StreamChatCompletion", status="200") == 2  # the error came later
    assert m.value(upstream, grpc_method="StreamChatCompletion", status="503") == 1
    assert m.value(upstream) == 6  # the invalid request never went upstream
    assert m.value("prisme_bridge_time_to_first_chunk_seconds_count", model="echo") == 1
    assert m.value("prisme_bridge_stream_chunks_sum", model="echo") == len(ok_chunks)
    assert "_created" not in m.text


async def test_tokens_and_cost_per_model_with_bounded_model_labels(metered) -> None:
    _, url, stub = metered
    secrets = (("authorization", f"Bearer {SECRET_KEY}"), ("x-prismeai-api-key", "iak_org_metrics_secret"))
    await stub.CreateChatCompletion(chat_request(text="one two three"), metadata=secrets, timeout=10)
    await collect(
        stub.StreamChatCompletion(
            chat_request(model="gpt-4o", text="a b c d", stream_options=USAGE), timeout=10
        )
    )
    await stub.CreateChatCompletion(chat_request(model="reasoning", text=SECRET_CONTENT), timeout=10)  # 3rd
    await call_failing(stub, "unary", chat_request(model="error-404", text="x"), timeout=10)  # never answered

    m = await scrape(url)
    tokens = "prisme_bridge_llm_tokens_total"
    assert (
        m.value(tokens, model="echo", type="prompt"),
        m.value(tokens, model="echo", type="completion"),
    ) == (3, 3)
    assert (
        m.value(tokens, model="gpt-4o", type="prompt"),
        m.value(tokens, model="gpt-4o", type="completion"),
    ) == (
        4,
        4,
    )
    assert m.value("prisme_bridge_llm_cost_total", model="echo") == pytest.approx(3 * 2.5e-6 + 3 * 1e-5)
    # Over the cap of 2 models: counted, under "other".
    assert m.value(tokens, model="other", type="prompt") == 1
    assert m.label_values(tokens, "model") == {"echo", "gpt-4o", "other"}
    for never in ("reasoning", "error-404", SECRET_KEY, "iak_org_metrics_secret", SECRET_CONTENT):
        assert never not in m.text


async def test_every_finished_stream_counts_its_tokens_whether_or_not_the_caller_asked(start_bridge) -> None:
    # The bridge asks for the usage itself; however the upstream sends it, one stream counts once (a usage
    # repeated on every chunk is cumulative: the last one counts); an upstream that ignores the option
    # has nothing to count.
    port = free_port()
    bridge = await start_bridge(metrics_listen=f"127.0.0.1:{port}", metrics_max_models=10)
    models = ["echo", *(f"usage-{shape}" for shape in USAGE_SHAPES)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        for model in models:
            await collect(stub.StreamChatCompletion(chat_request(model=model, text="a b c d"), timeout=10))
    m = await scrape(f"http://127.0.0.1:{port}/metrics")
    tokens = "prisme_bridge_llm_tokens_total"
    counted = {
        model: (m.value(tokens, model=model, type="prompt"), m.value(tokens, model=model, type="completion"))
        for model in models
    }
    assert counted == {model: (0, 0) if model == "usage-ignored" else (4, 4) for model in models}


async def test_model_and_embedding_calls_are_metered_and_lookups_take_no_model_label(start_bridge) -> None:
    port = free_port()
    bridge = await start_bridge(metrics_listen=f"127.0.0.1:{port}", metrics_max_models=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        models = model_grpc.ModelServiceStub(channel)
        for model_id in ("echo", "tools", "bedrock/anthropic.claude-3-haiku"):
            await models.GetModel(model_pb2.GetModelRequest(model_id=model_id), timeout=10)
        await models.ListModels(model_pb2.ListModelsRequest(page_size=5), timeout=10)
        embeddings = embedding_grpc.EmbeddingServiceStub(channel)
        texts = ["one two three", "four five"]
        await embeddings.CreateEmbedding(
            embedding_pb2.CreateEmbeddingRequest(model="text-embedding-mock", input=texts), timeout=10
        )
    m = await scrape(f"http://127.0.0.1:{port}/metrics")
    get = {"grpc_type": "unary", "grpc_service": MODEL_SERVICE, "grpc_method": "GetModel"}
    embed = {"grpc_type": "unary", "grpc_service": EMBEDDING_SERVICE, "grpc_method": "CreateEmbedding"}
    assert m.value("grpc_server_handled_total", **get, grpc_code="OK") == 3
    assert m.value("grpc_server_handled_total", **embed, grpc_code="OK") == 1
    upstream = "prisme_bridge_upstream_request_duration_seconds_count"
    assert m.value(upstream, grpc_service=MODEL_SERVICE, status="200") == 4
    assert m.value(upstream, grpc_service=EMBEDDING_SERVICE, status="200") == 1
    # Three GetModel calls before it, yet the one model label left goes to the model that used tokens.
    tokens = "prisme_bridge_llm_tokens_total"
    assert m.value(tokens, model="text-embedding-mock", type="prompt") == 5
    assert m.label_values(tokens, "model") == {"text-embedding-mock"}


async def test_messages_are_counted_live_while_a_stream_runs(metered) -> None:
    _, url, stub = metered
    call = stub.StreamChatCompletion(chat_request(model="endless"), timeout=30)
    for _ in range(66):
        await asyncio.wait_for(call.read(), 5)
    during = await scrape(url)
    # Counted in steps: the first message at once, then every 64 (bridge.rpc.metrics), the rest at the end.
    assert during.value("grpc_server_msg_sent_total", **STREAM) >= 65
    assert during.value("prisme_bridge_rpcs_in_flight", grpc_method="StreamChatCompletion") == 1
    assert during.value("grpc_server_handled_total", **STREAM) == 0
    call.cancel()
    async with asyncio.timeout(5):  # the server learns of the cancel a moment later; only a scrape tells
        while (after := await scrape(url)).value("grpc_server_handled_total", **STREAM) == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert after.value("grpc_server_handled_total", **STREAM, grpc_code="Canceled") == 1
    assert after.value("prisme_bridge_rpcs_in_flight", grpc_method="StreamChatCompletion") == 0
    assert after.value("grpc_server_msg_sent_total", **STREAM) >= 66  # every message, once the call ended


async def test_health_checks_are_counted_like_any_method(metered) -> None:
    bridge, url, _ = metered
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    m = await scrape(url)
    labels = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    assert m.value("grpc_server_handled_total", **labels, grpc_code="OK") == 1
