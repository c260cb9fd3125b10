"""What each idle open stream holds in the bridge: Python allocations by site (tracemalloc) and RSS.

    .venv/bin/python bench/idle_memory.py -n 500
    .venv/bin/python bench/idle_memory.py -n 500 --transport aiohttp --event-loop asyncio

The bridge runs in this process (`bridge.app.build_bridge`, the production config's metrics and access
log on), the mock gateway and the stream holder (bench/idle_streams.py, the mock's `stall` model: three
chunks, then silence) in processes of their own, so only the bridge's allocations are counted. Prints
RSS per stream, the Python-allocated part of it per stream, and the top allocation sites (what the rest
is: gRPC core's C state and the allocator's own overhead, which tracemalloc does not see).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import workload  # noqa: E402
from bridge import eventloop  # noqa: E402
from bridge.eventloop import DEFAULT_EVENT_LOOP  # noqa: E402
from bridge.http.transports.base import DEFAULT_TRANSPORT, TRANSPORT_NAMES  # noqa: E402


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(args: argparse.Namespace) -> None:
    settings = {"upstream_transport": args.transport, "metrics_listen": "127.0.0.1:0"}
    async with workload.bridge_on_mock(settings) as address:
        await _hold(address, 20)  # warm: first-use allocations are not per stream
        tracemalloc.start(args.frames)
        before, rss_before = tracemalloc.take_snapshot(), _rss_kb()
        holder = await _open(address, args.n)
        await asyncio.sleep(2.0)
        after, rss_after = tracemalloc.take_snapshot(), _rss_kb()
        await _close(holder)
    stats = after.compare_to(before, "traceback" if args.frames > 1 else "lineno")
    python_bytes = sum(stat.size_diff for stat in stats)
    n = args.n
    print(f"transport {args.transport}, loop {args.event_loop}, {n} idle streams")
    print(f"RSS: {(rss_after - rss_before) / n:.1f} KiB per stream ({rss_before:,} -> {rss_after:,} KiB)")
    print(f"Python allocations (tracemalloc): {python_bytes / n / 1024:.1f} KiB per stream")
    print(f"top {args.top} sites, bytes per stream:")
    for stat in stats[: args.top]:
        frames = stat.traceback.format()[-2 * args.frames :: 2] if args.frames > 1 else [str(stat.traceback)]
        where = " <- ".join(f.strip() for f in frames)
        print(f"  {stat.size_diff / n:8.0f}  {stat.count_diff / n:5.1f} blocks  {where}")


async def _hold(address: str, n: int) -> None:
    await _close(await _open(address, n))
    await asyncio.sleep(0.5)


async def _open(address: str, n: int) -> asyncio.subprocess.Process:
    """bench/idle_streams.py holding `n` streams, once they are all open."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "idle_streams.py"), "--target", address, "-n", str(n),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert holder.stdout is not None
    line = (await asyncio.wait_for(holder.stdout.readline(), 120)).decode().strip()
    if line != f"open {n}":
        raise RuntimeError(f"streams did not open: {line!r}")
    return holder


async def _close(holder: asyncio.subprocess.Process) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    await holder.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="idle streams held open")
    parser.add_argument("--transport", choices=TRANSPORT_NAMES, default=DEFAULT_TRANSPORT)
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default=DEFAULT_EVENT_LOOP)
    parser.add_argument("--frames", type=int, default=1, help="traceback depth of each allocation site")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    eventloop.run(measure(args), args.event_loop)


if __name__ == "__main__":
    main()
