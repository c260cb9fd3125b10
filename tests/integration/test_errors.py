"""Upstream failures end to end: every HTTP status of the mapping table, transport failures, timeouts,
cancellation. Each case runs the real bridge against the real mock gateway on loopback."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import grpc
import httpx
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from tests.helpers import (
    GUARD_S,
    call_failing,
    chat_request,
    ended,
    every_transport,
    free_port,
    status_details,
    wait_request,
)

# Every test that starts a bridge runs once per upstream transport.
upstream_transport = every_transport()

# (status, gRPC code) exactly as the table has it.
TABLE = [
    (400, grpc.StatusCode.INVALID_ARGUMENT),
    (401, grpc.StatusCode.UNAUTHENTICATED),
    (403, grpc.StatusCode.PERMISSION_DENIED),
    (404, grpc.StatusCode.NOT_FOUND),
    (409, grpc.StatusCode.ABORTED),
    (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (499, grpc.StatusCode.CANCELLED),
    (500, grpc.StatusCode.INTERNAL),
    (501, grpc.StatusCode.UNIMPLEMENTED),
    (502, grpc.StatusCode.UNAVAILABLE),
    (503, grpc.StatusCode.UNAVAILABLE),
    (504, grpc.StatusCode.DEADLINE_EXCEEDED),
]
# The stable ErrorInfo.reason of each, whichever error document shape the upstream used.
REASONS = {
    400: "UPSTREAM_INVALID_REQUEST",
    401: "UPSTREAM_UNAUTHENTICATED",
    403: "UPSTREAM_PERMISSION_DENIED",
    404: "UPSTREAM_NOT_FOUND",
    409: "UPSTREAM_ERROR",
    413: "UPSTREAM_PAYLOAD_TOO_LARGE",
    429: "UPSTREAM_RATE_LIMITED",
    499: "UPSTREAM_ERROR",
    500: "UPSTREAM_ERROR",
    501: "UPSTREAM_ERROR",
    502: "UPSTREAM_UNAVAILABLE",
    503: "UPSTREAM_UNAVAILABLE",
    504: "UPSTREAM_TIMEOUT",
}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def _upstream_error(mock: MockGateway, model: str, shape: str) -> tuple[str, str]:
    """(message, code-or-type) of the mock's error document for `model`, fetched directly."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        response = await client.post(
            f"{mock.base_url}/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
    doc = response.json()
    if shape == "prisme":
        return doc["message"], doc["error"]
    return doc["error"]["message"], doc["error"]["code"] or doc["error"]["type"]


@pytest.mark.parametrize("shape", ["prisme", "openai"])
@pytest.mark.parametrize(("http_status", "code"), TABLE, ids=[str(s) for s, _ in TABLE])
async def test_http_error_maps_to_grpc_status(
    stub, mock_gateway: MockGateway, http_status: int, code: grpc.StatusCode, shape: str
) -> None:
    model = f"error-{http_status}" if shape == "prisme" else f"openai-error-{http_status}"
    upstream_message, upstream_code = await _upstream_error(mock_gateway, model, shape)
    mock_gateway.clear_requests()

    for rpc in ("unary", "stream"):
        error, received = await call_failing(stub, rpc, chat_request(model=model), timeout=10)
        assert received == []
        assert error.code() == code, rpc
        assert upstream_message in error.details()
        assert str(http_status) in error.details()

        details = status_details(error)
        info = details["ErrorInfo"]
        assert info.domain == "grpc-bridge.prisme.ai"
        assert info.reason == REASONS[http_status]
        assert info.metadata["httpStatus"] == str(http_status)
        assert info.metadata["upstreamHost"] == "127.0.0.1"
        assert upstream_code in (info.metadata.get("upstreamCode"), info.metadata.get("upstreamType"))
        # The caller sent no correlation id: the one in the details is the mock's, returned as a trailer too.
        trailers = dict(error.trailing_metadata() or ())
        assert _UUID.fullmatch(info.metadata["correlationId"])
        assert trailers["x-correlation-id"] == info.metadata["correlationId"]
        assert "x-correlation-id" not in mock_gateway.requests()[-1]["headers"]

        if http_status in (429, 503):
            assert details["RetryInfo"].retry_delay.ToSeconds() == 7
        else:
            assert "RetryInfo" not in details
        if (shape, http_status) == ("openai", 400):
            (violation,) = details["BadRequest"].field_violations
            assert violation.field == "messages"
            assert violation.description == upstream_message
        else:
            assert "BadRequest" not in details
    # A unary 502 is retried (twice by default: tests/integration/test_retries.py); a 503 or 429 here asks
    # for 7 s, longer than the bridge waits, and is not.
    unary_attempts = 3 if http_status == 502 else 1
    assert [r["stream"] for r in mock_gateway.requests()] == [False] * unary_attempts + [True]


async def test_callers_correlation_id_round_trips_on_errors(stub, mock_gateway: MockGateway) -> None:
    correlation_id = f"caller-{uuid.uuid4()}"
    error, _ = await call_failing(
        stub,
        "stream",
        chat_request(model="error-500"),
        timeout=10,
        metadata=(("x-correlation-id", correlation_id),),
    )
    assert mock_gateway.requests()[-1]["headers"]["x-correlation-id"] == correlation_id
    assert status_details(error)["ErrorInfo"].metadata["correlationId"] == correlation_id
    assert dict(error.trailing_metadata() or ())["x-correlation-id"] == correlation_id


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_connection_refused_is_unavailable(start_bridge, rpc: str) -> None:
    port = free_port()
    bridge = await start_bridge(upstream_url=f"http://127.0.0.1:{port}/v1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        error, received = await call_failing(stub, rpc, chat_request(), timeout=10)
    assert received == []
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # What happened, where, in plain words: not a timeout, not TLS, no library class names; a unary call
    # was retried first (nothing had reached the upstream).
    retried = " (after 3 attempts)" if rpc == "unary" else ""
    assert error.details() == f"could not connect to upstream (127.0.0.1:{port}): connection refused{retried}"
    info = status_details(error)["ErrorInfo"]
    assert (info.domain, info.reason) == ("grpc-bridge.prisme.ai", "UPSTREAM_UNREACHABLE")
    assert dict(info.metadata) == {"upstreamHost": "127.0.0.1", "cause": "connection refused"}


async def test_deadline_on_a_stream_ends_its_upstream_request(stub, mock_gateway: MockGateway) -> None:
    error, received = await call_failing(stub, "stream", chat_request(model="slow-5000"), timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received == []
    # Had the bridge waited for the upstream, the request would have completed at 5 s: how it ended tells.
    record = await wait_request(mock_gateway, ended, within=GUARD_S)
    assert record["outcome"] == "client_disconnected"


async def test_deadline_mid_stream_stops_the_stream(stub, mock_gateway: MockGateway) -> None:
    error, received = await call_failing(stub, "stream", chat_request(model="endless"), timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(received) >= 3  # the ticks sent before the deadline were delivered
    # An endless stream ends only when its client leaves.
    record = await wait_request(mock_gateway, ended, within=GUARD_S)
    assert record["outcome"] == "client_disconnected"


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_read_timeout_without_a_deadline(start_bridge, mock_gateway: MockGateway, rpc: str) -> None:
    bridge = await start_bridge(read_timeout=0.3)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        started = time.monotonic()
        error, received = await call_failing(stub, rpc, chat_request(model="slow-2000"))
        elapsed = time.monotonic() - started
    assert elapsed >= 0.25  # the read timeout was waited for (a lower bound: a slow machine only adds)
    assert received == []
    # Not the upstream's answer at 2 s: the bridge's read timeout.
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "timed out" in error.details()
    record = await wait_request(mock_gateway, ended, within=GUARD_S)
    assert record["outcome"] == "client_disconnected"


async def test_cancelling_a_unary_call_closes_the_upstream_request(stub, mock_gateway: MockGateway) -> None:
    call = stub.CreateChatCompletion(chat_request(model="slow-5000"))
    started = await wait_request(mock_gateway, lambda r: True, within=GUARD_S)
    assert started["outcome"] == "in_progress"
    await asyncio.sleep(0.2)  # the scenario: cancel 0.2 s into the call
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Had the bridge kept the upstream request, it would have completed at 5 s: how it ended tells.
    record = await wait_request(mock_gateway, ended, within=GUARD_S)
    assert record["outcome"] == "client_disconnected"
