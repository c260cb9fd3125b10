"""CPU cost of each step of the bridge's per-call and per-chunk work, in microseconds (one process, no IO).

    .venv/bin/python bench/micro.py

Prices the pieces bench/profile_bridge.py shows as hot, on the benchmark's own request and the mock's
own reply and chunks, using process CPU time (so other load on the box matters less than for the
end-to-end numbers), best of 5 repeats. These are warm-cache costs: in the running server the same code
costs more (its caches are shared with grpc, aiohttp and the event loop), so use them to compare versions
of a step, not to add up a call.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from bench import workload  # noqa: E402
from bridge import jsoncodec  # noqa: E402
from bridge.auth.callers import ANONYMOUS_CALLER  # noqa: E402
from bridge.chat import convert  # noqa: E402
from bridge.chat.validation import validate_request  # noqa: E402
from bridge.http.sse import SSEDecoder  # noqa: E402
from bridge.logs import JsonFormatter  # noqa: E402
from bridge.rpc.access import AccessLog  # noqa: E402
from bridge.rpc.call import RpcCall  # noqa: E402
from bridge.rpc.metrics import Metrics  # noqa: E402
from bridge.upstream import errors  # noqa: E402
from bridge.upstream.headers import AuthPolicy, correlation_id, response_metadata, upstream_headers  # noqa: E402

UNARY = f"/{workload.SERVICE}/CreateChatCompletion"
STREAM = f"/{workload.SERVICE}/StreamChatCompletion"


def per_call_us(fn: Callable[[], Any], *, repeat: int = 5) -> float:
    """Best of `repeat` runs of about 0.05 s each, in µs of process CPU time per call of `fn`."""
    number = 1
    while True:
        t0 = time.process_time()
        for _ in range(number):
            fn()
        if time.process_time() - t0 > 0.05:
            break
        number *= 2
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - t0) / number)
    return best * 1e6


async def mock_samples() -> tuple[bytes, bytes, dict[str, str]]:
    """One unary reply body, one 64-chunk stream body and the reply headers, from the real mock gateway."""
    from bridge.mock_gateway import start_mock_gateway

    async with await start_mock_gateway() as mock, aiohttp.ClientSession() as session:
        url = mock.url + "/v1/chat/completions"
        headers = {"content-type": "application/json"}
        unary_body = workload.http_body(stream=False)
        stream_body = workload.http_body(stream=True, prompt=workload.LONG_PROMPT)
        async with session.post(url, data=unary_body, headers=headers) as reply:
            unary, unary_headers = await reply.read(), dict(reply.headers)
        async with session.post(url, data=stream_body, headers=headers) as reply:
            stream = await reply.read()
        return unary, stream, unary_headers


def _access_line_us(level: int) -> float:
    """The access line of a finished unary call, JSON-formatted into memory, at `level`."""
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    old_level = root.level
    try:
        root.setLevel(level)
        call = _finished_call(UNARY, streaming=False)
        access_log = AccessLog()
        return per_call_us(lambda: access_log._write(call))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _finished_call(method: str, *, streaming: bool) -> RpcCall:
    call = RpcCall(method, response_streaming=streaming, model="echo")
    call.upstream_status, call.correlation_id = 200, "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"
    call.upstream_seconds, call.prompt_tokens, call.completion_tokens, call.cost = 0.001, 20, 20, 2.5e-5
    call.messages_received = call.messages_sent = 1
    return call


def _metrics_us() -> float:
    """Metrics' work for one unary call: around (start and end) and the message hooks."""
    metrics = Metrics(CollectorRegistry())

    async def one_call() -> None:
        call = _finished_call(UNARY, streaming=False)
        async with metrics.around(call, context=None):  # type: ignore[arg-type]  # around reads none
            metrics.message_received(call)
            metrics.message_sent(call)

    loop = asyncio.new_event_loop()
    try:
        return per_call_us(lambda: loop.run_until_complete(one_call())) - per_call_us(
            lambda: loop.run_until_complete(asyncio.sleep(0))
        )
    finally:
        loop.close()


def main() -> None:
    unary_raw, stream_raw, headers = asyncio.run(mock_samples())
    unary_doc = jsoncodec.loads(unary_raw)
    frames = [frame + b"\n\n" for frame in stream_raw.split(b"\n\n") if frame.strip()]
    texts = [frame.decode().removeprefix("data: ").strip() for frame in frames]
    word_text = texts[1]
    word_chunk = jsoncodec.loads(word_text)
    request = workload.request_proto()
    body = convert.request_to_upstream(request, stream=False)
    reply = convert.response_from_upstream(unary_doc)
    chunk = convert.chunk_from_upstream(word_chunk)

    def sse_feed() -> None:
        decoder = SSEDecoder()
        for frame in frames:
            decoder.feed(frame)

    rows: list[tuple[str, str, float]] = [
        ("per call", "validate_request", per_call_us(lambda: validate_request(request, streaming=False))),
        (
            "per call",
            "convert.request_to_upstream",
            per_call_us(lambda: convert.request_to_upstream(request, stream=False)),
        ),
        ("per call", "jsoncodec.dumps upstream body", per_call_us(lambda: jsoncodec.dumps(body))),
        (
            "per call",
            "upstream_headers (metadata -> headers)",
            per_call_us(lambda: upstream_headers((), AuthPolicy(), ANONYMOUS_CALLER)),
        ),
        (
            "per call",
            "response_metadata (reply headers -> metadata)",
            per_call_us(lambda: response_metadata(headers)),
        ),
        ("per call", "correlation_id (reply headers)", per_call_us(lambda: correlation_id(headers))),
        (
            "per call",
            f"jsoncodec.loads unary reply ({len(unary_raw)} B)",
            per_call_us(lambda: jsoncodec.loads(unary_raw)),
        ),
        (
            "per call",
            "convert.response_from_upstream",
            per_call_us(lambda: convert.response_from_upstream(unary_doc)),
        ),
        ("per call", "SerializeToString unary reply", per_call_us(reply.SerializeToString)),
        ("per call", "access line at WARNING (filtered out)", _access_line_us(logging.WARNING)),
        ("per call", "access line at INFO, JSON", _access_line_us(logging.INFO)),
        ("per call", "metrics (around + message hooks)", _metrics_us()),
        ("per chunk", "SSEDecoder.feed (one event per feed)", per_call_us(sse_feed) / len(frames)),
        (
            "per chunk",
            "errors.error_from_stream_event",
            per_call_us(
                lambda: errors.error_from_stream_event(
                    word_text, event="message", host="x", correlation_id=None
                )
            ),
        ),
        (
            "per chunk",
            f"jsoncodec.loads chunk ({len(word_text)} B)",
            per_call_us(lambda: jsoncodec.loads(word_text)),
        ),
        (
            "per chunk",
            "convert.chunk_from_upstream",
            per_call_us(lambda: convert.chunk_from_upstream(word_chunk)),
        ),
        ("per chunk", "SerializeToString chunk", per_call_us(chunk.SerializeToString)),
    ]
    print(f"{'scope':<10} {'step':<56} {'µs CPU':>8}")
    for scope, name, us in rows:
        print(f"{scope:<10} {name:<56} {us:8.2f}")


if __name__ == "__main__":
    main()
