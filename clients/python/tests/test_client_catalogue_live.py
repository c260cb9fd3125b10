"""ModelClient, EmbeddingClient and their asyncio twins against a live bridge in front of the mock gateway
(see conftest.py): its catalogue of 250 models and its embeddings, whose first number is the length of
the embedded text."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from live import API_KEY, LiveBridge

from prisme.llmgateway.client import (
    AsyncEmbeddingClient,
    AsyncModelClient,
    Bearer,
    EmbeddingClient,
    ModelClient,
    error_details,
)
from prisme.llmgateway.v1 import embedding_pb2, model_pb2

CATALOGUE_SIZE = 250
# The catalogue takes an org key (iak_*) as x-prismeai-api-key, not as Bearer (that is for user identities).
ORG_KEY = {"x-prismeai-api-key": API_KEY}
HAIKU = "bedrock/anthropic.claude-3-haiku"
TEXTS = ["Hello", "embeddings from Python", "!"]


@pytest.fixture
def models(live_bridge: LiveBridge) -> Iterator[ModelClient]:
    with ModelClient.connect(live_bridge.address, tls=False, metadata=ORG_KEY, timeout=30) as client:
        yield client


def _pages(live_bridge: LiveBridge, before: int) -> list[str]:
    return [r["query"]["page"] for r in live_bridge.upstream_requests()[before:]]


def test_list_models_reads_every_page_lazily(models: ModelClient, live_bridge: LiveBridge) -> None:
    before = len(live_bridge.upstream_requests())
    listed = models.list_models(model_pb2.ListModelsRequest(page_size=100))
    first = next(listed)
    assert _pages(live_bridge, before) == ["0"]  # one page fetched so far
    ids = [first.model_id, *(model.model_id for model in listed)]
    assert len(ids) == len(set(ids)) == CATALOGUE_SIZE
    assert _pages(live_bridge, before) == ["0", "1", "2"]
    headers = live_bridge.upstream_requests()[-1]["headers"]
    assert headers["x-prismeai-api-key"] == API_KEY


def test_list_models_keeps_the_filters_on_every_page(models: ModelClient, live_bridge: LiveBridge) -> None:
    request = model_pb2.ListModelsRequest(page_size=2, type="embeddings")
    found = list(models.list_models(request))
    assert len(found) > 2  # more than one page
    assert {model.type for model in found} == {"embeddings"}
    assert request.page_token == ""  # the caller's request is not changed
    page = models.list_page(request)
    assert [m.model_id for m in page.models] == [m.model_id for m in found[:2]]
    assert page.next_page_token


def test_get_model_with_a_slash_and_not_found(models: ModelClient) -> None:
    assert models.get_model(HAIKU).model_id == HAIKU
    with pytest.raises(grpc.RpcError) as failure:
        models.get_model("no-such-model")
    details = error_details(failure.value)
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND")


def test_an_org_key_as_bearer_is_refused_by_the_catalogue(live_bridge: LiveBridge) -> None:
    as_bearer = Bearer(API_KEY, allow_plaintext=True)
    with (
        ModelClient.connect(live_bridge.address, tls=False, credentials=as_bearer, timeout=30) as client,
        pytest.raises(grpc.RpcError) as failure,
    ):
        client.get_model(HAIKU)
    assert error_details(failure.value).code == grpc.StatusCode.UNAUTHENTICATED


def test_embed_in_order_with_credentials(live_bridge: LiveBridge) -> None:
    key = Bearer(API_KEY, allow_plaintext=True)  # embeddings take the org key as Bearer, as chat does
    with EmbeddingClient.connect(live_bridge.address, tls=False, credentials=key, timeout=30) as client:
        reply = client.embed(
            embedding_pb2.CreateEmbeddingRequest(model="text-embedding-3-small", input=TEXTS, dimensions=256),
            metadata={"x-correlation-id": "corr-py-embed"},
        )
        assert [(item.index, item.embedding[0], len(item.embedding)) for item in reply.data] == [
            (i, len(text), 256) for i, text in enumerate(TEXTS)
        ]
        assert reply.usage.prompt_tokens == 5
        with pytest.raises(grpc.RpcError) as failure:
            client.embed(
                embedding_pb2.CreateEmbeddingRequest(
                    model="text-embedding-3-small", input=["x"], dimensions=3
                )
            )
    details = error_details(failure.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST")
    assert [v.field for v in details.field_violations] == ["dimensions"]
    assert live_bridge.upstream_requests()[-2]["headers"]["x-correlation-id"] == "corr-py-embed"


async def test_async_clients(live_bridge: LiveBridge) -> None:
    async with AsyncModelClient.connect(
        live_bridge.address, tls=False, metadata=ORG_KEY, timeout=30
    ) as models:
        request = model_pb2.ListModelsRequest(page_size=40)
        ids = [model.model_id async for model in models.list_models(request)]
        assert len(ids) == len(set(ids)) == CATALOGUE_SIZE
        assert (await models.get_model(HAIKU)).model_id == HAIKU
    key = Bearer(API_KEY, allow_plaintext=True)
    async with AsyncEmbeddingClient.connect(live_bridge.address, tls=False, credentials=key) as embeddings:
        reply = await embeddings.embed(
            embedding_pb2.CreateEmbeddingRequest(model="text-embedding-mock", input=TEXTS), timeout=30
        )
    assert [item.embedding[0] for item in reply.data] == [len(text) for text in TEXTS]
