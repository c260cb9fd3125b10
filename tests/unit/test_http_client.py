"""Unit tests of bridge.http.client on httpx.MockTransport (integration suites use the real mock gateway)."""

from __future__ import annotations

import grpc
import httpx
import pytest

from bridge import errors
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.transport import HttpxTransport, TransportSettings
from bridge.upstream.errors import OPENAI_COMPATIBLE

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _client(handler, max_body_bytes: int = 1024) -> HttpClient:
    transport = HttpxTransport(TransportSettings(), mock=httpx.MockTransport(handler))
    settings = HttpSettings(base_url="http://gw.test/v1", max_body_bytes=max_body_bytes)
    return HttpClient(settings, errors=OPENAI_COMPATIBLE, transport=transport)


async def _post(client: HttpClient) -> dict:
    reply = await client.request_json("POST", "/chat/completions", body=BODY, headers={}, deadline=None)
    return reply.body


async def test_huge_error_page_keeps_its_status_on_unary() -> None:
    page = b"<html><title>Bad gateway</title>" + b"x" * 100_000 + b"</html>"
    client = _client(lambda _: httpx.Response(502, content=page))
    with pytest.raises(errors.UpstreamHTTPError) as raised:
        await _post(client)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE  # the 502, not the body-size limit
    assert "Bad gateway" in raised.value.message
    await client.aclose()


async def test_oversized_success_body_is_resource_exhausted() -> None:
    client = _client(lambda _: httpx.Response(200, json={"id": "x" * 5000}))
    with pytest.raises(errors.UpstreamProtocolError) as raised:
        await _post(client)
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await client.aclose()


async def test_success_body_at_the_limit_is_read_whole() -> None:
    document = b'{"id": "' + b"a" * (1024 - 10) + b'"}'
    assert len(document) == 1024
    client = _client(lambda _: httpx.Response(200, content=document))
    body = await _post(client)
    assert len(body["id"]) == 1014
    await client.aclose()


async def test_a_get_with_a_query_reaches_its_path_unchanged() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": []})

    client = _client(handler)
    reply = await client.request_json(
        "GET", "/models/eu.anthropic/claude:0", query={"page": "2", "tags": "a,b"}, headers={}, deadline=None
    )
    assert reply.body == {"items": []}
    assert seen[0].method == "GET"
    assert seen[0].url.raw_path == b"/v1/models/eu.anthropic/claude:0?page=2&tags=a%2Cb"
    assert seen[0].content == b""
    await client.aclose()


async def test_a_json_body_is_sent_compact_with_its_content_type() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = _client(handler)
    await _post(client)
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].content == b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    await client.aclose()
