"""Several upstreams end to end: the real bridge in front of two mock gateway instances, A (preferred) and
B. A is scripted to fail (`MockGateway.script`) or is a port nobody listens on; B answers. A call moves to
B only before its commit point (unary: before any reply byte; a stream: before its first chunk carrying
content), never for a 4xx the request caused; a 429 holds A alone for its Retry-After; A's circuit
breaker opens after N consecutive failures. The mocks' records say which upstream saw what."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2, model_pb2
from bridge.gen.prisme.llmgateway.v1 import embedding_service_pb2_grpc as embedding_grpc
from bridge.gen.prisme.llmgateway.v1 import model_service_pb2_grpc as model_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from tests.helpers import (
    call_failing,
    chat_request,
    collect,
    every_transport,
    free_port,
    status_details,
    wait_all_ended,
)

upstream_transport = every_transport()

TEXT = "Hello there, bridge"


@pytest.fixture
async def mock_b() -> AsyncIterator[MockGateway]:
    gateway = await start_mock_gateway("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        await gateway.close()


def _name(mock: MockGateway) -> str:
    return f"127.0.0.1:{mock.port}"


async def _channel(start_bridge: Any, upstreams: str, **settings: Any) -> grpc.aio.Channel:
    bridge = await start_bridge(upstream_url=upstreams, **settings)
    return grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}")


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    keys = ("code", "upstream", "upstream_attempts")
    lines = [r for r in caplog.records if r.name == "bridge.access"]
    return [{key: r.__dict__["fields"].get(key) for key in keys} for r in lines]


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content for c in chunks if c.choices)


def _outcomes(mock: MockGateway) -> list[str]:
    return [r["outcome"] for r in mock.requests()]


async def _answered_whole(channel: grpc.aio.Channel, rpc: str) -> None:
    """A call of `rpc` answers TEXT whole; a stream as one upstream's: one opening role chunk, never a
    held-back one of an upstream left (moved from, or the hedge's loser) too."""
    stub = pb_grpc.ChatCompletionServiceStub(channel)
    if rpc == "unary":
        reply = await stub.CreateChatCompletion(chat_request(text=TEXT), timeout=10)
        assert reply.choices[0].message.content == TEXT
        return
    chunks = await collect(stub.StreamChatCompletion(chat_request(text=TEXT), timeout=10))
    assert [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role] == ["assistant"]
    assert _text(chunks) == TEXT


# A's failures that move a call to B, each as A is scripted (None: A's port refuses connections).
MOVING = {"refused": None, "503": "error-503", "429": "error-429", "reset": "reset-before-content"}


async def _upstreams(mock_a: MockGateway, mock_b: MockGateway, failure: str) -> str:
    script = MOVING[failure]
    if script is None:
        return f"http://127.0.0.1:{free_port()}/v1,{mock_b.base_url}"
    mock_a.script(script)
    return f"{mock_a.base_url},{mock_b.base_url}"


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize("failure", list(MOVING))
async def test_a_call_moves_to_the_next_upstream_on_a_failure_before_its_commit_point(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway, rpc: str, failure: str, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    upstreams = await _upstreams(mock_gateway, mock_b, failure)
    async with await _channel(start_bridge, upstreams) as channel:
        await _answered_whole(channel, rpc)
    if MOVING[failure] is not None:
        assert _outcomes(mock_gateway) == ["error"]
    assert _outcomes(mock_b) == ["completed"]
    assert _access(caplog) == [{"code": "OK", "upstream": _name(mock_b), "upstream_attempts": 2}]


async def test_a_stream_that_failed_after_its_first_content_does_not_move_and_is_not_stitched(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway
) -> None:
    mock_gateway.script("reset")  # the role chunk, a chunk per word, then RST
    async with await _channel(start_bridge, f"{mock_gateway.base_url},{mock_b.base_url}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        error, chunks = await call_failing(stub, "stream", chat_request(text=TEXT), timeout=10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert _text(chunks) == TEXT  # what A sent, and nothing of B
    assert mock_b.requests() == []


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize("status", [400, 401, 404])
async def test_a_request_the_upstream_refused_as_faulty_never_moves(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway, rpc: str, status: int
) -> None:
    mock_gateway.script(f"error-{status}")
    async with await _channel(start_bridge, f"{mock_gateway.base_url},{mock_b.base_url}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        error, _ = await call_failing(stub, rpc, chat_request(), timeout=10)
    assert error.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
    )
    assert len(mock_gateway.requests()) == 1
    assert mock_b.requests() == []


async def test_retry_after_of_a_429_holds_that_upstream_only(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    mock_gateway.script("error-429", count=1)  # Retry-After: 7
    async with await _channel(start_bridge, f"{mock_gateway.base_url},{mock_b.base_url}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        for _ in range(3):
            await stub.CreateChatCompletion(chat_request(), timeout=10)
    # A is asked once; within its 7 s the next calls go to B straight away, as their first attempt.
    assert _outcomes(mock_gateway) == ["error"]
    assert _outcomes(mock_b) == ["completed"] * 3
    assert [line["upstream_attempts"] for line in _access(caplog)] == [2, None, None]


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        s.labels.get("upstream", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_the_circuit_breaker_opens_after_consecutive_failures_and_skips_the_upstream(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway
) -> None:
    registry = CollectorRegistry()
    mock_gateway.script("error-503")
    upstreams = f"{mock_gateway.base_url},{mock_b.base_url}"
    async with await _channel(
        start_bridge, upstreams, breaker_failures=2, breaker_cooldown=3600, metrics_registry=registry
    ) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        state = "prisme_bridge_upstream_state"
        assert _samples(registry, state) == {_name(mock_gateway): 0, _name(mock_b): 0}
        for _ in range(4):
            await stub.CreateChatCompletion(chat_request(), timeout=10)
        assert _samples(registry, state) == {_name(mock_gateway): 2, _name(mock_b): 0}  # A open
    assert len(mock_gateway.requests()) == 2  # its breaker opened after two: the later calls skip it
    assert _outcomes(mock_b) == ["completed"] * 4


async def test_after_its_cool_down_one_trial_reopens_or_closes_the_breaker(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway, caplog
) -> None:
    # A fails twice, then answers. Its breaker opens at once (one failure); once the cool-down has passed
    # (the only wait: the cool-down itself), the next call is A's trial: the first trial fails (open again,
    # the call moves to B), the second succeeds (closed: A is used again). What happened is read from the
    # mocks, the access lines and the state gauge, never from timings.
    caplog.set_level(logging.INFO, logger="bridge.access")
    cooldown = 0.2
    registry = CollectorRegistry()
    mock_gateway.script("error-503", count=2)
    upstreams = f"{mock_gateway.base_url},{mock_b.base_url}"
    async with await _channel(
        start_bridge,
        upstreams,
        breaker_failures=1,
        breaker_cooldown=cooldown,
        retries=0,
        metrics_registry=registry,
    ) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        state = "prisme_bridge_upstream_state"
        seen = []
        for _ in range(2):  # A fails (opens); after the cool-down its trial fails (open again)
            await stub.CreateChatCompletion(chat_request(), timeout=10)
            seen.append(_samples(registry, state)[_name(mock_gateway)])
            await asyncio.sleep(cooldown)
        for _ in range(2):  # the trial succeeds (closed); A is the preferred upstream again
            await stub.CreateChatCompletion(chat_request(), timeout=10)
            seen.append(_samples(registry, state)[_name(mock_gateway)])
    assert seen == [2, 2, 0, 0]  # open, open, closed, closed
    assert _outcomes(mock_gateway) == ["error", "error", "completed", "completed"]
    assert _outcomes(mock_b) == ["completed", "completed"]
    assert [line["upstream"] for line in _access(caplog)] == [_name(mock_b)] * 2 + [_name(mock_gateway)] * 2


async def test_models_and_embeddings_follow_the_same_upstreams(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway
) -> None:
    mock_gateway.script("error-503")
    async with await _channel(start_bridge, f"{mock_gateway.base_url},{mock_b.base_url}") as channel:
        models = model_grpc.ModelServiceStub(channel)
        listed = await models.ListModels(model_pb2.ListModelsRequest(page_size=2), timeout=10)
        embeddings = embedding_grpc.EmbeddingServiceStub(channel)
        request = embedding_pb2.CreateEmbeddingRequest(model="text-embedding-mock", input=["a b"])
        embedded = await embeddings.CreateEmbedding(request, timeout=10)
        mock_gateway.script("error-403")
        error, _ = await call_failing_unary(models.ListModels(model_pb2.ListModelsRequest(), timeout=10))
    assert len(listed.models) == 2
    assert len(embedded.data) == 1
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _outcomes(mock_gateway) == ["error", "error", "error"]
    assert _outcomes(mock_b) == ["completed", "completed"]  # the 403 never moved


@pytest.fixture
async def shapeless_upstream() -> AsyncIterator[str]:
    """An upstream whose model list is of no known shape (base URL on 127.0.0.1)."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"items": ["not a model"]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_a_reply_of_the_wrong_shape_names_the_upstream_that_sent_it(
    start_bridge, shapeless_upstream: str
) -> None:
    # A (localhost) refuses, B (127.0.0.1) answers a reply the bridge cannot read: the error names B.
    upstreams = f"http://localhost:{free_port()}/v1,{shapeless_upstream}"
    async with await _channel(start_bridge, upstreams) as channel:
        models = model_grpc.ModelServiceStub(channel)
        error, _ = await call_failing_unary(models.ListModels(model_pb2.ListModelsRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.INTERNAL
    info = status_details(error)["ErrorInfo"]
    assert info.reason == "UPSTREAM_INVALID_RESPONSE"
    assert info.metadata["upstreamHost"] == "127.0.0.1"


async def call_failing_unary(call: Any) -> tuple[grpc.aio.AioRpcError, None]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error, None
    pytest.fail("the call succeeded")


async def test_with_every_breaker_open_the_preferred_upstream_is_still_tried(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway
) -> None:
    mock_gateway.script("error-503")
    mock_b.script("error-503")
    upstreams = f"{mock_gateway.base_url},{mock_b.base_url}"
    async with await _channel(
        start_bridge, upstreams, breaker_failures=1, breaker_cooldown=3600, retries=0
    ) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        for _ in range(2):
            error, _ = await call_failing(stub, "unary", chat_request(), timeout=10)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    await wait_all_ended(mock_gateway)
    # The first call opens both; the second is not refused by the bridge: A is asked again.
    assert len(mock_gateway.requests()) == 2
    assert len(mock_b.requests()) == 1


# ------------------------------------------------------------------------------------------- hedging


async def _hedged_channel(start_bridge: Any, mock_a: MockGateway, mock_b: MockGateway, **settings: Any):
    # A never answers (it waits until its client leaves); B answers at once. 50 ms is only when the hedge
    # goes: the outcome does not depend on it (A never answers, whenever the hedge is sent).
    mock_a.script("slow-600000")
    upstreams = f"{mock_a.base_url},{mock_b.base_url}"
    return await _channel(start_bridge, upstreams, hedge_after=50, hedge_max_ratio=1.0, **settings)


def _check_one_hedge_won(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture, winner: MockGateway
) -> None:
    """One hedge fired and won (the metrics), the call answered by `winner` in two attempts (its line)."""
    text = generate_latest(registry).decode()
    assert "prisme_bridge_hedges_fired_total 1.0" in text
    assert "prisme_bridge_hedges_won_total 1.0" in text
    assert _access(caplog) == [{"code": "OK", "upstream": _name(winner), "upstream_attempts": 2}]


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_a_hedge_goes_to_the_next_upstream_and_the_loser_is_cancelled_at_once(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway, rpc: str, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    registry = CollectorRegistry()
    async with await _hedged_channel(
        start_bridge, mock_gateway, mock_b, metrics_registry=registry
    ) as channel:
        await _answered_whole(channel, rpc)
        # The loser's connection is closed by the time the winner's answer is out: the mock saw it go.
        [lost] = await wait_all_ended(mock_gateway)
        assert lost["outcome"] == "client_disconnected"
    assert _outcomes(mock_b) == ["completed"]
    _check_one_hedge_won(registry, caplog, mock_b)


async def test_a_stream_that_sent_its_role_chunk_but_no_content_is_hedged(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway, caplog
) -> None:
    # A answers at once with its headers and role chunk, then is silent before its first token: a reply
    # byte came, the commit point did not, so the hedge goes. The caller sees B's stream alone (A's
    # held-back role chunk never sent), and A's connection is closed.
    caplog.set_level(logging.INFO, logger="bridge.access")
    registry = CollectorRegistry()
    mock_gateway.script("late-content-600000")
    upstreams = f"{mock_gateway.base_url},{mock_b.base_url}"
    async with await _channel(
        start_bridge, upstreams, hedge_after=50, hedge_max_ratio=1.0, metrics_registry=registry
    ) as channel:
        await _answered_whole(channel, "stream")
        [lost] = await wait_all_ended(mock_gateway)
    assert lost["outcome"] == "client_disconnected"
    assert _outcomes(mock_b) == ["completed"]
    _check_one_hedge_won(registry, caplog, mock_b)


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_with_one_upstream_the_hedge_goes_to_the_same_one(
    start_bridge, mock_gateway: MockGateway, rpc: str, caplog
) -> None:
    # One upstream: its first request never answers, the hedge (to the same URL) is answered at once.
    caplog.set_level(logging.INFO, logger="bridge.access")
    registry = CollectorRegistry()
    mock_gateway.script("slow-600000", count=1)
    async with await _channel(
        start_bridge, mock_gateway.base_url, hedge_after=50, hedge_max_ratio=1.0, metrics_registry=registry
    ) as channel:
        await _answered_whole(channel, rpc)
        first, hedge = await wait_all_ended(mock_gateway)
    assert (first["outcome"], hedge["outcome"]) == ("client_disconnected", "completed")
    assert first["body"] == hedge["body"]  # the same request, sent twice
    _check_one_hedge_won(registry, caplog, mock_gateway)


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_a_request_the_upstream_stores_is_never_hedged(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway, rpc: str
) -> None:
    async with await _hedged_channel(start_bridge, mock_gateway, mock_b) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        error, _ = await call_failing(stub, rpc, chat_request(store=True), timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # A never answered, and no hedge went
    assert mock_b.requests() == []


async def test_hedges_stay_within_their_share_of_calls(
    start_bridge, mock_gateway: MockGateway, mock_b: MockGateway
) -> None:
    mock_gateway.script("slow-600000")
    upstreams = f"{mock_gateway.base_url},{mock_b.base_url}"
    async with await _channel(start_bridge, upstreams, hedge_after=50, hedge_max_ratio=0.5) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        # The first call may not be hedged (1 of 1 is over half): A never answers, the deadline ends it.
        error, _ = await call_failing(stub, "unary", chat_request(), timeout=0.5)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await stub.CreateChatCompletion(chat_request(), timeout=10)  # 1 of 2: hedged, B wins
    assert _outcomes(mock_b) == ["completed"]
