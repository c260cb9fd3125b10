"""EmbeddingService end to end: the real bridge in front of the real mock gateway (one text, 100 and 2048
texts in order, dimensions, base64 answers, every refusal of the gateway and its gRPC status)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import embedding_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import embedding_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from tests.helpers import rpc_error, status_details, upstream_reason

Stub = pb_grpc.EmbeddingServiceStub
MODEL = "text-embedding-mock"  # 8 dimensions by default, supports 4 and 8 (pydoc bridge.mock_gateway)


@pytest.fixture
async def embeddings(channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.EmbeddingServiceStub(channel)


def _request(*texts: str, model: str = MODEL, **fields: Any) -> pb.CreateEmbeddingRequest:
    return pb.CreateEmbeddingRequest(model=model, input=list(texts), **fields)


def _sent(mock: MockGateway) -> dict[str, Any]:
    record = mock.requests()[-1]
    assert record["method"] == "POST"
    assert record["path"].endswith("/embeddings")
    body: dict[str, Any] = record["body"]
    return body


# The mock's vector of a text starts with the text's length: each embedding says which input it embeds.
def _lengths(response: pb.CreateEmbeddingResponse) -> list[int]:
    return [int(e.embedding[0]) for e in response.data]


async def test_one_string(embeddings: Stub, mock_gateway: MockGateway) -> None:
    response = await embeddings.CreateEmbedding(_request("Hello, embeddings!"), timeout=10)
    assert _sent(mock_gateway) == {"model": MODEL, "input": "Hello, embeddings!"}  # one text: a string
    (embedding,) = response.data
    assert (embedding.index, embedding.object, len(embedding.embedding)) == (0, "embedding", 8)
    assert embedding.embedding[0] == len("Hello, embeddings!")
    assert (response.object, response.model) == ("list", MODEL)
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (2, 2)
    assert not response.HasField("extra")  # the gateway's flat copy of data[0] is not repeated


async def test_100_strings_in_order(embeddings: Stub, mock_gateway: MockGateway) -> None:
    texts = [f"text {i} " + "x" * i for i in range(100)]
    response = await embeddings.CreateEmbedding(_request(*texts), timeout=10)
    assert _sent(mock_gateway)["input"] == texts
    assert _lengths(response) == [len(t) for t in texts]
    assert [e.index for e in response.data] == list(range(100))


async def test_a_batch_of_2048_and_one_more(embeddings: Stub) -> None:
    texts = [f"{i:0{i % 7 + 1}d}" for i in range(2048)]
    response = await embeddings.CreateEmbedding(_request(*texts), timeout=30)
    assert _lengths(response) == [len(t) for t in texts]
    too_many = await rpc_error(embeddings.CreateEmbedding(_request(*texts, "one more"), timeout=30))
    assert too_many.code() == grpc.StatusCode.INVALID_ARGUMENT  # the upstream's limit, its 400
    assert "at most 2048" in (too_many.details() or "")


async def test_an_upstream_answering_out_of_order_is_put_in_order(embeddings: Stub) -> None:
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    response = await embeddings.CreateEmbedding(_request(*texts, model="embed-shuffled"), timeout=10)
    assert _lengths(response) == [1, 2, 3, 4, 5]


async def test_dimensions(embeddings: Stub, mock_gateway: MockGateway) -> None:
    request = _request("one", "two", model="text-embedding-3-small", dimensions=256)
    response = await embeddings.CreateEmbedding(request, timeout=10)
    assert _sent(mock_gateway)["dimensions"] == 256
    assert [len(e.embedding) for e in response.data] == [256, 256]
    default = await embeddings.CreateEmbedding(_request("one", model="text-embedding-3-small"), timeout=10)
    assert len(default.data[0].embedding) == 1536


async def test_base64_answers_are_decoded_into_the_same_floats(
    embeddings: Stub, mock_gateway: MockGateway
) -> None:
    texts = ["alpha", "beta gamma"]
    as_floats = await embeddings.CreateEmbedding(_request(*texts), timeout=10)
    as_base64 = await embeddings.CreateEmbedding(_request(*texts, encoding_format="base64"), timeout=10)
    assert _sent(mock_gateway)["encoding_format"] == "base64"
    assert as_base64 == as_floats
    single = await embeddings.CreateEmbedding(_request("alpha", encoding_format="base64"), timeout=10)
    assert single.data[0] == as_floats.data[0]
    assert not single.HasField("extra")


async def test_metadata_goes_up_and_comes_back(embeddings: Stub, mock_gateway: MockGateway) -> None:
    metadata = (("authorization", "Bearer at:user-token-1"), ("x-correlation-id", "corr-emb-1"))
    call = embeddings.CreateEmbedding(_request("hi", user="u-7"), metadata=metadata, timeout=10)
    await call
    assert ("x-correlation-id", "corr-emb-1") in tuple(await call.initial_metadata())
    record = mock_gateway.requests()[-1]
    assert record["headers"]["authorization"] == "Bearer at:user-token-1"
    assert record["body"]["user"] == "u-7"


# ------------------------------------------------------------------------------------ refusals, errors


@pytest.mark.parametrize(
    ("model", "dimensions", "status"),
    [
        ("text-embedding-3-small", 100, "400"),
        ("governed/text-embedding-3-small", 4, "403"),  # a governance overlay's status
    ],
)
async def test_invalid_dimensions_is_invalid_argument_whatever_its_status(
    embeddings: Stub, model: str, dimensions: int, status: str
) -> None:
    error = await rpc_error(
        embeddings.CreateEmbedding(_request("x", model=model, dimensions=dimensions), timeout=10)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # the code decides, not a 403
    assert upstream_reason(error) == ("UPSTREAM_INVALID_REQUEST", "INVALID_DIMENSIONS")
    details = status_details(error)
    assert details["ErrorInfo"].metadata["httpStatus"] == status
    (violation,) = details["BadRequest"].field_violations
    assert violation.field == "dimensions"
    assert f"dimensions={dimensions} is not supported by {model}: use one of [" in violation.description


@pytest.mark.parametrize(
    ("model", "code", "reason", "upstream_code"),
    [
        ("error-403", grpc.StatusCode.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED", "MODEL_NOT_ALLOWED"),
        ("error-429", grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", "rate_limit_exceeded"),
        # A governance code on a 429: the status says wait, whatever the code.
        (
            "governed-throttled",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "UPSTREAM_RATE_LIMITED",
            "MODEL_NOT_ALLOWED",
        ),
        ("error-401", grpc.StatusCode.UNAUTHENTICATED, "UPSTREAM_UNAUTHENTICATED", "invalid_token"),
        ("error-503", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "service_unavailable"),
        # a chat model: the gateway's 400
        ("echo", grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST", "invalid_request"),
    ],
)
async def test_gateway_refusals_map_as_for_chat(
    embeddings: Stub, model: str, code: grpc.StatusCode, reason: str, upstream_code: str
) -> None:
    error = await rpc_error(embeddings.CreateEmbedding(_request("x", model=model), timeout=10))
    assert error.code() == code
    assert upstream_reason(error) == (reason, upstream_code)
    details = status_details(error)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert details["RetryInfo"].retry_delay.seconds == 7
    assert ("BadRequest" in details) == (code == grpc.StatusCode.INVALID_ARGUMENT and model != "echo")


@pytest.fixture
async def keyed_gateway() -> AsyncIterator[MockGateway]:
    gateway = await start_mock_gateway(require_api_key="iak_acme_1")
    try:
        yield gateway
    finally:
        await gateway.close()


async def test_a_missing_key_is_unauthenticated(start_bridge: Any, keyed_gateway: MockGateway) -> None:
    bridge = await start_bridge(upstream_url=keyed_gateway.base_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        error = await rpc_error(stub.CreateEmbedding(_request("x"), timeout=10))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        # For embeddings (as for chat) the gateway takes an org key as Bearer too.
        ok = await stub.CreateEmbedding(
            _request("x"), metadata=(("authorization", "Bearer iak_acme_1"),), timeout=10
        )
        assert len(ok.data) == 1


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CreateEmbeddingRequest(model=MODEL), "input"),
        (_request("a", "", model=MODEL), "input[1]"),
        (_request("a", model=""), "model"),
        (_request("a", dimensions=0), "dimensions"),
        (_request("a", encoding_format="int8"), "encoding_format"),
    ],
)
async def test_bad_requests_are_refused_before_any_upstream_call(
    embeddings: Stub, mock_gateway: MockGateway, request_: pb.CreateEmbeddingRequest, field: str
) -> None:
    error = await rpc_error(embeddings.CreateEmbedding(request_, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in status_details(error)["BadRequest"].field_violations] == [field]
    assert mock_gateway.requests() == []
