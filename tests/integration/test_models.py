"""ModelService end to end: the real bridge in front of the real mock gateway's 250-model catalogue (every
page, every filter, ids with "/" and ":"), an OpenAI-compatible model list, errors and auth."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import model_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import model_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from bridge.rpc.server import GrpcServer
from tests.helpers import rpc_error, status_details, upstream_reason

CATALOGUE_SIZE = 250  # the mock's catalogue (pydoc bridge.mock_gateway)
ORG_KEY = "iak_acme_5f0c2d1e"
Stub = pb_grpc.ModelServiceStub


@pytest.fixture
async def models(channel: grpc.aio.Channel) -> Stub:
    return pb_grpc.ModelServiceStub(channel)


async def _stub_for(bridge: GrpcServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield pb_grpc.ModelServiceStub(channel)


@pytest.fixture
async def openai_models(start_bridge: Any, mock_gateway: MockGateway) -> AsyncIterator[Stub]:
    """A bridge whose upstream lists its models in OpenAI's {object: "list", data} shape."""
    bridge = await start_bridge(upstream_url=mock_gateway.openai_base_url)
    async for stub in _stub_for(bridge):
        yield stub


async def _all_pages(
    stub: Stub, request: pb.ListModelsRequest, sizes: Callable[[int], int]
) -> list[list[str]]:
    """The model ids of every page, following next_page_token; page n asks for sizes(n) models."""
    pages: list[list[str]] = []
    while True:
        request.page_size = sizes(len(pages))
        response = await stub.ListModels(request, timeout=10)
        pages.append([m.model_id for m in response.models])
        assert len(pages) < 300, "paging does not end"
        if not response.next_page_token:
            return pages
        request.page_token = response.next_page_token


def _catalogue_queries(mock: MockGateway) -> list[dict[str, str]]:
    return [r["query"] for r in mock.requests() if r["path"].endswith("/models")]


# ---------------------------------------------------------------------------------------------- paging


async def test_paging_through_every_page_of_250_models(models: Stub, mock_gateway: MockGateway) -> None:
    pages = await _all_pages(models, pb.ListModelsRequest(), lambda _: 40)
    ids = [model_id for page in pages for model_id in page]
    assert [len(page) for page in pages] == [40] * 6 + [10]
    assert len(ids) == len(set(ids)) == CATALOGUE_SIZE
    assert [(q["limit"], q["page"]) for q in _catalogue_queries(mock_gateway)] == [
        ("40", str(n)) for n in range(7)
    ]
    first = await models.ListModels(pb.ListModelsRequest(page_size=40), timeout=10)
    assert first.total_size == CATALOGUE_SIZE
    assert [m.model_id for m in first.models] == pages[0]


async def test_the_default_page_is_the_gateways_100(models: Stub, mock_gateway: MockGateway) -> None:
    pages = await _all_pages(models, pb.ListModelsRequest(), lambda _: 0)
    assert [len(page) for page in pages] == [100, 100, 50]
    assert all(q["limit"] == "100" for q in _catalogue_queries(mock_gateway))


async def test_a_page_size_above_100_is_capped_not_refused(models: Stub, mock_gateway: MockGateway) -> None:
    response = await models.ListModels(pb.ListModelsRequest(page_size=1000), timeout=10)
    assert len(response.models) == 100
    assert response.next_page_token
    assert _catalogue_queries(mock_gateway)[-1] == {"limit": "100", "page": "0"}


async def test_page_size_may_change_between_pages(models: Stub) -> None:
    everything = [m for page in await _all_pages(models, pb.ListModelsRequest(), lambda _: 100) for m in page]
    sizes = [40, 30, 7, 100, 64]
    pages = await _all_pages(models, pb.ListModelsRequest(), lambda n: sizes[n % len(sizes)])
    assert [m for page in pages for m in page] == everything  # nothing skipped, nothing repeated
    assert all(len(page) <= sizes[n % len(sizes)] for n, page in enumerate(pages))


async def test_a_token_is_bound_to_its_filters(models: Stub, mock_gateway: MockGateway) -> None:
    first = await models.ListModels(pb.ListModelsRequest(page_size=10, type="completion"), timeout=10)
    sent = len(mock_gateway.requests())
    request = pb.ListModelsRequest(page_size=10, type="embeddings", page_token=first.next_page_token)
    error = await rpc_error(models.ListModels(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = status_details(error)["BadRequest"].field_violations
    assert [v.field for v in violations] == ["page_token"]
    bad = await rpc_error(
        models.ListModels(pb.ListModelsRequest(page_token="garbage", page_size=-1), timeout=10)
    )
    assert [v.field for v in status_details(bad)["BadRequest"].field_violations] == [
        "page_size",
        "page_token",
    ]
    assert len(mock_gateway.requests()) == sent  # refused before any upstream call


# --------------------------------------------------------------------------------------------- filters

FILTERS: list[tuple[dict[str, Any], dict[str, str], Callable[[pb.Model], bool]]] = [
    ({"type": "embeddings"}, {"type": "embeddings"}, lambda m: m.type == "embeddings"),
    ({"enabled": False}, {"enabled": "false"}, lambda m: m.HasField("enabled") and not m.enabled),
    ({"enabled": True}, {"enabled": "true"}, lambda m: m.enabled),
    (
        {
            "model_ids": [
                "echo",
                "bedrock/anthropic.claude-3-haiku",
                "eu.anthropic.claude-sonnet-4-20250514-v1:0",
            ]
        },
        {"model_ids": "echo,bedrock/anthropic.claude-3-haiku,eu.anthropic.claude-sonnet-4-20250514-v1:0"},
        lambda m: (
            m.model_id
            in ("echo", "bedrock/anthropic.claude-3-haiku", "eu.anthropic.claude-sonnet-4-20250514-v1:0")
        ),
    ),
    ({"tags": ["eu", "cheap"]}, {"tags": "eu,cheap"}, lambda m: bool({"eu", "cheap"} & set(m.tags))),
    ({"visible_only": True}, {"visible_only": "true"}, lambda m: not m.display.hidden),
    ({"brand": "Meta"}, {"brand": "Meta"}, lambda m: m.display.brand == "Meta"),
    ({"capability": "vision"}, {"capability": "vision"}, lambda m: m.capabilities.vision),
    ({"search": "CLAUDE"}, {"search": "CLAUDE"}, lambda m: "claude" in (m.model_id + m.display.name).lower()),
]


@pytest.mark.parametrize(("fields", "query", "holds"), FILTERS, ids=[str(f[0]) for f in FILTERS])
async def test_each_filter_reaches_the_upstream_query(
    models: Stub,
    mock_gateway: MockGateway,
    fields: dict[str, Any],
    query: dict[str, str],
    holds: Callable[[pb.Model], bool],
) -> None:
    response = await models.ListModels(pb.ListModelsRequest(page_size=100, **fields), timeout=10)
    assert _catalogue_queries(mock_gateway)[-1] == {**query, "limit": "100", "page": "0"}
    assert 0 < response.total_size < CATALOGUE_SIZE  # the filter selected a proper subset...
    assert response.models
    assert all(holds(model) for model in response.models)  # ...of matching models


async def test_filters_combine_and_page_together(models: Stub, mock_gateway: MockGateway) -> None:
    request = pb.ListModelsRequest(type="completion", visible_only=True, enabled=True, capability="vision")
    pages = await _all_pages(models, request, lambda _: 8)
    found = [m for page in pages for m in page]
    total = (
        await models.ListModels(pb.ListModelsRequest(page_size=1, **_filters(request)), timeout=10)
    ).total_size
    assert len(found) == len(set(found)) == total > 8
    queries = _catalogue_queries(mock_gateway)
    assert all(q["type"] == "completion" and q["visible_only"] == "true" for q in queries)


def _filters(request: pb.ListModelsRequest) -> dict[str, Any]:
    return {
        field.name: value
        for field, value in request.ListFields()
        if field.name not in ("page_size", "page_token")
    }


async def test_a_model_is_typed_with_its_unknown_keys_kept(models: Stub) -> None:
    response = await models.ListModels(pb.ListModelsRequest(model_ids=["text-embedding-3-small"]), timeout=10)
    (model,) = response.models
    assert (model.model_id, model.type, model.dimensions) == ("text-embedding-3-small", "embeddings", 1536)
    assert list(model.supported_dimensions) == [256, 512, 1024, 1536]
    assert model.pricing.HasField("input_per_1m_tokens")
    assert model.limits.fields["context_window"].number_value > 0
    assert set(model.extra.fields) == {"metrics", "provider_config", "org_slugs"}


# ------------------------------------------------------------------------------------------- GetModel


@pytest.mark.parametrize(
    "model_id",
    [
        "bedrock/anthropic.claude-3-haiku",
        "eu.anthropic.claude-sonnet-4-20250514-v1:0",
        "meta/completion-003:0",
    ],
)
async def test_get_model_with_slashes_and_colons(
    models: Stub, mock_gateway: MockGateway, model_id: str
) -> None:
    response = await models.GetModel(pb.GetModelRequest(model_id=model_id), timeout=10)
    assert response.model.model_id == model_id
    record = mock_gateway.requests()[-1]
    assert record["method"] == "GET"
    assert record["raw_path"] == f"{mock_gateway.base_url.removeprefix(mock_gateway.url)}/models/{model_id}"


async def test_get_model_encodes_what_a_path_cannot_hold(models: Stub, mock_gateway: MockGateway) -> None:
    error = await rpc_error(models.GetModel(pb.GetModelRequest(model_id="my model?v=1#x"), timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert mock_gateway.requests()[-1]["raw_path"].endswith("/models/my%20model%3Fv=1%23x")
    info = status_details(error)["ErrorInfo"]
    assert (info.reason, info.metadata["httpStatus"]) == ("UPSTREAM_NOT_FOUND", "404")


@pytest.mark.parametrize("model_id", ["", "../chat/completions", "a//b", "x" * 129])
async def test_get_model_refuses_an_id_before_calling_upstream(
    models: Stub, mock_gateway: MockGateway, model_id: str
) -> None:
    error = await rpc_error(models.GetModel(pb.GetModelRequest(model_id=model_id), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in status_details(error)["BadRequest"].field_violations] == ["model_id"]
    assert mock_gateway.requests() == []


# ---------------------------------------------------------------------------------- OpenAI list shape


async def test_the_openai_list_shape_is_one_page(openai_models: Stub, mock_gateway: MockGateway) -> None:
    response = await openai_models.ListModels(pb.ListModelsRequest(), timeout=10)
    assert len(response.models) == response.total_size == CATALOGUE_SIZE
    assert response.next_page_token == ""
    echo = response.models[0]
    assert (echo.model_id, echo.object, echo.created, echo.owned_by) == ("echo", "model", 1700000000, "mock")
    assert echo.extra.fields["max_model_len"].number_value == 8192
    assert mock_gateway.requests()[-1]["path"] == "/openai/v1/models"


async def test_the_openai_list_shape_is_paged_and_filtered_by_the_bridge(openai_models: Stub) -> None:
    pages = await _all_pages(openai_models, pb.ListModelsRequest(), lambda _: 100)
    assert [len(page) for page in pages] == [100, 100, 50]
    wanted = ["eu.anthropic.claude-sonnet-4-20250514-v1:0", "echo", "absent"]
    picked = await openai_models.ListModels(pb.ListModelsRequest(model_ids=wanted), timeout=10)
    assert [m.model_id for m in picked.models] == ["echo", "eu.anthropic.claude-sonnet-4-20250514-v1:0"]
    searched = await openai_models.ListModels(pb.ListModelsRequest(search="Claude"), timeout=10)
    assert [m.model_id for m in searched.models] == [
        "bedrock/anthropic.claude-3-haiku",
        "eu.anthropic.claude-sonnet-4-20250514-v1:0",
    ]


async def test_a_filter_the_openai_shape_cannot_answer_fails(openai_models: Stub) -> None:
    error = await rpc_error(openai_models.ListModels(pb.ListModelsRequest(type="embeddings"), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "filter by model_ids or search only" in (error.details() or "")
    details = status_details(error)
    assert (details["ErrorInfo"].domain, details["ErrorInfo"].reason) == (
        "grpc-bridge.prisme.ai",
        "UPSTREAM_FILTER_UNSUPPORTED",
    )
    assert [v.subject for v in details["PreconditionFailure"].violations] == ["type"]


async def test_get_model_in_the_openai_shape(openai_models: Stub) -> None:
    response = await openai_models.GetModel(pb.GetModelRequest(model_id="bedrock/anthropic.claude-3-haiku"))
    assert (response.model.model_id, response.model.owned_by) == (
        "bedrock/anthropic.claude-3-haiku",
        "anthropic",
    )
    missing = await rpc_error(openai_models.GetModel(pb.GetModelRequest(model_id="nope"), timeout=10))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert upstream_reason(missing) == ("UPSTREAM_NOT_FOUND", "model_not_found")


# -------------------------------------------------------------------------------------- errors, auth


async def test_upstream_errors_map_as_for_chat(models: Stub) -> None:
    throttled = await rpc_error(models.ListModels(pb.ListModelsRequest(search="error-429"), timeout=10))
    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_details(throttled)["RetryInfo"].retry_delay.seconds == 7
    assert upstream_reason(throttled) == ("UPSTREAM_RATE_LIMITED", "rate_limit_exceeded")
    refused = await rpc_error(models.GetModel(pb.GetModelRequest(model_id="error-403"), timeout=10))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert upstream_reason(refused) == ("UPSTREAM_PERMISSION_DENIED", "MODEL_NOT_ALLOWED")
    invalid = await rpc_error(models.ListModels(pb.ListModelsRequest(type="chat"), timeout=10))
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT  # the gateway's 400 on an unknown type


@pytest.fixture
async def keyed_gateway() -> AsyncIterator[MockGateway]:
    gateway = await start_mock_gateway(require_api_key=ORG_KEY)
    try:
        yield gateway
    finally:
        await gateway.close()


async def _list_through(start_bridge: Any, gateway: MockGateway, metadata: Any = (), **settings: Any) -> Any:
    bridge = await start_bridge(upstream_url=gateway.base_url, **settings)
    async for stub in _stub_for(bridge):
        try:
            return await stub.ListModels(pb.ListModelsRequest(page_size=1), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error
    raise AssertionError("unreachable")


async def test_an_org_key_reaches_the_catalogue_as_x_prismeai_api_key(
    start_bridge: Any, keyed_gateway: MockGateway
) -> None:
    as_header = await _list_through(start_bridge, keyed_gateway, (("x-prismeai-api-key", ORG_KEY),))
    assert isinstance(as_header, pb.ListModelsResponse)
    # The catalogue wants a user identity as Bearer: an org key there is refused, and the bridge does not
    # move it to another header (its auth policy is the chat service's).
    as_bearer = await _list_through(start_bridge, keyed_gateway, (("authorization", f"Bearer {ORG_KEY}"),))
    assert isinstance(as_bearer, grpc.aio.AioRpcError)
    assert as_bearer.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-prismeai-api-key" in (as_bearer.details() or "")
    sent = [r["headers"] for r in keyed_gateway.requests()]
    assert sent[0]["x-prismeai-api-key"] == ORG_KEY
    assert sent[1]["authorization"] == f"Bearer {ORG_KEY}"
    assert "x-prismeai-api-key" not in sent[1]


async def test_the_bridges_own_org_key_needs_the_api_key_header(
    start_bridge: Any, keyed_gateway: MockGateway
) -> None:
    right = await _list_through(
        start_bridge,
        keyed_gateway,
        api_key=ORG_KEY,
        api_key_header="x-prismeai-api-key",
        api_key_for="anyone",
    )
    assert isinstance(right, pb.ListModelsResponse)
    wrong = await _list_through(start_bridge, keyed_gateway, api_key=ORG_KEY, api_key_for="anyone")
    assert isinstance(wrong, grpc.aio.AioRpcError)
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tracing_ids_go_up_and_come_back(models: Stub, mock_gateway: MockGateway) -> None:
    call = models.GetModel(
        pb.GetModelRequest(model_id="echo"), metadata=(("x-correlation-id", "corr-models-1"),), timeout=10
    )
    await call
    assert ("x-correlation-id", "corr-models-1") in tuple(await call.initial_metadata())
    assert mock_gateway.requests()[-1]["headers"]["x-correlation-id"] == "corr-models-1"
