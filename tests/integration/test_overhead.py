"""The bridge's own time per call (`prisme_bridge_overhead_seconds`, `overhead_ms` in the access line): its
time in the bridge minus its time waiting on the upstream. The mock's scripted silences (`slow-N` before
the reply, `stall-N` in the middle of a stream) are upstream time: the overhead never contains them."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from tests.helpers import access_records, chat_request, collect, every_transport

upstream_transport = every_transport()

SILENCE_MS = 300  # before a unary reply's headers (slow-N)
STALL_MS = 1000  # in the middle of a stream (stall-N)


async def _access_line(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The one call's access line, written as the call ends: possibly just after its caller had the
    status, so it is waited for (access_records)."""
    [record] = await access_records(caplog, 1)
    return dict(record.fields)


@pytest.mark.parametrize(("rpc", "model"), [("unary", f"slow-{SILENCE_MS}"), ("stream", f"stall-{STALL_MS}")])
async def test_the_overhead_excludes_the_time_spent_waiting_on_the_upstream(
    start_bridge, rpc: str, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    registry = CollectorRegistry()
    bridge = await start_bridge(metrics_registry=registry)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        if rpc == "unary":
            await stub.CreateChatCompletion(chat_request(model=model), timeout=10)
        else:
            await collect(stub.StreamChatCompletion(chat_request(model=model), timeout=10))
    line = await _access_line(caplog)
    if rpc == "unary":
        # The silence is upstream time: whatever the machine's speed, the overhead leaves it out.
        assert 0 <= line["overhead_ms"] <= line["ms"] - (SILENCE_MS - 1)
    else:
        # A stream's upstream keeps going while the bridge writes a chunk to the caller: what overlaps is
        # the bridge's time, so a loaded machine can take a little of the silence into the overhead
        # (tens of ms measured with both cores busy). Counting the silence would put the overhead within
        # a few ms of the whole call; at least half of it must have been waiting (ms - 500 or less).
        assert 0 <= line["overhead_ms"] <= line["ms"] - STALL_MS / 2
    method = "CreateChatCompletion" if rpc == "unary" else "StreamChatCompletion"
    samples = {
        (s.name, s.labels.get("grpc_method")): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name.startswith("prisme_bridge_overhead_seconds")
    }
    assert samples[("prisme_bridge_overhead_seconds_count", method)] == 1
    # The metric observed the same figure as the line (rounded there to 0.01 ms).
    assert samples[("prisme_bridge_overhead_seconds_sum", method)] * 1000 == pytest.approx(
        line["overhead_ms"], abs=0.01
    )


async def test_a_call_refused_before_the_upstream_has_no_overhead_figure(stub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateChatCompletion(chat_request(model=""), timeout=10)
    line = await _access_line(caplog)
    assert "overhead_ms" not in line
