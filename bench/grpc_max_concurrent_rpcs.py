"""Experiment: how grpc.aio's own `maximum_concurrent_rpcs` behaves with the installed grpcio.

    .venv/bin/python bench/grpc_max_concurrent_rpcs.py

A bare grpc.aio server (no bridge) with maximum_concurrent_rpcs=2 and a method that blocks until
released. Prints, per scenario, each call's outcome and when it ended (ms after the scenario began):
  1. three calls at once: is the third refused at once, or queued until a slot frees (grpc#30424)?
  2. a health-like method while the slow ones hold both slots: is it refused too (server-wide limit)?
  3. waves of calls that end by deadline and by refusal, then three calls: does the count drift
     (grpc#41531: refused calls were also subtracted, so the limit stopped holding)?
Why the bridge keeps its own limit whatever this prints: docs/limits.md.
"""

from __future__ import annotations

import asyncio
import time

import grpc

_SERVICE = "probe.Limits"


async def main() -> None:
    release = asyncio.Event()

    async def slow(request: bytes, context: object) -> bytes:
        await release.wait()
        return request

    async def fast(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server(maximum_concurrent_rpcs=2)
    handlers = {
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Fast": grpc.unary_unary_rpc_method_handler(fast),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            slow_call = channel.unary_unary(f"/{_SERVICE}/Slow")
            fast_call = channel.unary_unary(f"/{_SERVICE}/Fast")
            started = time.perf_counter()

            async def outcome(call: grpc.aio.UnaryUnaryMultiCallable, deadline_s: float) -> str:
                try:
                    await call(b"x", timeout=deadline_s)
                    result = "OK"
                except grpc.aio.AioRpcError as error:
                    result = error.code().name
                return f"{result} at {(time.perf_counter() - started) * 1000:.0f} ms"

            pending = [asyncio.ensure_future(outcome(slow_call, 5)) for _ in range(3)]
            await asyncio.sleep(0.3)
            print("1+2. with 2 slow calls in flight, a fast call:", await outcome(fast_call, 5))
            release.set()
            print("1.   three slow calls at once, released at 300 ms:", await asyncio.gather(*pending))

            release.clear()
            for _ in range(3):
                await asyncio.gather(*(outcome(slow_call, 0.2) for _ in range(4)))
            started = time.perf_counter()
            pending = [asyncio.ensure_future(outcome(slow_call, 5)) for _ in range(3)]
            await asyncio.sleep(0.3)
            release.set()
            print("3.   after 3 waves of 4 (deadlines, refusals), 3 calls:", await asyncio.gather(*pending))
    finally:
        await server.stop(0)


if __name__ == "__main__":
    print("grpcio", grpc.__version__)
    asyncio.run(main())
