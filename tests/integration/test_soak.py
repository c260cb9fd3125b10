"""Soak (marker `soak`; CI runs it): `prisme-bridge serve` as a process in front of the mock gateway, measured
from outside through /proc (resident memory, file descriptors, threads, the upstream sockets it holds) and
through tests/soak_probe.py (its asyncio tasks).

- 1,000 client cancels and 1,000 deadline expiries, each in the middle of a stream, leave no upstream
  connection open and resident memory within 20 MB of where it was after a warm-up;
- a minute of mixed steady load (answers, streams, cancels, expiries, upstream errors, broken streams,
  invalid requests) leaves tasks, threads, descriptors and memory where the first seconds of it left them.

What is measured is what leaks: growth with the calls made (a thousand per round), not a pool's first start.
Thread pools that start or size themselves lazily are told apart by their threads' names (`POOLS`) and may
grow by `POOL_SLACK` threads; every other thread, task and descriptor must be where it was. Snapshots are
taken once the process has settled (every upstream request ended, then its counts steady), not after a
fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from tests.helpers import (
    GUARD_S,
    CliProcess,
    call_failing,
    chat_request,
    cli_env,
    collect,
    run_cli,
    wait_all_ended,
)

pytestmark = pytest.mark.soak

MiB = 1024 * 1024
RSS_SLACK = 20 * MiB
# Thread pools that start lazily and size themselves (the kernel's names of their threads): grpc's
# EventEngine pool grows under load and shrinks when idle; libuv's pool (uvloop's DNS lookups) starts its
# four threads at its first use. A leak grows with the calls made, a thousand per round: far past this.
POOLS = frozenset({"event_engine", "libuv-worker"})
POOL_SLACK = 8
FD_SLACK = 4  # descriptors a lazily started pool opens (eventfds, pipes); a leak per call is ~1000
SETTLE_POLL_S = 0.1
STEADY_SNAPSHOTS = 3
_PROBE_LINE = re.compile(r"soak-probe asyncio_tasks=(\d+)")


@dataclass(frozen=True)
class Snapshot:
    rss: int  # bytes
    fds: int  # open file descriptors, upstream sockets excluded
    threads: tuple[tuple[str, int], ...]  # (the kernel's name of a thread, how many have it), by name
    tasks: int  # asyncio tasks
    upstream: int  # sockets connected to the upstream's port

    def threads_named(self, names: frozenset[str], *, but: bool = False) -> int:
        """Threads whose name is among `names` (`but`: whose name is not)."""
        return sum(count for name, count in self.threads if (name in names) != but)


class Bridge:
    """The bridge process: a stub on it, and snapshots of its resources."""

    def __init__(self, process: CliProcess, port: int, upstream_port: int) -> None:
        self.pid = process.process.pid
        self.address = f"127.0.0.1:{port}"
        self._upstream_port = upstream_port
        self._stderr = process.process.stderr
        self._probes: asyncio.Queue[int] = asyncio.Queue()
        self.log: list[str] = list(process.log)

    async def read_logs(self) -> None:
        """Reads its stderr as it comes (a full pipe would block it), picking out probe answers."""
        assert self._stderr is not None
        while raw := await self._stderr.readline():
            line = raw.decode(errors="replace")
            if found := _PROBE_LINE.search(line):
                self._probes.put_nowait(int(found.group(1)))
            else:
                self.log.append(line)

    async def snapshot(self) -> Snapshot:
        os.kill(self.pid, signal.SIGUSR1)
        async with asyncio.timeout(10):
            tasks = await self._probes.get()
        proc = Path(f"/proc/{self.pid}")
        rss_kib = int(re.search(r"VmRSS:\s+(\d+) kB", (proc / "status").read_text()).group(1))  # type: ignore[union-attr]
        sockets = set()
        fds = 0
        for fd in (proc / "fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                target = os.readlink(fd)
                fds += 1
                if target.startswith("socket:["):
                    sockets.add(target[8:-1])
        upstream = self._upstream_sockets(proc, sockets)
        threads = Counter(_thread_name(task) for task in (proc / "task").iterdir())
        return Snapshot(rss_kib * 1024, fds - upstream, tuple(sorted(threads.items())), tasks, upstream)

    def _upstream_sockets(self, proc: Path, inodes: set[str]) -> int:
        """Sockets of the process (by inode) whose remote end is the upstream's port, in any state."""
        count = 0
        for table in ("tcp", "tcp6"):
            for line in (proc / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == self._upstream_port and fields[9] in inodes:
                    count += 1
        return count


@contextlib.asynccontextmanager
async def _bridge(mock: MockGateway) -> AsyncIterator[tuple[Bridge, pb_grpc.ChatCompletionServiceStub]]:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock.base_url, BRIDGE_SHUTDOWN_GRACE="1")
    async with run_cli("serve", "--listen", "127.0.0.1:0", env=env, module="tests.soak_probe") as process:
        port = int((await process.wait_log(r"bridge listening on 127\.0\.0\.1:(\d+)")).group(1))
        bridge = Bridge(process, port, mock.port)
        reader = asyncio.create_task(bridge.read_logs())
        try:
            async with grpc.aio.insecure_channel(bridge.address) as channel:
                yield bridge, pb_grpc.ChatCompletionServiceStub(channel)
            await process.stop(signal.SIGTERM, within=15)
            await reader  # to the end of its output
        finally:
            reader.cancel()
    assert not [line for line in bridge.log if "Traceback" in line or '"ERROR"' in line]


def _thread_name(task: Path) -> str:
    try:
        return (task / "comm").read_text().strip()
    except FileNotFoundError:  # the thread ended meanwhile
        return "(ended)"


async def _many(call: Callable[[], Awaitable[bool]], count: int, concurrency: int) -> None:
    """Calls `concurrency` at a time until `count` of them returned True (that they did what they are
    meant to do, e.g. expire mid-stream rather than before the stream began)."""
    counted = 0
    for _ in range(4 * count // concurrency + 1):  # bounded: a machine that slow fails the test
        counted += sum(await asyncio.gather(*(call() for _ in range(concurrency))))
        if counted >= count:
            return
    pytest.fail(f"only {counted} of {count} calls did what they were meant to")


async def _settled(bridge: Bridge, mock: MockGateway) -> Snapshot:
    """A snapshot once every upstream request has ended and the bridge has finished with each: its upstream
    sockets closed and its tasks and descriptors steady over `STEADY_SNAPSHOTS` snapshots in a row (the
    bridge's side of the last closes, grpc's per-call cleanup), however long that takes on this machine."""
    await wait_all_ended(mock, within=GUARD_S)
    async with asyncio.timeout(GUARD_S):
        recent = [await bridge.snapshot()]
        while len(recent) < STEADY_SNAPSHOTS or len({(s.tasks, s.fds, s.upstream) for s in recent}) > 1:
            await asyncio.sleep(SETTLE_POLL_S)
            recent = [*recent[-(STEADY_SNAPSHOTS - 1) :], await bridge.snapshot()]
    return recent[-1]


def _assert_no_leak(before: Snapshot, after: Snapshot) -> None:
    """Nothing grew with the calls made between the two: tasks and the threads of no pool exactly as before,
    pool threads and descriptors within what a lazily started pool takes, no upstream socket left open."""
    assert after.tasks == before.tasks
    assert after.threads_named(POOLS, but=True) == before.threads_named(POOLS, but=True), (before, after)
    assert after.threads_named(POOLS) <= before.threads_named(POOLS) + POOL_SLACK, (before, after)
    assert after.fds <= before.fds + FD_SLACK, (before, after)
    assert after.rss - before.rss < RSS_SLACK


# -------------------------------------------------------------------------- cancels and expiries


async def test_a_thousand_cancels_and_a_thousand_expiries_mid_stream_leak_nothing(
    mock_gateway: MockGateway,
) -> None:
    async with _bridge(mock_gateway) as (bridge, stub):

        async def cancel() -> bool:
            call = stub.StreamChatCompletion(chat_request(model="endless"), timeout=30)
            first = await call.read()  # the stream flows: the upstream request is open
            assert first.choices[0].delta.role == "assistant"
            return call.cancel()

        async def expire() -> bool:
            error, received = await call_failing(stub, "stream", chat_request(model="endless"), timeout=0.5)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            return bool(received)  # mid-stream: chunks had arrived (under load, the first can come late)

        storms = ((cancel, 50), (expire, 100))  # each with its concurrency
        for storm, concurrency in storms:  # warm-up at the same concurrency: pools, caches, allocator arenas
            await _many(storm, 200, concurrency)
        before = await _settled(bridge, mock_gateway)
        after_each = []
        for storm, concurrency in storms:
            await _many(storm, 1000, concurrency)
            after_each.append(await _settled(bridge, mock_gateway))
        after_cancels, after = after_each

    print(f"soak: before {before}, after 1000 cancels {after_cancels}, after 1000 expiries {after}")
    for snapshot in (before, after_cancels, after):
        assert snapshot.upstream == 0  # every abandoned upstream request's connection was closed
    _assert_no_leak(before, after_cancels)
    _assert_no_leak(before, after)


# ------------------------------------------------------------------------------------- steady load

LOAD_SECONDS = 60
WORKERS = 12


async def _mixed_call(stub: pb_grpc.ChatCompletionServiceStub, i: int) -> None:
    """One call of the steady mix, chosen by `i`: mostly answers, and every kind of ending."""
    kind = i % 10
    if kind in (0, 1, 2):
        await stub.CreateChatCompletion(chat_request(text=f"answer {i}"), timeout=10)
    elif kind in (3, 4):
        await collect(stub.StreamChatCompletion(chat_request(text=f"stream {i} of words"), timeout=10))
    elif kind == 5:
        call = stub.StreamChatCompletion(chat_request(model="endless"), timeout=10)
        await call.read()
        call.cancel()
    elif kind == 6:
        await call_failing(stub, "stream", chat_request(model="endless"), timeout=0.2)
    elif kind == 7:
        await call_failing(stub, "unary", chat_request(model="error-503"), timeout=10)
    elif kind == 8:
        await call_failing(stub, "stream", chat_request(model=("reset", "truncated", "bad-json")[i % 3]))
    else:
        await call_failing(stub, "unary", chat_request(model=""), timeout=10)


async def _steady(stub: pb_grpc.ChatCompletionServiceStub, seconds: float) -> int:
    """`WORKERS` callers, each calling the mix back to back for `seconds`; the calls made."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    made = 0

    async def worker(offset: int) -> None:
        nonlocal made
        i = offset
        while loop.time() < end:
            await _mixed_call(stub, i)
            made += 1
            i += WORKERS

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    return made


async def test_a_minute_of_mixed_load_shows_no_growth(mock_gateway: MockGateway) -> None:
    async with _bridge(mock_gateway) as (bridge, stub):
        await _steady(stub, 10)  # warm-up
        start = await _settled(bridge, mock_gateway)
        made = await _steady(stub, LOAD_SECONDS - 10)
        end = await _settled(bridge, mock_gateway)

    print(f"soak: {made} calls; after the warm-up {start}, at the end {end}")
    assert made > 1000
    assert end.upstream <= WORKERS  # idle keep-alive connections, at most one per caller
    _assert_no_leak(start, end)
