"""ORCA load reports, the pure parts: the pod's load (bridge.rpc.load) on a fake clock and CPU, the report
it becomes and its bytes decoded as the vendored OrcaLoadReport, the shared board across a real fork, the
CPU quota read from cgroup files, the out-of-band interval."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from bridge.gen.xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from bridge.gen.xds.service.orca.v3 import orca_pb2
from bridge.rpc.call import ORCA_SERVICE
from bridge.rpc.load import SAMPLES_PER_WINDOW, Load, LoadBoard, LoadMeter, LoadOptions, available_cores
from bridge.rpc.orca import IN_FLIGHT_METRIC, STREAMS_METRIC, load_report
from bridge.rpc.orca_service import OrcaService


class Clock:
    """Monotonic seconds and this process's CPU nanoseconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.cpu = 0

    def time(self) -> float:
        return self.now

    def cpu_ns(self) -> int:
        return self.cpu

    def advance(self, seconds: float, cpu_seconds: float = 0.0) -> None:
        self.now += seconds
        self.cpu += round(cpu_seconds * 1e9)


def meter(
    clock: Clock, options: LoadOptions | None = None, board: LoadBoard | None = None, row: int = 0
) -> LoadMeter:
    return LoadMeter(options or LoadOptions(), board, row, clock=clock.time, cpu_ns=clock.cpu_ns)


def test_calls_and_streams_in_flight_are_live_and_application_utilization_their_share_of_capacity() -> None:
    clock = Clock()
    load = meter(clock, LoadOptions(capacity=8))
    load.call_started(streaming=True)
    load.call_started(streaming=True)
    load.call_started(streaming=False)
    snap = load.snapshot()
    assert (snap.in_flight, snap.streams_in_flight) == (3, 2)
    assert snap.application_utilization == pytest.approx(3 / 8)
    load.call_ended(streaming=True, failed=False)
    load.call_ended(streaming=False, failed=True)
    snap = load.snapshot()
    assert (snap.in_flight, snap.streams_in_flight) == (1, 1)
    assert snap.application_utilization == pytest.approx(1 / 8)


def test_without_a_capacity_there_is_no_application_utilization() -> None:
    load = meter(Clock(), LoadOptions(capacity=None))
    load.call_started(streaming=False)
    assert load.snapshot().application_utilization == 0.0
    assert load.snapshot().in_flight == 1


def test_rates_and_cpu_are_averaged_over_the_window_from_the_samples() -> None:
    clock = Clock()
    options = LoadOptions(window=10.0, cores=2.0)
    load = meter(clock, options)
    assert load.period == 10.0 / SAMPLES_PER_WINDOW
    # 20 s at 30 calls/s, 3 of them failing each second, using 0.5 core: the window holds the last 10 s.
    for _ in range(20):
        for i in range(30):
            load.call_started(streaming=False)
            load.call_ended(streaming=False, failed=i < 3)
        clock.advance(1.0, cpu_seconds=0.5)
        load.sample()
    snap = load.snapshot()
    assert snap.rps == pytest.approx(30.0)
    assert snap.eps == pytest.approx(3.0)
    assert snap.cpu_utilization == pytest.approx(0.5 / 2.0)
    # Then idle: the rates fall to zero once the window has passed.
    for _ in range(11):
        clock.advance(1.0)
        load.sample()
    assert load.snapshot()[:4] == (0.0, 0.0, 0.0, 0.0)


def test_rates_right_after_start_are_not_inflated_by_a_short_elapsed_time() -> None:
    clock = Clock()
    load = meter(clock, LoadOptions(window=10.0))
    for _ in range(3):
        load.call_started(streaming=False)
        load.call_ended(streaming=False, failed=False)
    clock.advance(0.001)
    load.sample()
    assert load.snapshot().rps == pytest.approx(3 / load.period)  # not 3 calls per millisecond


def test_a_board_sums_every_process_row() -> None:
    clock = Clock()
    board = LoadBoard(3)
    options = LoadOptions(capacity=10, cores=3.0)
    workers = [meter(clock, options, board, row) for row in range(3)]
    for row, worker in enumerate(workers):
        for _ in range(row + 1):
            worker.call_started(streaming=True)
    snap = workers[0].snapshot()
    assert (snap.in_flight, snap.streams_in_flight) == (6, 6)
    assert snap.application_utilization == pytest.approx(6 / 30)  # capacity is per process
    assert workers[2].snapshot() == snap  # any worker reports the pod


def test_a_replaced_process_clears_its_predecessors_calls_in_flight_and_continues_its_counters() -> None:
    clock = Clock()
    board = LoadBoard(2)
    first = meter(clock, LoadOptions(), board, 1)
    for _ in range(5):
        first.call_started(streaming=True)
    first.call_ended(streaming=True, failed=True)
    clock.advance(1.0, cpu_seconds=0.7)
    first.sample()
    board.forget(1)  # the supervisor reaped it
    assert first.snapshot().in_flight == 0
    replacement = Clock()  # a new process: its own CPU time starts at zero
    replacement.now = clock.now
    second = meter(replacement, LoadOptions(), board, 1)
    second.call_started(streaming=False)
    calls, failed, cpu = (board.total(cell) for cell in (1, 2, 0))
    assert (calls, failed) == (6, 1)  # counters continue: rates never see a negative step
    assert cpu == round(0.7e9)
    assert second.snapshot().in_flight == 1


def test_a_shared_board_is_written_by_forked_processes() -> None:
    board = LoadBoard(2, shared=True)
    pid = os.fork()
    if pid == 0:  # the child: a worker counting two streams in its row, then gone
        code = 1
        try:
            child = LoadMeter(LoadOptions(), board, 1)
            child.call_started(streaming=True)
            child.call_started(streaming=True)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent = LoadMeter(LoadOptions(), board, 0)
    parent.call_started(streaming=False)
    snap = parent.snapshot()
    assert (snap.in_flight, snap.streams_in_flight) == (3, 2)
    assert board.total(0) > 0  # the child published its CPU time at its start


def test_the_report_decodes_as_the_vendored_orca_load_report_with_every_value() -> None:
    load = Load(
        cpu_utilization=0.42,
        application_utilization=0.25,
        rps=12.5,
        eps=0.5,
        in_flight=5,
        streams_in_flight=3,
    )
    report = OrcaLoadReport.FromString(load_report(load).SerializeToString())
    assert report.cpu_utilization == pytest.approx(0.42)
    assert report.application_utilization == pytest.approx(0.25)
    assert report.rps_fractional == pytest.approx(12.5)
    assert report.eps == pytest.approx(0.5)
    assert dict(report.named_metrics) == {IN_FLIGHT_METRIC: 5.0, STREAMS_METRIC: 3.0}
    assert report.rps == 0  # deprecated: rps_fractional replaces it
    assert not report.utilization
    assert not report.request_cost
    assert report.mem_utilization == 0.0


def test_the_report_bytes_carry_the_field_numbers_upstream_defines() -> None:
    # As cncf/xds numbers them (a reader with the upstream .proto, grpc-go's or grpc-java's, decodes the
    # same): cpu_utilization 1, rps_fractional 6, eps 7, named_metrics 8, application_utilization 9.
    data = load_report(Load(0.5, 0.25, 2.0, 0.125, 1, 0)).SerializeToString()
    fields = _wire_fields(data)
    assert {number: values for number, values in fields.items() if number != 8} == {
        1: [0.5],
        6: [2.0],
        7: [0.125],
        9: [0.25],
    }
    assert len(fields[8]) == 2  # the two named metrics, map entries


def _wire_fields(data: bytes) -> dict[int, list[object]]:
    """Field number -> values of a message's wire bytes (doubles decoded; length-delimited kept raw)."""
    fields: dict[int, list[object]] = {}
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 1:
            value: object = struct.unpack("<d", data[at : at + 8])[0]
            at += 8
        elif wire_type == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        else:
            raise AssertionError(f"unexpected wire type {wire_type} for field {number}")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, a 1500m limit
        ({"cpu.max": "max 100000\n"}, None),  # v2, no limit: the CPUs it may run on
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
        ({}, None),  # no cgroup files at all
    ],
)
def test_available_cores_is_the_cgroup_quota_else_the_affinity(
    tmp_path: Path, files: dict[str, str], cores: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cpus = float(len(os.sched_getaffinity(0)))
    assert available_cores(tmp_path) == (min(cores, cpus) if cores is not None else cpus)


@pytest.mark.parametrize("options", [{"window": 0}, {"cores": 0}, {"capacity": 0}])
def test_load_options_refuse_meaningless_values(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid load options"):
        LoadOptions(**options)  # type: ignore[arg-type]


def test_out_of_band_reports_come_at_the_interval_asked_never_faster_than_the_minimum() -> None:
    service = OrcaService(meter(Clock()), min_interval=1.0)
    assert service.name == ORCA_SERVICE == "xds.service.orca.v3.OpenRcaService"

    def asked(seconds: int, nanos: int = 0) -> float:
        request = orca_pb2.OrcaLoadReportRequest(report_interval=Duration(seconds=seconds, nanos=nanos))
        return service.interval_of(request)

    assert asked(10) == 10.0
    assert asked(2, 500_000_000) == 2.5
    assert asked(0, 1000) == 1.0
    assert service.interval_of(orca_pb2.OrcaLoadReportRequest()) == 1.0  # no interval: the minimum
