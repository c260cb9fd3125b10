"""The load of the pod, as ORCA reports it (bridge.rpc.orca): calls in flight, rates, CPU utilization.

Every process serving calls (one, or each of the `--workers`) has a row of counters in a `LoadBoard`:
CPU time, calls started, calls that failed on the server's side, calls and streams in flight. With
workers the board lives in memory the parent maps before it forks (an anonymous shared mapping), so each
worker writes its own row and reads every row: a report from any worker is the pod's load, with no lock
(one writer per row; aligned 8-byte cells) and no system call per call.

A `LoadMeter` is one process's view: `call_started` / `call_ended` on each call (a few memory writes),
`sample()` every `window / SAMPLES_PER_WINDOW` seconds (publishes this process's CPU time and keeps the
pod's totals), and `snapshot()` for a report. Rates and CPU are averaged over the last `window` seconds
of samples; in-flight counts are live. No gRPC here: the parent of the workers builds the board before
any gRPC object exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

__all__ = [
    "DEFAULT_LOAD_OPTIONS",
    "SAMPLES_PER_WINDOW",
    "Load",
    "LoadBoard",
    "LoadMeter",
    "LoadOptions",
    "available_cores",
]

SAMPLES_PER_WINDOW: Final = 10

# The cells of a row, each a signed 64-bit integer.
_CPU_NS, _CALLS, _FAILED, _IN_FLIGHT, _STREAMS = range(5)
_CELLS: Final = 5
_CELL_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What a report means. `window`: seconds over which rates and CPU are averaged. `capacity`: calls in
    flight one process takes at most (--max-concurrent-rpcs), the scale of application utilization; None:
    no application utilization (callers' balancers then use the CPU's). `cores`: CPU the pod's serving
    processes can use together, the scale of CPU utilization."""

    window: float = 10.0
    capacity: int | None = None
    cores: float = 1.0

    def __post_init__(self) -> None:
        if self.window <= 0 or self.cores <= 0 or (self.capacity is not None and self.capacity < 1):
            raise ValueError(f"invalid load options: {self}")


DEFAULT_LOAD_OPTIONS: Final = LoadOptions()


class Load(NamedTuple):
    """The pod's load at one moment. Utilizations are fractions (above 1.0: past the soft limit)."""

    cpu_utilization: float
    application_utilization: float  # 0.0 when there is no capacity to measure it against
    rps: float  # calls started per second, over the window
    eps: float  # calls failed on the server's side per second, over the window
    in_flight: int  # calls being served (a stream until its last message)
    streams_in_flight: int


class LoadBoard:
    """A row of counters for each of `processes` processes; `shared`: in memory that processes forked
    after it share (else a private buffer, for one process)."""

    def __init__(self, processes: int = 1, *, shared: bool = False) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        size = processes * _CELLS * _CELL_BYTES
        buffer: mmap.mmap | bytearray = mmap.mmap(-1, size) if shared else bytearray(size)
        self.processes = processes
        self.cells = memoryview(buffer).cast("q")

    def forget(self, row: int) -> None:
        """Process `row` serves nothing now (it died, or a new one starts): its live counts go to zero;
        its counters stay, for the rates (a replacement continues them)."""
        base = row * _CELLS
        self.cells[base + _IN_FLIGHT] = self.cells[base + _STREAMS] = 0

    def total(self, cell: int) -> int:
        cells = self.cells
        if self.processes == 1:
            return cells[cell]
        return sum(cells[cell : self.processes * _CELLS : _CELLS])


class _Sample(NamedTuple):
    at: float  # monotonic seconds
    calls: int
    failed: int
    cpu_ns: int


class LoadMeter:
    """Process `row` (0-based) of `board`: counts its calls and reports the pod's load. Rows start where a
    previous process of the same row left its counters (a replaced worker), except the live counts.
    `clock` and `cpu_ns` (this process's CPU time) are injectable for tests."""

    def __init__(
        self,
        options: LoadOptions,
        board: LoadBoard | None = None,
        row: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_ns: Callable[[], int] = time.process_time_ns,
    ) -> None:
        self.options = options
        self.board = board if board is not None else LoadBoard()
        if not 0 <= row < self.board.processes:
            raise ValueError(f"row {row} is not on a board of {self.board.processes}")
        self.period = options.window / SAMPLES_PER_WINDOW
        self._clock, self._cpu_ns = clock, cpu_ns
        cells, base = self.board.cells, row * _CELLS
        self._cells = cells
        self._calls, self._failed = base + _CALLS, base + _FAILED
        self._in_flight, self._streams = base + _IN_FLIGHT, base + _STREAMS
        self._cpu_cell = base + _CPU_NS
        self.board.forget(row)  # a dead predecessor's calls are not in flight
        self._cpu_base = cells[self._cpu_cell] - cpu_ns()
        # Oldest first; the first one of them older than the window is where rates start.
        self._samples: deque[_Sample] = deque(maxlen=SAMPLES_PER_WINDOW + 2)
        self._rates = (0.0, 0.0, 0.0)  # CPU utilization, rps, eps, as of the last sample
        self._sampler: asyncio.Task[None] | None = None
        self.sample()

    # ---------------------------------------------------------------------------- the calls (hot path)

    def call_started(self, streaming: bool) -> None:
        cells = self._cells
        cells[self._calls] += 1
        cells[self._in_flight] += 1
        if streaming:
            cells[self._streams] += 1

    def call_ended(self, streaming: bool, failed: bool) -> None:
        cells = self._cells
        cells[self._in_flight] -= 1
        if streaming:
            cells[self._streams] -= 1
        if failed:
            cells[self._failed] += 1

    def snapshot(self) -> Load:
        """The pod's load: rates and CPU as of the last sample, calls and streams in flight now."""
        board = self.board
        in_flight = board.total(_IN_FLIGHT)
        capacity = self.options.capacity
        utilization = in_flight / (capacity * board.processes) if capacity else 0.0
        cpu, rps, eps = self._rates
        return Load(cpu, utilization, rps, eps, in_flight, board.total(_STREAMS))

    # ---------------------------------------------------------------------------------------- samples

    def sample(self) -> None:
        """Publishes this process's CPU time, and computes the pod's rates and CPU utilization over the
        window from the samples kept."""
        self._cells[self._cpu_cell] = self._cpu_base + self._cpu_ns()
        board = self.board
        now = _Sample(self._clock(), board.total(_CALLS), board.total(_FAILED), board.total(_CPU_NS))
        samples = self._samples
        samples.append(now)
        while len(samples) > 2 and samples[1].at <= now.at - self.options.window:
            samples.popleft()
        first = samples[0]
        # Not less than one period: the first samples after a start would make a few calls a high rate.
        elapsed = max(now.at - first.at, self.period)
        cpu = max(now.cpu_ns - first.cpu_ns, 0) / 1e9 / elapsed / self.options.cores
        rps = max(now.calls - first.calls, 0) / elapsed
        self._rates = (cpu, rps, max(now.failed - first.failed, 0) / elapsed)

    def start(self) -> None:
        """Samples every period from now on, in a task of the running loop (once; `stop` ends it)."""
        if self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.sample()


# ------------------------------------------------------------------------------------------------ CPU

_CGROUP: Final = Path("/sys/fs/cgroup")


def available_cores(root: Path = _CGROUP) -> float:
    """The CPUs this process may use: its cgroup's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`;
    a Kubernetes CPU limit), else the CPUs it may run on (its affinity), whichever is fewer."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = _cgroup_quota(root)
    return min(cpus, quota) if quota is not None else cpus


def _cgroup_quota(root: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        limit, interval = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(interval)
    with contextlib.suppress(OSError, ValueError):
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    return None
