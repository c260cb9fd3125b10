"""Unit tests of bridge.upstream on httpx.MockTransport (integration suites use the real mock gateway)."""

from __future__ import annotations

import grpc
import httpx
import pytest

from bridge import errors
from bridge.upstream import UpstreamClient, UpstreamSettings

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _client(handler, **settings) -> UpstreamClient:
    return UpstreamClient(
        UpstreamSettings(base_url="http://gw.test/v1", **settings), transport=httpx.MockTransport(handler)
    )


async def test_huge_error_page_keeps_its_status_on_unary() -> None:
    page = b"<html><title>Bad gateway</title>" + b"x" * 100_000 + b"</html>"
    client = _client(lambda _: httpx.Response(502, content=page), max_event_bytes=1024)
    with pytest.raises(errors.UpstreamHTTPError) as raised:
        await client.complete(BODY, {}, deadline=None)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE  # the 502, not the body-size limit
    assert "Bad gateway" in raised.value.message
    await client.aclose()


async def test_oversized_success_body_is_resource_exhausted() -> None:
    client = _client(lambda _: httpx.Response(200, json={"id": "x" * 5000}), max_event_bytes=1024)
    with pytest.raises(errors.UpstreamProtocolError) as raised:
        await client.complete(BODY, {}, deadline=None)
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await client.aclose()


async def test_success_body_at_the_limit_is_read_whole() -> None:
    document = b'{"id": "' + b"a" * (1024 - 10) + b'"}'
    assert len(document) == 1024
    client = _client(lambda _: httpx.Response(200, content=document), max_event_bytes=1024)
    reply = await client.complete(BODY, {}, deadline=None)
    assert len(reply.body["id"]) == 1014
    await client.aclose()
