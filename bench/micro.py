"""CPU cost of each step of the bridge's per-call and per-chunk work, in microseconds (one process, no IO).

    .venv/bin/python bench/micro.py

Prices the pieces bench/profile_bridge.py shows as hot, on the benchmark's own request and the mock's
own reply and chunks, using process CPU time (so other load on the box matters less than for the
end-to-end numbers), best of 5 repeats. Lines marked "candidate" time a cheaper variant of a step, to
size the proposals in docs/PERFORMANCE.md; they are bench-only code, not used by the bridge.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench import workload  # noqa: E402
from bridge.app import upstream_client  # noqa: E402
from bridge.chat import convert  # noqa: E402
from bridge.chat.validation import validate_request  # noqa: E402
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb  # noqa: E402
from bridge.http.client import HttpClient  # noqa: E402
from bridge.http.sse import SSEDecoder  # noqa: E402
from bridge.settings import UpstreamSettings  # noqa: E402
from bridge.upstream import errors  # noqa: E402
from bridge.upstream.headers import AuthPolicy, correlation_id, response_metadata, upstream_headers  # noqa: E402


def per_call_us(fn: Callable[[], Any], *, number: int = 0, repeat: int = 5) -> float:
    if not number:  # aim for ~0.1 s per repeat
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
    """One unary reply body, one stream body and the reply headers, from the real mock gateway."""
    from bridge.mock_gateway import start_mock_gateway

    async with await start_mock_gateway() as mock, httpx.AsyncClient() as client:
        url = mock.url + "/v1/chat/completions"
        unary = await client.post(url, content=workload.http_body(stream=False))
        stream = await client.post(url, content=workload.http_body(stream=True))
        return unary.content, stream.content, dict(unary.headers)


# --- candidates (bench-only sketches of proposed changes) ---------------------------------------------

_CHUNK_KEYS = frozenset({"id", "object", "created", "model", "system_fingerprint", "choices"})
_CHOICE_KEYS = frozenset({"index", "delta", "logprobs", "finish_reason"})


def chunk_fast_path(obj: dict[str, Any]) -> pb.StreamChatCompletionResponse:
    """Candidate: the common text-delta chunk built directly, the generic walk for anything else.

    Falls back to convert.chunk_from_upstream whenever the chunk has a key, type or shape the fast path
    does not cover (tool calls, logprobs, usage, extra keys...), so the output is the same by construction
    for what it handles: plain strings/ints in the known places, delta with role/content only.
    """
    choices = obj.get("choices")
    if not obj.keys() <= _CHUNK_KEYS or type(choices) is not list:
        return convert.chunk_from_upstream(obj)
    out = pb.StreamChatCompletionResponse()
    for key in ("id", "object", "model", "system_fingerprint"):
        value = obj.get(key)
        if value is not None:
            if type(value) is not str:
                return convert.chunk_from_upstream(obj)
            setattr(out, key, value)
    created = obj.get("created")
    if created is not None:
        if type(created) is not int:
            return convert.chunk_from_upstream(obj)
        out.created = created
    for choice in choices:
        if (
            type(choice) is not dict
            or not choice.keys() <= _CHOICE_KEYS
            or choice.get("logprobs") is not None
        ):
            return convert.chunk_from_upstream(obj)
        delta = choice.get("delta")
        if type(delta) is not dict or not delta.keys() <= {"role", "content"}:
            return convert.chunk_from_upstream(obj)
        target = out.choices.add()
        index, finish = choice.get("index"), choice.get("finish_reason")
        if index is not None:
            if type(index) is not int:
                return convert.chunk_from_upstream(obj)
            target.index = index
        if finish is not None:
            if type(finish) is not str:
                return convert.chunk_from_upstream(obj)
            target.finish_reason = finish
        target.delta.SetInParent()
        for key in ("role", "content"):
            value = delta.get(key)
            if value is not None:
                if type(value) is not str:
                    return convert.chunk_from_upstream(obj)
                setattr(target.delta, key, value)
    return out


async def _guard_costs(client: HttpClient, n: int = 100_000) -> dict[str, float]:
    """Per-chunk cost of the deadline/exception guard the stream loop enters around every read."""

    async def source() -> Any:
        for _ in range(n):
            yield b"x"

    async def plain() -> float:
        it = source()
        t0 = time.process_time()
        while await anext(it, None) is not None:
            pass
        return time.process_time() - t0

    async def guarded(deadline: float | None) -> float:
        it = source()
        t0 = time.process_time()
        while True:
            async with client._guard(deadline):
                raw = await anext(it, None)
            if raw is None:
                break
        return time.process_time() - t0

    loop = asyncio.get_running_loop()
    base = min([await plain() for _ in range(3)])
    none = min([await guarded(None) for _ in range(3)])
    deadline = min([await guarded(loop.time() + 3600) for _ in range(3)])
    return {"none": (none - base) / n * 1e6, "deadline": (deadline - base) / n * 1e6}


def _log_call_cost() -> tuple[float, float]:
    """The access log line per call: at WARNING (filtered, as benchmarked) and at INFO (the CLI default)."""
    import io
    import logging

    from bridge.rpc.call import RpcCall
    from bridge.rpc.interceptors import AccessLog

    access_log = AccessLog()

    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    try:
        call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion", False, "echo")

        def log_one() -> None:
            access_log._write(call)

        root.setLevel(logging.WARNING)
        filtered = per_call_us(log_one)
        root.setLevel(logging.INFO)
        return filtered, per_call_us(log_one)
    finally:
        root.removeHandler(handler)
        root.setLevel(logging.WARNING)


def main() -> None:
    unary_raw, stream_raw, headers = asyncio.run(mock_samples())
    unary_doc = json.loads(unary_raw)
    chunk_lines = [
        line.removeprefix("data: ") for line in stream_raw.decode().splitlines() if line.startswith("data: ")
    ]
    chunk_texts = [line for line in chunk_lines if line != "[DONE]"]
    chunks = [json.loads(text) for text in chunk_texts]
    word_chunk, word_text = chunks[1], chunk_texts[1]
    request = workload.request_proto()
    body = convert.request_to_upstream(request, stream=False)
    httpx_headers = httpx.Headers(headers)
    client = upstream_client(UpstreamSettings(url="http://127.0.0.1:9/v1"))
    sse_frames = [f"data: {text}\n\n".encode() for text in chunk_lines]

    def sse_feed() -> None:
        decoder = SSEDecoder()
        for frame in sse_frames:
            decoder.feed(frame)

    # Sanity: the candidate gives the same message on every mock chunk.
    for chunk in chunks:
        assert chunk_fast_path(chunk) == convert.chunk_from_upstream(chunk)

    url = httpx.URL(client.base_url + "/chat/completions")
    httpx_client = client._transport._client  # type: ignore[attr-defined]
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    guard = asyncio.run(_guard_costs(client))
    log_warning, log_info = _log_call_cost()
    rows: list[tuple[str, str, float]] = [
        ("per call", "validate_request", per_call_us(lambda: validate_request(request, streaming=False))),
        (
            "per call",
            "convert.request_to_upstream",
            per_call_us(lambda: convert.request_to_upstream(request, stream=False)),
        ),
        (
            "per call",
            "json.dumps upstream body",
            per_call_us(lambda: json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()),
        ),
        (
            "per call",
            "upstream_headers (metadata -> headers)",
            per_call_us(lambda: upstream_headers((), AuthPolicy())),
        ),
        (
            "per call",
            "httpx build_request with a pre-parsed httpx.URL",
            per_call_us(
                lambda: httpx_client.build_request(
                    "POST", url, content=content, headers={"content-type": "application/json"}
                )
            ),
        ),
        ("per call", "access log line at WARNING (filtered)", log_warning),
        ("per call", "access log line at INFO (default level)", log_info),
        (
            "per call",
            "response_metadata(httpx.Headers)",
            per_call_us(lambda: response_metadata(httpx_headers)),
        ),
        (
            "per call",
            "candidate: response_metadata(dict of headers)",
            per_call_us(lambda: response_metadata(headers)),
        ),
        ("per call", "json.loads unary reply", per_call_us(lambda: json.loads(unary_raw))),
        (
            "per call",
            "convert.response_from_upstream",
            per_call_us(lambda: convert.response_from_upstream(unary_doc)),
        ),
        (
            "per call",
            "SerializeToString unary reply",
            per_call_us(convert.response_from_upstream(unary_doc).SerializeToString),
        ),
        ("per chunk", "SSEDecoder.feed (one event per feed)", per_call_us(sse_feed) / len(sse_frames)),
        ("per chunk", "HttpClient._guard, no deadline", guard["none"]),
        ("per chunk", "HttpClient._guard, with a deadline", guard["deadline"]),
        (
            "per chunk",
            "errors.error_from_stream_event",
            per_call_us(
                lambda: errors.error_from_stream_event(
                    word_text, event="message", domain="x", correlation_id=None
                )
            ),
        ),
        (
            "per chunk",
            "correlation_id(httpx.Headers)",
            per_call_us(lambda: correlation_id(httpx_headers)),
        ),
        ("per chunk", "json.loads chunk", per_call_us(lambda: json.loads(word_text))),
        (
            "per chunk",
            "convert.chunk_from_upstream",
            per_call_us(lambda: convert.chunk_from_upstream(word_chunk)),
        ),
        ("per chunk", "candidate: chunk_fast_path", per_call_us(lambda: chunk_fast_path(word_chunk))),
        (
            "per chunk",
            "SerializeToString chunk",
            per_call_us(convert.chunk_from_upstream(word_chunk).SerializeToString),
        ),
    ]
    print(f"{'scope':<10} {'step':<56} {'µs CPU':>8}")
    for scope, name, us in rows:
        print(f"{scope:<10} {name:<56} {us:8.2f}")


if __name__ == "__main__":
    main()
