"""ORCA out-of-band load reports (gRFC A51): `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`.

A caller's balancer with out-of-band reporting on (grpc-go `weighted_round_robin`'s `enableOobLoadReport`)
opens one such stream per connection and gets the pod's load every `report_interval` it asks for, never
more often than `min_interval`: the same report as the per-call trailer (bridge.rpc.orca), which also
tells it about a pod that serves only long streams or no calls at all. The stream itself is not a call
the load counts. `close()` ends every stream (OK) as the server stops, so they do not hold its graceful
stop for the whole grace period; the callers' balancers open a new one on another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import grpc

from bridge.gen.xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from bridge.gen.xds.service.orca.v3 import orca_pb2, orca_pb2_grpc
from bridge.rpc.call import ORCA_SERVICE, Context
from bridge.rpc.load import LoadMeter
from bridge.rpc.orca import load_report

__all__ = ["OrcaService"]


class OrcaService(orca_pb2_grpc.OpenRcaServiceServicer):
    """The servicer: reports of `meter`'s load, at most one every `min_interval` seconds per stream."""

    name: Final = ORCA_SERVICE

    def __init__(self, meter: LoadMeter, *, min_interval: float) -> None:
        if min_interval <= 0:
            raise ValueError(f"min_interval must be positive, got {min_interval}")
        self._meter = meter
        self.min_interval = min_interval
        self._closing = asyncio.Event()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        orca_pb2_grpc.add_OpenRcaServiceServicer_to_server(self, server)

    def interval_of(self, request: orca_pb2.OrcaLoadReportRequest) -> float:
        """Seconds between the reports of a stream: what the caller asked, unless shorter than allowed."""
        asked = request.report_interval.seconds + request.report_interval.nanos / 1e9
        return max(asked, self.min_interval)

    async def StreamCoreMetrics(
        self, request: orca_pb2.OrcaLoadReportRequest, context: Context
    ) -> AsyncIterator[OrcaLoadReport]:
        self._meter.start()
        interval = self.interval_of(request)
        closing = self._closing
        while not closing.is_set():
            yield load_report(self._meter.snapshot())
            with contextlib.suppress(TimeoutError):  # the interval passed
                await asyncio.wait_for(closing.wait(), interval)

    async def close(self) -> None:
        """Ends every stream, now and from now on."""
        self._closing.set()
