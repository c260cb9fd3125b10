"""Credentials and tracing metadata end to end: what reaches the upstream, what comes back to the caller,
and that the bridge's own key never shows up in its logs or in any status. The bridge's key goes to
anonymous callers here only because these bridges say so (`api_key_for="anyone"`): who may use it is
tests/integration/test_callers.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from bridge.rpc.server import GrpcServer
from tests.helpers import call_failing, chat_request, status_details

# Deliberately not shaped like anything errors.redact() knows: it must be absent, not merely redacted.
BRIDGE_KEY = "K3y-of-the-bridge-7f41c2"
CALLER_TOKEN = "Bearer caller-token-93ab"
CALLER_IAK = "iak_acme_0c5e1d2f"


@asynccontextmanager
async def _stub(bridge: GrpcServer) -> AsyncIterator[pb_grpc.ChatCompletionServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield pb_grpc.ChatCompletionServiceStub(channel)


async def _sent_headers(
    start_bridge: Any, mock: MockGateway, metadata: tuple[tuple[str, str], ...] = (), **settings: Any
) -> dict[str, str]:
    """The upstream request headers of one unary and one streamed call through a bridge with `settings`."""
    bridge = await start_bridge(**settings)
    async with _stub(bridge) as stub:
        await stub.CreateChatCompletion(chat_request(), metadata=metadata, timeout=10)
        async for _ in stub.StreamChatCompletion(chat_request(), metadata=metadata, timeout=10):
            pass
    unary, stream = mock.requests()[-2:]
    assert (unary["stream"], stream["stream"]) == (False, True)
    auth = ("authorization", "x-prismeai-api-key")
    assert {k: unary["headers"].get(k) for k in auth} == {k: stream["headers"].get(k) for k in auth}
    headers: dict[str, str] = stream["headers"]
    return headers


async def test_passthrough_forwards_the_callers_authorization_unchanged(start_bridge, mock_gateway) -> None:
    headers = await _sent_headers(
        start_bridge, mock_gateway, (("authorization", CALLER_TOKEN),), api_key=BRIDGE_KEY
    )
    assert headers["authorization"] == CALLER_TOKEN
    assert "x-prismeai-api-key" not in headers


async def test_passthrough_forwards_the_callers_prisme_key(start_bridge, mock_gateway) -> None:
    headers = await _sent_headers(
        start_bridge, mock_gateway, (("x-prismeai-api-key", CALLER_IAK),), api_key=BRIDGE_KEY
    )
    assert headers["x-prismeai-api-key"] == CALLER_IAK
    assert "authorization" not in headers  # the caller authenticated: the bridge's key is not added


async def test_own_key_as_bearer_when_the_caller_sends_none(start_bridge, mock_gateway) -> None:
    headers = await _sent_headers(start_bridge, mock_gateway, api_key=BRIDGE_KEY, api_key_for="anyone")
    assert headers["authorization"] == f"Bearer {BRIDGE_KEY}"
    assert "x-prismeai-api-key" not in headers


async def test_own_key_in_the_prisme_header(start_bridge, mock_gateway) -> None:
    headers = await _sent_headers(
        start_bridge,
        mock_gateway,
        api_key=BRIDGE_KEY,
        api_key_header="x-prismeai-api-key",
        api_key_for="anyone",
    )
    assert headers["x-prismeai-api-key"] == BRIDGE_KEY
    assert "authorization" not in headers


async def test_no_credentials_at_all_sends_none(start_bridge, mock_gateway) -> None:
    headers = await _sent_headers(start_bridge, mock_gateway)
    assert "authorization" not in headers
    assert "x-prismeai-api-key" not in headers


async def test_fixed_mode_ignores_the_callers_credentials(start_bridge, mock_gateway) -> None:
    metadata = (("authorization", CALLER_TOKEN), ("x-prismeai-api-key", CALLER_IAK))
    headers = await _sent_headers(
        start_bridge, mock_gateway, metadata, auth_mode="fixed", api_key=BRIDGE_KEY, api_key_for="anyone"
    )
    assert headers["authorization"] == f"Bearer {BRIDGE_KEY}"
    assert "x-prismeai-api-key" not in headers


async def test_none_mode_sends_no_credentials(start_bridge, mock_gateway) -> None:
    metadata = (("authorization", CALLER_TOKEN), ("x-prismeai-api-key", CALLER_IAK))
    headers = await _sent_headers(start_bridge, mock_gateway, metadata, auth_mode="none", api_key=BRIDGE_KEY)
    assert "authorization" not in headers
    assert "x-prismeai-api-key" not in headers


@pytest.fixture
async def locked_gateway() -> AsyncIterator[MockGateway]:
    """A mock gateway that answers 401 unless the request carries BRIDGE_KEY."""
    gateway = await start_mock_gateway(require_api_key=BRIDGE_KEY)
    try:
        yield gateway
    finally:
        await gateway.close()


async def test_gateway_requiring_a_key(start_bridge, locked_gateway: MockGateway, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    url = locked_gateway.base_url
    with_key = await start_bridge(upstream_url=url, api_key=BRIDGE_KEY, api_key_for="anyone")
    wrong_key = await start_bridge(upstream_url=url, api_key="not-the-key-5521", api_key_for="anyone")
    no_key = await start_bridge(upstream_url=url)
    prisme_header = await start_bridge(
        upstream_url=url, api_key=BRIDGE_KEY, api_key_header="x-prismeai-api-key", api_key_for="anyone"
    )

    for bridge in (with_key, prisme_header):
        async with _stub(bridge) as stub:
            response = await stub.CreateChatCompletion(chat_request(text="let me in"), timeout=10)
            assert response.choices[0].message.content == "let me in"
            chunks = [c async for c in stub.StreamChatCompletion(chat_request(text="me too"), timeout=10)]
            assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "me too"

    failures: list[grpc.aio.AioRpcError] = []
    for bridge, metadata in [
        (wrong_key, ()),
        (no_key, ()),
        (no_key, (("authorization", "Bearer wrong-caller-token"),)),
        # passthrough: the caller's (wrong) credentials win over the bridge's right key
        (with_key, (("authorization", "Bearer wrong-caller-token"),)),
    ]:
        async with _stub(bridge) as stub:
            for rpc in ("unary", "stream"):
                error, received = await call_failing(stub, rpc, chat_request(), metadata=metadata, timeout=10)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (bridge.port, metadata, rpc)
                assert received == []
                failures.append(error)

    # And a caller holding the right key gets through a bridge that has none.
    async with _stub(no_key) as stub:
        response = await stub.CreateChatCompletion(
            chat_request(text="mine"), metadata=(("x-prismeai-api-key", BRIDGE_KEY),), timeout=10
        )
        assert response.choices[0].message.content == "mine"

    assert len(caplog.records) > 0  # the bridge did log these calls...
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert BRIDGE_KEY not in logged  # ...but never its key
    for error in failures:
        everything = f"{error.details()} {error.debug_error_string()} {error.trailing_metadata()!r}"
        assert BRIDGE_KEY not in everything
        assert "not-the-key-5521" not in everything


async def test_key_absent_from_logs_and_errors_on_every_failure_path(
    start_bridge, mock_gateway: MockGateway, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    bridge = await start_bridge(api_key=BRIDGE_KEY, auth_mode="fixed", api_key_for="anyone")
    errors: list[grpc.aio.AioRpcError] = []
    async with _stub(bridge) as stub:
        for model in ["error-401", "openai-error-401", "error-500", "stream-error", "truncated"]:
            for rpc in ("unary", "stream"):
                error, _ = await call_failing(stub, rpc, chat_request(model=model), timeout=10)
                errors.append(error)
        error, _ = await call_failing(stub, "stream", chat_request(model="json-on-stream"), timeout=10)
        errors.append(error)
    assert all(r["headers"]["authorization"] == f"Bearer {BRIDGE_KEY}" for r in mock_gateway.requests())
    assert any(r.levelno >= logging.WARNING for r in caplog.records)
    assert BRIDGE_KEY not in caplog.text + "".join(repr(r.args) for r in caplog.records)
    for error in errors:
        assert (
            BRIDGE_KEY not in f"{error.details()} {error.debug_error_string()} {error.trailing_metadata()!r}"
        )


# --------------------------------------------------------------------------------------------- metadata


async def test_tracing_metadata_is_forwarded_upstream(stub, mock_gateway: MockGateway) -> None:
    metadata = (
        ("x-correlation-id", "corr-42"),
        ("x-request-id", "req-7"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-unrelated", "not forwarded"),
    )
    await stub.CreateChatCompletion(chat_request(), metadata=metadata, timeout=10)
    async for _ in stub.StreamChatCompletion(chat_request(), metadata=metadata, timeout=10):
        pass
    for record in mock_gateway.requests():
        headers = record["headers"]
        for name, value in metadata[:4]:
            assert headers[name] == value, name
        assert "x-unrelated" not in headers


async def test_upstream_correlation_id_is_returned_as_initial_metadata(stub, mock_gateway) -> None:
    # No id from the caller: the mock makes one up, and only the upstream reply can carry it back.
    unary = stub.CreateChatCompletion(chat_request(), timeout=10)
    await unary
    unary_id = dict(await unary.initial_metadata())["x-correlation-id"]

    stream = stub.StreamChatCompletion(chat_request(), timeout=10)
    initial = dict(await stream.initial_metadata())
    stream_id = initial["x-correlation-id"]
    chunks = [c async for c in stream]
    assert chunks
    assert await stream.code() == grpc.StatusCode.OK

    for value in (unary_id, stream_id):
        assert uuid.UUID(value)
    assert unary_id != stream_id
    assert all("x-correlation-id" not in r["headers"] for r in mock_gateway.requests())


async def test_callers_ids_come_back_as_initial_metadata(stub) -> None:
    metadata = (("x-correlation-id", "corr-abc"), ("x-request-id", "req-xyz"))
    stream = stub.StreamChatCompletion(chat_request(), metadata=metadata, timeout=10)
    initial = dict(await stream.initial_metadata())
    assert (initial["x-correlation-id"], initial["x-request-id"]) == ("corr-abc", "req-xyz")
    async for _ in stream:
        pass


@pytest.mark.parametrize(
    ("model", "rpc"),
    [
        ("error-429", "unary"),
        ("error-429", "stream"),
        ("stream-error", "stream"),
        ("truncated-eof", "stream"),
        ("no-finish", "stream"),
    ],
)
async def test_correlation_id_in_trailers_on_errors(stub, model: str, rpc: str) -> None:
    error, _ = await call_failing(
        stub, rpc, chat_request(model=model), metadata=(("x-correlation-id", "corr-err"),), timeout=10
    )
    assert error.code() != grpc.StatusCode.OK
    assert dict(error.trailing_metadata() or ())["x-correlation-id"] == "corr-err"
    assert status_details(error)["ErrorInfo"].metadata["correlationId"] == "corr-err"


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_correlation_id_in_trailers_when_the_body_is_cut_short(stub, rpc: str) -> None:
    error, _ = await call_failing(
        stub, rpc, chat_request(model="truncated"), metadata=(("x-correlation-id", "corr-cut"),), timeout=10
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(error.trailing_metadata() or ())["x-correlation-id"] == "corr-cut"


async def test_reply_metadata_false_returns_no_reply_headers_and_keeps_the_error_ids(start_bridge) -> None:
    bridge = await start_bridge(reply_metadata=False)
    metadata = (("x-correlation-id", "corr-quiet"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        unary = stub.CreateChatCompletion(chat_request(), metadata=metadata, timeout=10)
        assert (await unary).choices
        assert tuple(await unary.initial_metadata()) == ()
        stream = stub.StreamChatCompletion(chat_request(), metadata=metadata, timeout=10)
        assert tuple(await stream.initial_metadata()) == ()
        assert [chunk async for chunk in stream]
        assert await stream.code() == grpc.StatusCode.OK
        # Errors still say which upstream request failed: trailers and ErrorInfo are the error's.
        error, _ = await call_failing(
            stub, "unary", chat_request(model="error-429"), metadata=metadata, timeout=10
        )
        assert dict(error.trailing_metadata() or ())["x-correlation-id"] == "corr-quiet"
