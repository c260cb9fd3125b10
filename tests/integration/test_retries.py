"""Retries end to end: the real bridge in front of the mock gateway's flaky models (the first N requests for
a model fail, then it answers). A unary request is sent again only when the upstream cannot have answered
it, within the call's deadline, honouring Retry-After; a stream only when asked, and never once a chunk was
sent. The mock's records count the requests that reached it."""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.rpc.server import GrpcServer
from tests.helpers import (
    access_records,
    call_failing,
    chat_request,
    collect,
    every_transport,
    free_port,
    status_details,
)

# Every test that starts a bridge runs once per upstream transport.
upstream_transport = every_transport()

TEXT = "Hello there, bridge"


def _requests(mock: MockGateway, model: str) -> list[dict]:
    return [r for r in mock.requests() if r["model"] == model]


async def _access_fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The code and upstream attempts of each access line logged (the one call's line awaited)."""
    lines = await access_records(caplog, 1)
    return [{key: r.__dict__["fields"].get(key) for key in ("code", "upstream_attempts")} for r in lines]


async def _stub(start_bridge, **settings) -> tuple[grpc.aio.Channel, pb_grpc.ChatCompletionServiceStub]:
    bridge: GrpcServer = await start_bridge(**settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}")
    return channel, pb_grpc.ChatCompletionServiceStub(channel)


@pytest.mark.parametrize(
    "model", ["flaky-2-503", "flaky-2-502", "flaky-2-429", "flaky-2-reset"], ids=lambda m: m.split("-")[-1]
)
async def test_a_unary_call_survives_failures_the_upstream_cannot_have_answered(
    stub, mock_gateway: MockGateway, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    reply = await stub.CreateChatCompletion(chat_request(model=model, text=TEXT), timeout=10)
    assert reply.choices[0].message.content == TEXT
    assert [r["outcome"] for r in _requests(mock_gateway, model)] == ["error", "error", "completed"]
    # The access line says the call needed three upstream requests.
    assert await _access_fields(caplog) == [{"code": "OK", "upstream_attempts": 3}]


async def test_the_last_failure_reaches_the_caller_saying_how_many_attempts(
    stub, mock_gateway: MockGateway
) -> None:
    error, _ = await call_failing(stub, "unary", chat_request(model="flaky-3-502"), timeout=10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "upstream HTTP 502: Mock error 502 (after 3 attempts)"
    assert status_details(error)["ErrorInfo"].reason == "UPSTREAM_UNAVAILABLE"
    assert len(_requests(mock_gateway, "flaky-3-502")) == 3


async def test_connection_refused_is_retried_then_unavailable(start_bridge, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    port = free_port()
    channel, stub = await _stub(start_bridge, upstream_url=f"http://127.0.0.1:{port}/v1", retries=4)
    async with channel:
        error, _ = await call_failing(stub, "unary", chat_request(), timeout=10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().endswith(": connection refused (after 5 attempts)")
    assert status_details(error)["ErrorInfo"].reason == "UPSTREAM_UNREACHABLE"
    assert await _access_fields(caplog) == [{"code": "UNAVAILABLE", "upstream_attempts": 5}]


async def test_retry_after_is_honoured(stub, mock_gateway: MockGateway) -> None:
    model = "flaky-1-429-after-1"
    reply = await stub.CreateChatCompletion(chat_request(model=model, text=TEXT), timeout=10)
    assert reply.choices[0].message.content == TEXT
    first, second = _requests(mock_gateway, model)
    # A lower bound only: the second request came no sooner than the upstream asked.
    assert second["started_at"] - first["ended_at"] >= 1.0


async def test_a_longer_retry_after_goes_back_to_the_caller(stub, mock_gateway: MockGateway) -> None:
    model = "flaky-1-429-after-5"  # longer than --retry-max-backoff (2 s)
    error, _ = await call_failing(stub, "unary", chat_request(model=model), timeout=10)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "attempts" not in error.details()
    assert status_details(error)["RetryInfo"].retry_delay.ToSeconds() == 5
    assert len(_requests(mock_gateway, model)) == 1


async def test_no_retry_when_the_deadline_leaves_no_time_for_one(
    start_bridge, mock_gateway: MockGateway
) -> None:
    # A Retry-After the bridge would wait for (under --retry-max-backoff), past the call's deadline; the
    # deadline itself far from what one attempt takes, even on a loaded machine.
    channel, stub = await _stub(start_bridge, retry_max_backoff=60)
    model = "flaky-1-503-after-30"
    async with channel:
        error, _ = await call_failing(stub, "unary", chat_request(model=model), timeout=10)
    # The caller learns why at once, with the upstream's hint, instead of a DEADLINE_EXCEEDED later.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert status_details(error)["RetryInfo"].retry_delay.ToSeconds() == 30
    assert len(_requests(mock_gateway, model)) == 1


async def test_retries_0_turns_them_off(start_bridge, mock_gateway: MockGateway) -> None:
    channel, stub = await _stub(start_bridge, retries=0)
    async with channel:
        error, _ = await call_failing(stub, "unary", chat_request(model="flaky-1-503"), timeout=10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "upstream HTTP 503: The model provider is unavailable"
    assert len(_requests(mock_gateway, "flaky-1-503")) == 1


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("flaky-1-500", grpc.StatusCode.INTERNAL),  # the upstream may have processed it
        ("flaky-1-504", grpc.StatusCode.DEADLINE_EXCEEDED),  # a generation may still run behind it
        ("flaky-1-400", grpc.StatusCode.INVALID_ARGUMENT),
        ("reset", grpc.StatusCode.UNAVAILABLE),  # the reply had begun when the connection dropped
    ],
)
async def test_failures_after_the_upstream_may_have_answered_are_not_retried(
    stub, mock_gateway: MockGateway, model: str, code: grpc.StatusCode
) -> None:
    error, _ = await call_failing(stub, "unary", chat_request(model=model), timeout=10)
    assert error.code() == code
    assert len(_requests(mock_gateway, model)) == 1


async def test_streams_are_not_retried_by_default(stub, mock_gateway: MockGateway) -> None:
    error, received = await call_failing(stub, "stream", chat_request(model="flaky-1-503"), timeout=10)
    assert (error.code(), received) == (grpc.StatusCode.UNAVAILABLE, [])
    assert len(_requests(mock_gateway, "flaky-1-503")) == 1


async def test_retry_streams_retries_a_stream_that_had_not_begun(start_bridge, mock_gateway) -> None:
    channel, stub = await _stub(start_bridge, retry_streams=True)
    async with channel:
        chunks = await collect(stub.StreamChatCompletion(chat_request(model="flaky-2-reset", text=TEXT)))
        assert "".join(c.choices[0].delta.content for c in chunks) == TEXT
        assert len(_requests(mock_gateway, "flaky-2-reset")) == 3
        # Once a chunk was sent, never: the caller already has part of the answer.
        error, received = await call_failing(stub, "stream", chat_request(model="reset"), timeout=10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert len(received) > 1
    assert len(_requests(mock_gateway, "reset")) == 1


async def test_retries_are_counted_in_the_metrics(start_bridge) -> None:
    port = free_port()
    channel, stub = await _stub(start_bridge, metrics_listen=f"127.0.0.1:{port}")
    async with channel:
        await stub.CreateChatCompletion(chat_request(model="flaky-2-503"), timeout=10)  # 2 retries
        await stub.CreateChatCompletion(chat_request(model="flaky-1-reset"), timeout=10)  # 1
        await stub.CreateChatCompletion(chat_request(), timeout=10)  # none
        await call_failing(stub, "stream", chat_request(model="flaky-1-503"), timeout=10)  # streams: none
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = {
        (s.name, s.labels.get("grpc_method")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "prisme_bridge_upstream_retries_total"
    }
    assert samples == {("prisme_bridge_upstream_retries_total", "CreateChatCompletion"): 3}
