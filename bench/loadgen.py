"""Python load generator (a separate process): HTTP to the mock gateway (baseline B) or gRPC (fallback).

Modes:
  http-unary   POST the benchmark body (`stream: false`) to BASE/chat/completions with aiohttp, read the
               whole reply (not parsed: this is the upstream's ceiling, not a client's).
  http-stream  the same with `stream: true`; counts `data:` lines (except [DONE]) as chunks, reading
               line by line, without JSON parsing.
  grpc-unary / grpc-stream
               grpc.aio with the generated stubs, one channel; only used when ghz / the Go streamgen are
               unavailable (see run.py --generator).

`-c` calls stay in flight for `-z` seconds after `--warmup` seconds that are not counted; calls already
started when the time is up finish and count. Prints one JSON object (same keys as streamgen's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workload

Sample = tuple[float, float, int]  # total s, first message s, chunks
CallFn = Callable[[], Awaitable[Sample]]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(p: float) -> float:  # nearest rank, as streamgen
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {
        "p50": at(50),
        "p90": at(90),
        "p99": at(99),
        "mean": sum(ordered) / len(ordered) * 1000,
        "max": ordered[-1] * 1000,
    }


async def drive(call: CallFn, concurrency: int, duration: float) -> tuple[list[Sample], Counter[str], float]:
    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                samples.append(await call())
            except Exception as exc:
                errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, errors, time.perf_counter() - start


def http_call(session: Any, url: str, *, stream: bool) -> CallFn:
    body = workload.http_body(stream=stream, prompt=workload.LONG_PROMPT if stream else workload.PROMPT)
    headers = {"content-type": "application/json"}

    async def unary() -> Sample:
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as reply:
            await reply.read()
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}")
        total = time.perf_counter() - t0
        return total, total, 1

    async def streamed() -> Sample:
        t0 = time.perf_counter()
        first = 0.0
        chunks = 0
        async with session.post(url, data=body, headers=headers) as reply:
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}")
            async for line in reply.content:
                if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                    if not chunks:
                        first = time.perf_counter() - t0
                    chunks += 1
        return time.perf_counter() - t0, first, chunks

    return streamed if stream else unary


def grpc_call(channel: Any, *, stream: bool, paced: bool = False) -> CallFn:
    """One call of the workload: unary, a 64-chunk stream, or (`paced`) the paced scenario's stream."""
    from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc

    stub = pb_grpc.ChatCompletionServiceStub(channel)
    if paced:
        request = workload.request_proto(workload.PACED_PROMPT, workload.PACED_MODEL)
    else:
        request = workload.request_proto(workload.LONG_PROMPT if stream else workload.PROMPT)

    async def unary() -> Sample:
        t0 = time.perf_counter()
        await stub.CreateChatCompletion(request, timeout=20)
        total = time.perf_counter() - t0
        return total, total, 1

    async def streamed() -> Sample:
        t0 = time.perf_counter()
        first = 0.0
        chunks = 0
        async for _ in stub.StreamChatCompletion(request, timeout=20):
            if not chunks:
                first = time.perf_counter() - t0
            chunks += 1
        return time.perf_counter() - t0, first, chunks

    return streamed if stream else unary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stream = args.mode.endswith("stream")
    if args.mode.startswith("http"):
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        async with aiohttp.ClientSession(connector=connector) as session:
            call = http_call(session, args.target.rstrip("/") + "/chat/completions", stream=stream)
            return await measure(call, args, stream, "loadgen.py (Python, aiohttp client)")
    import grpc

    async with grpc.aio.insecure_channel(args.target) as channel:
        return await measure(grpc_call(channel, stream=stream), args, stream, "loadgen.py (Python, grpc.aio)")


async def measure(call: CallFn, args: argparse.Namespace, stream: bool, name: str) -> dict[str, Any]:
    if args.warmup > 0:
        await drive(call, args.c, args.warmup)
    cpu0 = time.process_time()
    samples, errors, elapsed = await drive(call, args.c, args.z)
    cpu = time.process_time() - cpu0
    chunks = sum(s[2] for s in samples)
    result: dict[str, Any] = {
        "generator": name,
        "count": len(samples),
        "errors": sum(errors.values()),
        "error_samples": dict(errors.most_common(5)),
        "duration_s": elapsed,
        "rps": len(samples) / elapsed,
        "latency_ms": percentiles([s[0] for s in samples]),
        "cpu_s": cpu,
    }
    if stream:
        result |= {
            "first_ms": percentiles([s[1] for s in samples]),
            "chunks": chunks,
            "chunks_per_s": chunks / elapsed,
            "chunks_per_rpc": chunks / len(samples) if samples else 0.0,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode", required=True, choices=["http-unary", "http-stream", "grpc-unary", "grpc-stream"]
    )
    parser.add_argument("--target", required=True, help="http: mock base URL (…/v1); grpc: HOST:PORT")
    parser.add_argument("-c", type=int, default=16, help="calls in flight")
    parser.add_argument("-z", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (not counted)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
