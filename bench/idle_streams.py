"""Holds N idle streams open on a bridge, for bench/run.py's memory-per-idle-stream point.

Each stream asks the mock gateway's `stall-<ms>` model: the role chunk and two content chunks arrive, then
the upstream sends nothing for minutes. Once every stream has its three messages the client prints
`open N` on stdout and holds them until stdin closes (or SIGTERM), then cancels them all and exits.

    python bench/idle_streams.py --target 127.0.0.1:50051 -n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc

FIRST_MESSAGES = 3  # role chunk, "Partial ", "answer" (bridge.mock_gateway, stall-<ms>)


async def hold(target: str, count: int, stall_ms: int) -> None:
    request = pb.CreateChatCompletionRequest(model=f"stall-{stall_ms}")
    request.messages.add(role="user").content.string_value = "hold"
    opened = 0
    all_open = asyncio.Event()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)

        async def one() -> None:
            nonlocal opened
            call = stub.StreamChatCompletion(request)
            for _ in range(FIRST_MESSAGES):
                await call.read()
            opened += 1
            if opened == count:
                all_open.set()
            await call.read()  # nothing comes until the stall ends or the call is cancelled

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        waiting = asyncio.ensure_future(all_open.wait())
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"a stream failed before all were open: {failed[0].exception()!r}")
        print(f"open {count}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_reader(sys.stdin.fileno(), stop.set)  # stdin closed (or written): let go
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the bridge")
    parser.add_argument("-n", type=int, default=1000, help="streams held open")
    parser.add_argument("--stall-ms", type=int, default=600_000, help="the upstream's silence, ms")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(hold(args.target, args.n, args.stall_ms))


if __name__ == "__main__":
    main()
