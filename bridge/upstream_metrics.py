"""Prometheus series of an upstream pool (bridge.http.failover), read when /metrics is scraped:
each upstream's circuit breaker state, and the hedges fired and won. Only a bridge with several upstreams
or hedging has a pool; with one upstream these series do not exist.

In multi-process mode (`--workers N`) each worker has its own breakers: these series are per process
(prometheus-client's multiprocess collector aggregates only its own metric files)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.http.failover import UpstreamPool

__all__ = ["PoolCollector"]


class PoolCollector(Collector):
    """`prisme_bridge_upstream_state{upstream}` (0 closed: in use, 1 half-open: one trial in flight, 2
    open: skipped), `prisme_bridge_hedges_fired_total`, `prisme_bridge_hedges_won_total`."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "prisme_bridge_upstream_state",
            "Each upstream's circuit breaker: 0 closed (in use), 1 half-open (one trial request in "
            "flight), 2 open (skipped until its cool-down ends).",
            labels=["upstream"],
        )
        for name, value in self._pool.states():
            state.add_metric([name], int(value))
        yield state
        yield CounterMetricFamily(
            "prisme_bridge_hedges_fired",
            "Second requests sent because the first had not reached its commit point in --hedge-after.",
            value=self._pool.hedges_fired,
        )
        yield CounterMetricFamily(
            "prisme_bridge_hedges_won",
            "Hedged calls the second request won (the first was cancelled).",
            value=self._pool.hedges_won,
        )
