"""ORCA per-call load reports (gRFC A51): the `endpoint-load-metrics-bin` trailer on every call.

`LoadReports` is the interceptor: it counts each call it applies to on the process's `LoadMeter`
(bridge.rpc.load) and adds the pod's load to the call's trailers (`Interceptor.trailers`), whatever its
status (OK, an error the chain mapped, a refusal of the concurrency limit, a stream's end), as a
serialized `xds.data.orca.v3.OrcaLoadReport`. The call itself is still in flight in its own report, so a
pod never reports an empty load while it serves: grpc-go and grpc-java ignore a report whose utilization
or rate is zero.

Python's grpc clients do not show this trailer to the application: C-core takes it for its own balancers
(tests read it off the wire with tests/raw_grpc.py).

What a caller's `weighted_round_robin` balancer (gRFC A58) does with it: weight = rps_fractional /
(application_utilization, or cpu_utilization when that is 0, + eps / rps_fractional * penalty).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import grpc

from bridge.gen.xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from bridge.rpc.call import PLUMBING_SERVICES, Context, RpcCall, Trailers
from bridge.rpc.interceptors import Interceptor
from bridge.rpc.load import Load, LoadMeter

__all__ = [
    "IN_FLIGHT_METRIC",
    "SERVER_ERRORS",
    "STREAMS_METRIC",
    "TRAILER",
    "LoadReports",
    "load_report",
]

TRAILER: Final = "endpoint-load-metrics-bin"
# Named metrics (OrcaLoadReport.named_metrics): the live counts behind application_utilization.
IN_FLIGHT_METRIC: Final = "rpcs_in_flight"
STREAMS_METRIC: Final = "streams_in_flight"

# Codes that count in `eps`: the bridge or its upstream failed, not the caller (a bad request, a cancel or
# an unknown model say nothing of this pod). Balancers use eps to steer away from a pod that fails fast.
SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def load_report(load: Load) -> OrcaLoadReport:
    """The OrcaLoadReport of `load`."""
    report = OrcaLoadReport(
        cpu_utilization=load.cpu_utilization,
        application_utilization=load.application_utilization,
        rps_fractional=load.rps,
        eps=load.eps,
    )
    metrics = report.named_metrics
    metrics[IN_FLIGHT_METRIC] = load.in_flight
    metrics[STREAMS_METRIC] = load.streams_in_flight
    return report


class LoadReports(Interceptor):
    """Counts the calls of the services it applies to on `meter`, and ends each with the pod's load in
    its trailer. `skip_services`: the plumbing (health, reflection, ORCA's own stream), neither counted
    nor reported."""

    def __init__(self, meter: LoadMeter, *, skip_services: Collection[str] = PLUMBING_SERVICES) -> None:
        self._meter = meter
        self.skip_services = frozenset(skip_services)
        self._last: tuple[Load, bytes] | None = None  # the last report, reused while the load is the same

    def around(self, call: RpcCall, context: Context) -> _Counted:
        return _Counted(self._meter, call)

    def trailers(self, call: RpcCall) -> Trailers:
        # Asked inside `around`: the call is in flight in its own report until its status is sent.
        return ((TRAILER, self._serialized(self._meter.snapshot())),)

    def _serialized(self, load: Load) -> bytes:
        last = self._last
        if last is not None and last[0] == load:
            return last[1]
        data = load_report(load).SerializeToString()
        self._last = (load, data)
        return data


class _Counted:
    """A call on the meter while it runs (a plain class: cheaper per call than a generator-based one)."""

    __slots__ = ("_call", "_meter")

    def __init__(self, meter: LoadMeter, call: RpcCall) -> None:
        self._meter, self._call = meter, call

    async def __aenter__(self) -> None:
        self._meter.start()  # sampling, from the first call on (once; the server's stop ends it)
        self._meter.call_started(self._call.response_streaming)

    async def __aexit__(self, *exc_info: object) -> None:
        call = self._call
        self._meter.call_ended(call.response_streaming, call.code in SERVER_ERRORS)
