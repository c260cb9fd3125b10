"""ORCA load reports on the live bridge: every chat, models and embeddings call ends with the
`endpoint-load-metrics-bin` trailer, read off the wire (Python's grpc keeps it from the application) and
decoded as the vendored xds.data.orca.v3.OrcaLoadReport with sane values, whatever the call's status;
OpenRcaService streams the same load out of band at the interval asked, never faster than the minimum,
and ends its streams as the server stops; `--orca false` turns both off. tests/interop/test_orca_balancing.py
has grpc-go's weighted_round_robin balancing on them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as chat_grpc
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2, model_pb2
from bridge.gen.xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from bridge.gen.xds.service.orca.v3 import orca_pb2, orca_pb2_grpc
from bridge.mock_gateway import MockGateway
from bridge.rpc.orca import IN_FLIGHT_METRIC, STREAMS_METRIC, TRAILER
from bridge.rpc.server import GrpcServer
from tests.conftest import BridgeFactory
from tests.helpers import GUARD_S, chat_request, cli_env, connections_served_by, run_cli, wait_request
from tests.raw_grpc import RawReply, raw_call

CHAT = "/prisme.llmgateway.v1.ChatCompletionService/"
MODELS = "/prisme.llmgateway.v1.ModelService/"
EMBEDDINGS = "/prisme.llmgateway.v1.EmbeddingService/"
LIMIT = 10
SLOW = "slow-60000"  # the mock holds the reply a minute: a call in flight until cancelled

OK, INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE = 0, 3, 5, 8, 13, 14


def report_of(reply: RawReply) -> OrcaLoadReport:
    data = reply.binary_trailer(TRAILER)
    assert data is not None, f"no {TRAILER} among {sorted(reply.trailers)}"
    return OrcaLoadReport.FromString(data)


def assert_sane(report: OrcaLoadReport, *, limit: int | None = LIMIT) -> None:
    """What cncf/xds' validation rules ask (every value >= 0) and what the bridge promises."""
    for value in (report.cpu_utilization, report.rps_fractional, report.eps, report.application_utilization):
        assert value >= 0
    assert report.mem_utilization == 0.0
    assert not report.utilization
    assert not report.request_cost
    assert set(report.named_metrics) == {IN_FLIGHT_METRIC, STREAMS_METRIC}
    in_flight = report.named_metrics[IN_FLIGHT_METRIC]
    assert in_flight >= 1  # the reporting call itself is in flight until its status is sent
    assert 0 <= report.named_metrics[STREAMS_METRIC] <= in_flight
    expected = in_flight / limit if limit else 0.0
    assert report.application_utilization == pytest.approx(expected)


CALLS: list[tuple[str, str, Message, int]] = [
    ("unary chat", CHAT + "CreateChatCompletion", chat_request(), OK),
    ("streamed chat", CHAT + "StreamChatCompletion", chat_request(), OK),
    ("upstream error", CHAT + "CreateChatCompletion", chat_request(model="error-503"), UNAVAILABLE),
    ("error mid-stream", CHAT + "StreamChatCompletion", chat_request(model="stream-error"), INTERNAL),
    ("bad request", CHAT + "CreateChatCompletion", chat_request(model=""), INVALID_ARGUMENT),
    ("list models", MODELS + "ListModels", model_pb2.ListModelsRequest(page_size=3), OK),
    ("unknown model", MODELS + "GetModel", model_pb2.GetModelRequest(model_id="no/such:model"), NOT_FOUND),
    (
        "embeddings",
        EMBEDDINGS + "CreateEmbedding",
        embedding_pb2.CreateEmbeddingRequest(model="text-embedding-mock", input=["a", "b"]),
        OK,
    ),
]


@pytest.mark.parametrize(
    ("path", "request_message", "status"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS]
)
async def test_every_call_ends_with_a_load_report_whatever_its_status(
    start_bridge: BridgeFactory, path: str, request_message: Message, status: int
) -> None:
    bridge = await start_bridge(max_concurrent_rpcs=LIMIT)
    reply = await raw_call(bridge.port, path, request_message.SerializeToString())
    assert reply.trailers[b"grpc-status"] == str(status).encode(), reply.trailers
    report = report_of(reply)
    assert_sane(report)
    assert report.named_metrics[IN_FLIGHT_METRIC] == 1
    assert report.named_metrics[STREAMS_METRIC] == ("Stream" in path)
    if status != OK:  # the error's own trailers are all there too
        assert b"grpc-status-details-bin" in reply.trailers


async def test_a_caller_refused_for_want_of_credentials_gets_the_report_and_the_out_of_band_stream(
    start_bridge: BridgeFactory,
) -> None:
    # The bridge has a key, for authenticated callers only (the default --api-key-for): an anonymous call
    # without credentials of its own is refused before any upstream request, with the report all the same.
    bridge = await start_bridge(max_concurrent_rpcs=LIMIT, api_key="bridge-key")
    reply = await raw_call(bridge.port, CHAT + "CreateChatCompletion", _chat())
    assert reply.trailers[b"grpc-status"] == b"16"  # UNAUTHENTICATED
    assert_sane(report_of(reply))
    # Load reports never reach the upstream: no key rule for them.
    async with grpc.aio.insecure_channel(_address(bridge)) as channel:
        stream = orca_pb2_grpc.OpenRcaServiceStub(channel).StreamCoreMetrics(orca_pb2.OrcaLoadReportRequest())
        assert isinstance(await asyncio.wait_for(stream.read(), 10), OrcaLoadReport)
        stream.cancel()


async def test_calls_and_streams_in_flight_are_reported_and_plumbing_is_not(
    start_bridge: BridgeFactory, mock_gateway: MockGateway
) -> None:
    bridge = await start_bridge(max_concurrent_rpcs=LIMIT)
    async with _held_streams(bridge, mock_gateway, 3), grpc.aio.insecure_channel(_address(bridge)) as channel:
        # A health watch and a reflection stream open meanwhile: the server's plumbing, not calls.
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        await asyncio.wait_for(watch.read(), 5)
        report = report_of(await raw_call(bridge.port, CHAT + "CreateChatCompletion", _chat()))
        watch.cancel()
    assert_sane(report)
    assert report.named_metrics[STREAMS_METRIC] == 3
    assert report.named_metrics[IN_FLIGHT_METRIC] == 4
    assert report.application_utilization == pytest.approx(4 / LIMIT)
    # Once the streams are gone, so are they from the reports.
    report = await _report_when(bridge, lambda r: r.named_metrics[STREAMS_METRIC] == 0)
    assert report.named_metrics[IN_FLIGHT_METRIC] == 1


async def test_a_call_the_concurrency_limit_refuses_reports_the_full_pod(
    start_bridge: BridgeFactory, mock_gateway: MockGateway
) -> None:
    bridge = await start_bridge(max_concurrent_rpcs=2)
    async with _held_streams(bridge, mock_gateway, 2):
        reply = await raw_call(bridge.port, CHAT + "CreateChatCompletion", _chat())
    assert reply.trailers[b"grpc-status"] == str(RESOURCE_EXHAUSTED).encode()
    report = report_of(reply)
    assert_sane(report, limit=2)
    assert report.application_utilization == pytest.approx(3 / 2)  # past the limit: above 1.0


async def test_call_and_error_rates_are_reported(start_bridge: BridgeFactory) -> None:
    bridge = await start_bridge(max_concurrent_rpcs=LIMIT, orca_window=5)
    async with grpc.aio.insecure_channel(_address(bridge)) as channel:
        stub = chat_grpc.ChatCompletionServiceStub(channel)
        for i in range(12):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.CreateChatCompletion(
                    chat_request(model="error-503" if i % 3 else "echo"), timeout=10
                )
    # Rates come from samples (every window / 10 s): wait for one that saw the calls.
    report = await _report_when(bridge, lambda r: r.eps > 0)
    assert_sane(report)
    assert report.rps_fractional >= report.eps  # every failure is a call
    assert report.cpu_utilization > 0  # the calls cost CPU within the window


async def test_without_a_concurrency_limit_application_utilization_is_not_reported(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()
    report = report_of(await raw_call(bridge.port, CHAT + "CreateChatCompletion", _chat()))
    assert_sane(report, limit=None)
    assert report.application_utilization == 0.0  # callers' balancers use cpu_utilization instead
    assert report.named_metrics[IN_FLIGHT_METRIC] == 1


async def test_orca_false_sends_no_report_and_serves_no_orca_service(start_bridge: BridgeFactory) -> None:
    bridge = await start_bridge(orca=False)
    reply = await raw_call(bridge.port, CHAT + "CreateChatCompletion", _chat())
    assert reply.trailers[b"grpc-status"] == b"0"
    assert TRAILER.encode() not in reply.metadata
    async with grpc.aio.insecure_channel(_address(bridge)) as channel:
        stream = orca_pb2_grpc.OpenRcaServiceStub(channel).StreamCoreMetrics(orca_pb2.OrcaLoadReportRequest())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stream.read()
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_with_workers_every_worker_reports_the_pods_load(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url)
    # The kernel spreads the 16 connections at random: a limit under 16 would refuse the streams of a worker
    # that got more than its share (with 10, one run in five), so each worker can take all of them.
    limit = 16
    args = ("serve", "--listen", "127.0.0.1:0", "--workers", "2", "--max-concurrent-rpcs", str(limit))
    async with run_cli(*args, "--log-level", "INFO", env=env) as bridge:
        port = int((await bridge.wait_log(r"2 workers serving on 127\.0\.0\.1:(\d+)")).group(1))
        pids = [int(m.group(1)) for line in bridge.log if (m := re.search(r"serving \(pid (\d+)\)", line))]
        # A stream on each of 16 connections: the kernel spreads them over both workers.
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(16)
        ]
        try:
            streams = [
                chat_grpc.ChatCompletionServiceStub(channel).StreamChatCompletion(chat_request(model=SLOW))
                for channel in channels
            ]
            await wait_request(mock_gateway, lambda _: _in_progress(mock_gateway, SLOW) == 16, within=GUARD_S)
            held = [connections_served_by(pid, port) for pid in pids]
            assert sum(held) == 16
            assert all(held), f"connections per worker: {held}"  # 2**-15 chance to flake
            # Whichever worker a new connection reaches reports the whole pod.
            for _ in range(8):
                report = report_of(await raw_call(port, CHAT + "CreateChatCompletion", _chat()))
                assert_sane(report, limit=2 * limit)  # the limit is per worker
                assert report.named_metrics[STREAMS_METRIC] == 16
                assert report.named_metrics[IN_FLIGHT_METRIC] == 17
            for stream in streams:
                stream.cancel()
        finally:
            for channel in channels:
                await channel.close()
        assert await bridge.stop(signal.SIGTERM, within=30) == 0


# ------------------------------------------------------------------------------------------ out of band


async def test_out_of_band_reports_come_at_the_interval_asked_never_faster_than_the_minimum(
    start_bridge: BridgeFactory, mock_gateway: MockGateway
) -> None:
    bridge = await start_bridge(max_concurrent_rpcs=LIMIT, orca_min_interval=0.3)
    async with _held_streams(bridge, mock_gateway, 2), grpc.aio.insecure_channel(_address(bridge)) as channel:
        orca = orca_pb2_grpc.OpenRcaServiceStub(channel)
        for asked, expected in (
            (Duration(), 0.3),
            (Duration(nanos=1000), 0.3),
            (Duration(nanos=600_000_000), 0.6),
        ):
            stream = orca.StreamCoreMetrics(orca_pb2.OrcaLoadReportRequest(report_interval=asked))
            started = time.monotonic()
            reports = [await asyncio.wait_for(stream.read(), 10) for _ in range(3)]
            elapsed = time.monotonic() - started
            stream.cancel()
            assert elapsed >= 2 * expected * 0.95, (asked, elapsed)  # the first report comes at once
            for report in reports:
                assert isinstance(report, OrcaLoadReport)
                assert report.named_metrics[STREAMS_METRIC] == 2
                # The out-of-band stream is not a call: the two held streams are all there is.
                assert report.named_metrics[IN_FLIGHT_METRIC] == 2
                assert report.application_utilization == pytest.approx(2 / LIMIT)


async def test_out_of_band_streams_end_as_the_server_stops_without_holding_its_grace(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()
    async with grpc.aio.insecure_channel(_address(bridge)) as channel:
        stream = orca_pb2_grpc.OpenRcaServiceStub(channel).StreamCoreMetrics(
            orca_pb2.OrcaLoadReportRequest(report_interval=Duration(seconds=60))
        )
        assert isinstance(await asyncio.wait_for(stream.read(), 10), OrcaLoadReport)
        started = time.monotonic()
        await bridge.stop(grace=120)  # an open stream would hold the stop that long
        assert time.monotonic() - started < 20
        assert await stream.read() == grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK


# ------------------------------------------------------------------------------------------- helpers


def _address(bridge: GrpcServer) -> str:
    return f"127.0.0.1:{bridge.port}"


def _chat() -> bytes:
    return chat_request().SerializeToString()


def _in_progress(mock: MockGateway, model: str) -> int:
    return sum(r["model"] == model and r["outcome"] == "in_progress" for r in mock.requests())


class _held_streams:  # noqa: N801 - used like a function: async with _held_streams(...)
    """`count` streams held open on the bridge (the mock gateway sits on their replies) while inside."""

    def __init__(self, bridge: GrpcServer, mock: MockGateway, count: int) -> None:
        self._bridge, self._mock, self._count = bridge, mock, count
        self._channel: grpc.aio.Channel | None = None
        self._streams: list[Any] = []

    async def __aenter__(self) -> None:
        self._channel = grpc.aio.insecure_channel(_address(self._bridge))
        stub = chat_grpc.ChatCompletionServiceStub(self._channel)
        self._streams = [stub.StreamChatCompletion(chat_request(model=SLOW)) for _ in range(self._count)]
        await wait_request(self._mock, lambda _: _in_progress(self._mock, SLOW) == self._count, within=10)

    async def __aexit__(self, *exc: object) -> None:
        for stream in self._streams:
            stream.cancel()
        assert self._channel is not None
        await self._channel.close()


async def _report_when(
    bridge: GrpcServer, condition: Callable[[OrcaLoadReport], bool], *, within: float = 15
) -> OrcaLoadReport:
    """The first report of a unary call for which `condition` holds (calls every 0.1 s meanwhile)."""
    async with asyncio.timeout(within):
        while True:
            report = report_of(await raw_call(bridge.port, CHAT + "CreateChatCompletion", _chat()))
            if condition(report):
                return report
            await asyncio.sleep(0.1)
