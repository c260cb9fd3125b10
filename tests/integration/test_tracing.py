"""Tracing: span continuity with the caller's traceparent through the real bridge to the mock gateway.

Spans go to an in-memory exporter given to the bridge as its tracer provider; the trace context the
upstream received is read from the mock gateway's records. The `serve` command is also run with
OTEL_TRACES_EXPORTER=console, the standard variables alone turning tracing on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge.app import upstream_client
from bridge.chat.service import SERVICE_NAME
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.settings import ServeSettings
from tests.helpers import call_failing, chat_request, cli_env, collect, every_transport, run_cli

# Every test that starts a bridge runs once per upstream transport.
upstream_transport = every_transport()

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"), ("tracestate", "congo=t61rcWkgMzE"))


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def stub(start_bridge: Any, mock_gateway: MockGateway, exporter: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = ServeSettings(upstream_url=mock_gateway.base_url)
    bridge = await start_bridge(
        upstream=upstream_client(settings.upstream, tracer_provider=provider), tracer_provider=provider
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield pb_grpc.ChatCompletionServiceStub(channel)


async def _finished(exporter: InMemorySpanExporter, count: int) -> tuple[ReadableSpan, ...]:
    """The finished spans once there are `count`: the server span ends after its status went out, so
    the caller can see the status a moment before the span is exported."""
    for _ in range(200):
        spans = exporter.get_finished_spans()
        if len(spans) >= count:
            return tuple(spans)
        await asyncio.sleep(0.01)
    return tuple(exporter.get_finished_spans())


async def _server_and_client(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ReadableSpan]:
    spans = await _finished(exporter, 2)
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    client = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert (len(server), len(client)) == (1, 1), [s.name for s in spans]
    return server[0], client[0]


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_the_callers_trace_continues_through_the_bridge_to_the_upstream(
    stub, mock_gateway: MockGateway, exporter: InMemorySpanExporter, rpc: str
) -> None:
    if rpc == "unary":
        await stub.CreateChatCompletion(chat_request(text="one two three"), metadata=CALLER, timeout=10)
    else:
        await collect(
            stub.StreamChatCompletion(chat_request(text="one two three"), metadata=CALLER, timeout=10)
        )
    server, client = await _server_and_client(exporter)
    method = "CreateChatCompletion" if rpc == "unary" else "StreamChatCompletion"

    assert server.name == f"{SERVICE_NAME}/{method}"
    assert _hex(server.context.trace_id, 32) == TRACE_ID
    assert server.parent is not None
    assert server.parent.is_remote
    assert _hex(server.parent.span_id, 16) == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "grpc"
    assert (server.attributes["rpc.service"], server.attributes["rpc.method"]) == (SERVICE_NAME, method)
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["gen_ai.request.model"] == "echo"

    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert client.context.trace_id == server.context.trace_id
    assert client.attributes is not None
    assert client.attributes["http.request.method"] == "POST"
    assert client.attributes["http.response.status_code"] == 200
    assert str(client.attributes["url.full"]).endswith("/chat/completions")
    assert client.end_time is not None
    assert server.end_time is not None
    assert client.end_time <= server.end_time  # a stream's upstream span lasts until its last event

    headers = mock_gateway.requests()[-1]["headers"]
    assert headers["traceparent"] == f"00-{TRACE_ID}-{_hex(client.context.span_id, 16)}-01"
    assert headers["tracestate"] == "congo=t61rcWkgMzE"


async def test_an_upstream_error_marks_both_spans(stub, exporter: InMemorySpanExporter) -> None:
    await call_failing(stub, "unary", chat_request(model="error-503"), metadata=CALLER, timeout=10)
    server, client = await _server_and_client(exporter)
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert server.attributes["http.response.status_code"] == 503
    assert client.status.status_code == StatusCode.ERROR
    assert client.attributes is not None
    assert client.attributes["http.response.status_code"] == 503


async def test_a_caller_error_is_not_the_servers(stub, exporter: InMemorySpanExporter) -> None:
    await call_failing(stub, "unary", chat_request(model=""), timeout=10)
    spans = await _finished(exporter, 1)  # a client span, were there one, would end before the server's
    assert [s.kind for s in spans] == [SpanKind.SERVER]  # nothing went upstream
    assert spans[0].status.status_code == StatusCode.UNSET


async def test_without_a_callers_trace_the_bridge_starts_one(
    stub, mock_gateway: MockGateway, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    await stub.CreateChatCompletion(chat_request(), timeout=10)
    server, _client = await _server_and_client(exporter)
    assert server.parent is None
    trace_id = _hex(server.context.trace_id, 32)
    assert mock_gateway.requests()[-1]["headers"]["traceparent"].split("-")[1] == trace_id
    # The access line names the trace, so logs and traces join.
    (record,) = [r for r in caplog.records if r.name == "bridge.access"]
    assert record.fields["trace_id"] == trace_id  # type: ignore[attr-defined]


async def test_serve_exports_spans_as_the_otel_variables_say(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, OTEL_TRACES_EXPORTER="console")
    async with run_cli("serve", "--listen", "127.0.0.1:0", "--log-format", "text", env=env) as bridge:
        port = (await bridge.wait_log(r"bridge listening on 127\.0\.0\.1:(\d+)")).group(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            await stub.CreateChatCompletion(chat_request(), metadata=CALLER, timeout=10)
        assert await bridge.stop(signal.SIGTERM, within=10) == 0  # spans are flushed on the way out
        assert bridge.process.stdout is not None
        printed = (await bridge.process.stdout.read()).decode()
    spans = _json_objects(printed)
    server = next(s for s in spans if s["kind"] == "SpanKind.SERVER")
    client = next(s for s in spans if s["kind"] == "SpanKind.CLIENT")
    assert server["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert server["parent_id"] == f"0x{CALLER_SPAN}"
    assert client["parent_id"] == server["context"]["span_id"]
    assert server["resource"]["attributes"]["service.name"] == "prisme-bridge"
    upstream = mock_gateway.requests()[-1]["headers"]["traceparent"]
    assert upstream == f"00-{TRACE_ID}-{client['context']['span_id'].removeprefix('0x')}-01"


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects printed one after another (the console exporter pretty-prints each span)."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while (index := text.find("{", index)) != -1:
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)
    return objects
