"""The mock gateway's catalogue and embeddings routes over real HTTP, as the bridge's tests rely on them
(the behaviours documented in `pydoc bridge.mock_gateway`)."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bridge.mock_gateway import MockGateway, start_mock_gateway


@pytest.fixture
def gateway(mock_gateway: MockGateway) -> MockGateway:
    return mock_gateway


@pytest.fixture
async def client(gateway: MockGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=5.0) as c:
        yield c


async def _page(client: httpx.AsyncClient, **query: Any) -> dict[str, Any]:
    reply = await client.get("/models", params=query)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_pages_cover_the_catalogue_once(client: httpx.AsyncClient) -> None:
    pages = [await _page(client, limit=60, page=n) for n in range(5)]
    ids = [item["model_id"] for page in pages for item in page["items"]]
    assert [len(p["items"]) for p in pages] == [60, 60, 60, 60, 10]
    assert len(ids) == len(set(ids)) == 250
    assert (await _page(client, limit=500))["limit"] == 100  # the gateway's cap


@pytest.mark.parametrize(
    "query",
    [
        {"type": "chat"},
        {"capability": "smell"},
        {"enabled": "yes"},
        {"limit": "0"},
        {"page": "-1"},
        {"limit": "x"},
    ],
)
async def test_bad_query_values_are_400(client: httpx.AsyncClient, query: dict[str, str]) -> None:
    reply = await client.get("/models", params=query)
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_request"


async def test_every_filter_narrows_the_catalogue(client: httpx.AsyncClient) -> None:
    for query in (
        {"type": "image_generation"},
        {"enabled": "false"},
        {"model_ids": "echo,tools"},
        {"tags": "long-context"},
        {"visible_only": "true"},
        {"brand": "Google"},
        {"search": "haiku"},
        {"capability": "audio"},
    ):
        assert 0 < (await _page(client, **query))["total"] < 250, query


async def test_get_model_and_its_refusals(client: httpx.AsyncClient, gateway: MockGateway) -> None:
    found = await client.get("/models/eu.anthropic.claude-sonnet-4-20250514-v1:0")
    assert found.json()["model_id"] == "eu.anthropic.claude-sonnet-4-20250514-v1:0"
    assert (await client.get("/models/no/such:model")).status_code == 404
    throttled = await client.get("/models/error-429")
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "7")
    assert (await client.get("/models", params={"search": "error-403"})).json()[
        "error"
    ] == "MODEL_NOT_ALLOWED"
    assert gateway.requests()[0]["raw_path"].endswith("/models/eu.anthropic.claude-sonnet-4-20250514-v1:0")


async def test_the_openai_list(gateway: MockGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.openai_base_url) as c:
        listed = (await c.get("/models")).json()
        one = (await c.get("/models/bedrock/anthropic.claude-3-haiku")).json()
        missing = await c.get("/models/nope")
    assert listed["object"] == "list"
    assert len(listed["data"]) == 250
    assert set(listed["data"][0]) == {"id", "object", "created", "owned_by", "max_model_len"}
    assert one == {
        "id": "bedrock/anthropic.claude-3-haiku",
        "object": "model",
        "created": 1700000000,
        "owned_by": "anthropic",
        "max_model_len": one["max_model_len"],
    }
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")


async def test_catalogue_auth_takes_an_org_key_only_as_x_prismeai_api_key() -> None:
    gw = await start_mock_gateway(require_api_key="iak_org_1")
    try:
        async with httpx.AsyncClient(base_url=gw.base_url) as c:
            header = await c.get("/models", headers={"x-prismeai-api-key": "iak_org_1"})
            bearer = await c.get("/models", headers={"Authorization": "Bearer iak_org_1"})
            missing = await c.get("/models/echo")
            chat_bearer = await c.post(
                "/embeddings",
                json={"model": "m", "input": "x"},
                headers={"Authorization": "Bearer iak_org_1"},
            )
    finally:
        await gw.close()
    assert header.status_code == 200
    assert bearer.status_code == missing.status_code == 401
    assert "x-prismeai-api-key" in bearer.json()["message"]
    assert chat_bearer.status_code == 200  # outside the catalogue, an org key works as Bearer


def _floats(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_embeddings_in_both_encodings(client: httpx.AsyncClient) -> None:
    body = {"model": "text-embedding-mock", "input": ["one", "three"], "dimensions": 4}
    floats = (await client.post("/embeddings", json=body)).json()
    packed = (await client.post("/embeddings", json={**body, "encoding_format": "base64"})).json()
    assert [d["embedding"][0] for d in floats["data"]] == [3, 5]
    assert [_floats(d["embedding"]) for d in packed["data"]] == [d["embedding"] for d in floats["data"]]
    assert "embedding" not in floats  # the flat copy only for one string
    single = (await client.post("/embeddings", json={"model": "m", "input": "solo"})).json()
    assert single["embedding"] == single["data"][0]["embedding"]
    assert len(single["embedding"]) == 8
    shuffled = (
        await client.post("/embeddings", json={"model": "embed-shuffled", "input": ["a", "bb"]})
    ).json()
    assert [d["index"] for d in shuffled["data"]] == [1, 0]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "m", "input": []}, 400, "invalid_request"),
        ({"model": "m", "input": ["ok", ""]}, 400, "invalid_request"),
        ({"input": "x"}, 400, "invalid_request"),
        ({"model": "m", "input": "x", "dimensions": 0}, 400, "invalid_request"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, 400, "invalid_request"),
        ({"model": "m", "input": ["x"] * 2049}, 400, "invalid_request"),
        ({"model": "echo", "input": "x"}, 400, "invalid_request"),
        ({"model": "text-embedding-3-large", "input": "x", "dimensions": 512}, 400, "INVALID_DIMENSIONS"),
        (
            {"model": "governed/text-embedding-3-small", "input": "x", "dimensions": 512},
            403,
            "INVALID_DIMENSIONS",
        ),
        ({"model": "error-403", "input": "x"}, 403, "MODEL_NOT_ALLOWED"),
        ({"model": "error-429", "input": "x"}, 429, "rate_limit_exceeded"),
        ({"model": "governed-throttled", "input": "x"}, 429, "MODEL_NOT_ALLOWED"),
    ],
)
async def test_embedding_refusals(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str
) -> None:
    reply = await client.post("/embeddings", json=body)
    assert (reply.status_code, reply.json()["error"]) == (status, code)
    assert ("retry-after" in reply.headers) == (status == 429)


async def test_requests_are_recorded_with_method_and_query(
    client: httpx.AsyncClient, gateway: MockGateway
) -> None:
    await client.get("/models", params={"type": "embeddings", "limit": "5"})
    await client.post("/embeddings", json={"model": "m", "input": "x"})
    listed, embedded = gateway.requests()
    assert (listed["method"], listed["query"], listed["body"], listed["outcome"]) == (
        "GET",
        {"type": "embeddings", "limit": "5"},
        None,
        "completed",
    )
    assert (embedded["method"], embedded["model"], embedded["outcome"]) == ("POST", "m", "completed")
