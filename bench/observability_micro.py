"""CPU per call of the observability interceptors alone (no network): µs of process time per call.

    .venv/bin/python bench/observability_micro.py

Runs each configuration's interceptors around a do-nothing unary call and a 22-message stream, on one
event loop, and reports process CPU time per call (less sensitive to other load on the box than the
end-to-end benchmark, which measures the same thing within the whole call: bench/run.py bridge-observed).
Configurations: the default bridge (tracing pass-through and an access log at WARNING, i.e. silent), and
with metrics and INFO access lines in JSON written to a file, as `serve --metrics-listen` logs them; each
with and without the ORCA load report (`--orca`, on by default: counted, its trailer built and set).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.logs import setup_logging
from bridge.rpc.access import AccessLog
from bridge.rpc.call import RpcCall
from bridge.rpc.chain import _Active, _add_trailers, _around
from bridge.rpc.interceptors import Interceptor
from bridge.rpc.load import LoadMeter, LoadOptions
from bridge.rpc.metrics import Metrics
from bridge.rpc.orca import LoadReports
from bridge.rpc.tracing import Tracing

METHOD = "/prisme.llmgateway.v1.ChatCompletionService/StreamChatCompletion"
CALLS = 20_000
MESSAGES = 22


class _Context:
    trailers: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "grpc-go/1.85.0"), ("authorization", "Bearer x"))

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self.trailers

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str | bytes], ...]) -> None:
        self.trailers = trailers


async def _run(interceptors: list[Interceptor], streaming: bool) -> float:
    active = _Active.of(tuple(interceptors))
    context: Any = _Context()
    started = time.process_time()
    for _ in range(CALLS):
        call = RpcCall(METHOD, response_streaming=streaming, model="gpt-4o", trailer_hooks=active.trailers)
        context.trailers = ()
        async with _around(active.interceptors, call, context):
            call.messages_received += 1
            for hook in active.received:
                hook(call)
            call.upstream_replied(200, "corr-1")
            call.upstream_seconds = 0.001
            call.record_usage(20, 20, 0.0002)
            for _ in range(MESSAGES if streaming else 0):
                call.messages_sent += 1
                for hook in active.sent:
                    hook(call)
            _add_trailers(call, context)
    return (time.process_time() - started) / CALLS * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "log"), "w") as sink:
        setup_logging("INFO", "json", sink)
        quiet, loud = logging.getLogger("bench.quiet"), logging.getLogger("bench.loud")
        quiet.setLevel(logging.WARNING)

        def orca() -> list[Interceptor]:
            return [LoadReports(LoadMeter(LoadOptions(capacity=100)), skip_services=())]

        configs = {
            "default (tracing pass-through, access log silent)": lambda: [Tracing(), AccessLog(quiet)],
            "the same + ORCA load report": lambda: [Tracing(), AccessLog(quiet), *orca()],
            "metrics + JSON access lines": lambda: [
                Metrics(CollectorRegistry()),
                Tracing(),
                AccessLog(loud),
            ],
            "the same + ORCA load report ": lambda: [
                Metrics(CollectorRegistry()),
                Tracing(),
                AccessLog(loud),
                *orca(),
            ],
        }
        for streaming in (False, True):
            for name, build in configs.items():
                cost = asyncio.run(_run(build(), streaming))
                kind = f"stream ({MESSAGES} messages)" if streaming else "unary"
                print(f"{kind:<22} {name:<52} {cost:7.1f} µs CPU per call")


if __name__ == "__main__":
    main()
