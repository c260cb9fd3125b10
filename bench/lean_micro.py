"""µs of CPU per hot-path step (issue 22), this checkout against another one, interleaved in one run.

Each step is timed in a fresh interpreter per checkout (its own `bridge/`), the checkouts alternating
round after round, so a busy neighbour spreads over both; the median of the rounds is reported with the
ratio. Steps that did not exist in the other checkout are timed on this one only.

    .venv/bin/python bench/lean_micro.py --baseline ../i22-base [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A call with every usual fact (model, upstream status, overhead, correlation id, tokens) and an access log,
# for the access-line steps (after the process's logging is set up).
_ACCESS_LOG = """
try:
    from bridge.rpc.access import AccessLog
except ImportError:  # a checkout before session 33 (the access log in bridge.rpc.interceptors)
    from bridge.rpc.interceptors import AccessLog
"""
_USUAL_CALL = (
    _ACCESS_LOG
    + """
from bridge.rpc.call import RpcCall
log = AccessLog()
call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion", response_streaming=False,
               model="echo")
call.upstream_status, call.upstream_attempts, call.upstream_waiting = 200, 1, 0.001
call.correlation_id = "chatcmpl-9f2c.a1_b-20261207"
call.prompt_tokens = call.completion_tokens = 20
"""
)

# One step: (name, setup, statement); run with `timeit` in the checkout's own interpreter and bridge/.
STEPS = (
    (
        "access line, text format (isEnabledFor to the write)",
        """
import logging, os
from bridge.logs import setup_logging
from bridge.rpc.call import RpcCall
"""
        + _ACCESS_LOG
        + """
setup_logging("INFO", "text", open(os.devnull, "w", buffering=1))
log = AccessLog()
call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion", response_streaming=False,
               model="echo")
call.upstream_status, call.upstream_attempts = 200, 1
call.correlation_id = "chatcmpl-9f2c.a1_b-20261207"
call.prompt_tokens = call.completion_tokens = 20
""",
        "log._write(call)",
    ),
    (
        "event-loop iterations alone (the reference for the next step), per iteration",
        """
import asyncio, uvloop
loop = uvloop.new_event_loop()
async def batch():
    for _ in range(50):
        await asyncio.sleep(0)
def run():
    loop.run_until_complete(batch())
""",
        "run()",
        50,
    ),
    (
        "the same iterations, each ending a call with its access line (JSON, to a file), per iteration",
        """
import asyncio, tempfile, uvloop
from bridge.logs import setup_logging
setup_logging("INFO", "json", open(tempfile.mkstemp()[1], "w", buffering=1))
"""
        + _USUAL_CALL
        + """loop = uvloop.new_event_loop()
async def batch():
    for _ in range(50):
        log.call_ended(call, None)
        await asyncio.sleep(0)
def run():
    loop.run_until_complete(batch())
""",
        "run()",
        50,
    ),
    (
        "response_from_upstream, the mock's reply (text, usage with details, cost, carbon)",
        """
from bridge.chat.convert import response_from_upstream
reply = {"id": "chatcmpl-mock8fdd31fd53264a2482c9", "object": "chat.completion", "created": 1796657568,
         "model": "echo", "system_fingerprint": "fp_mock", "choices": [{"index": 0, "message": {
         "role": "assistant", "content": "Benchmarks measure what the bridge really costs: twenty words",
         "refusal": None}, "logprobs": None, "finish_reason": "stop"}], "usage": {"prompt_tokens": 20,
         "completion_tokens": 20, "total_tokens": 40, "prompt_tokens_details": {"cached_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0}, "cost": 0.00025, "duration_ms": 0,
         "carbon": {"gco2e": 0.012, "kwh": 4e-05}}}
""",
        "response_from_upstream(reply)",
    ),
    (
        "the two deadline guards of a unary attempt (HttpClient._guard), per attempt",
        """
import asyncio, uvloop
from bridge.http.client import HttpClient, HttpSettings
from bridge.upstream.errors import OpenAICompatibleErrors
loop = uvloop.new_event_loop()
client = HttpClient(HttpSettings("http://127.0.0.1:9/v1"), errors=OpenAICompatibleErrors())
headers = {"x-request-id": "abc-123", "content-type": "application/json"}
async def batch():
    for _ in range(50):
        async with client._guard(loop.time() + 30, before_reply=True):
            pass
        async with client._guard(loop.time() + 30, headers):
            pass
def run():
    loop.run_until_complete(batch())
""",
        "run()",
        50,
    ),
    (
        "header_value, a provider id (not plain hex)",
        "from bridge.redaction import header_value",
        "header_value('chatcmpl-9f2c.a1_b-20261207')",
    ),
    (
        "validate_request, the benchmark request",
        """
from bench import workload
from bridge.chat.validation import validate_request
request = workload.request_proto()
""",
        "validate_request(request, streaming=False)",
    ),
    (
        "SSE decoding, per event, 64-event stream in 3 reads",
        """
from bridge.http.sse import SSEDecoder
event = (b'data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1765000000,'
         b'"model":"echo","choices":[{"index":0,"delta":{"content":"word "},"logprobs":null,'
         b'"finish_reason":null}]}\\n\\n')
body = event * 64 + b"data: [DONE]\\n\\n"
third = len(body) // 3
reads = [body[:third], body[third:2 * third], body[2 * third:]]
def run():
    decoder = SSEDecoder()
    for read in reads:
        decoder.feed(read)
""",
        "run()",
        65,
    ),
    (
        "SSE decoding, per event, one event per read",
        """
from bridge.http.sse import SSEDecoder
event = (b'data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1765000000,'
         b'"model":"echo","choices":[{"index":0,"delta":{"content":"word "},"logprobs":null,'
         b'"finish_reason":null}]}\\n\\n')
def run():
    decoder = SSEDecoder()
    for _ in range(65):
        decoder.feed(event)
""",
        "run()",
        65,
    ),
)

# The chat service on the mock transport, its replies the setup's PIECES (the reads), and what it is called
# with (a request, a context whose deadline is 30 s away), for the handler steps.
_SERVICE_ON_MOCK = """
transport = MockTransport(lambda request: MockResponse(200, headers, PIECES))
client = HttpClient(HttpSettings(base_url="http://mock/v1"), errors=OPENAI_COMPATIBLE, transport=transport)
service = ChatCompletionService(client, HeaderPolicy())
request = workload.request_proto()
class Context:
    def invocation_metadata(self): return ()
    def time_remaining(self): return 30.0
    async def send_initial_metadata(self, metadata): pass
context = Context()
"""

# The chat handler's stream loop (issue 22, session 30): StreamChatCompletion on the mock transport, from the
# upstream's reads to the reply protos (the request's validation and conversion included, the chunk count
# dividing them), no gRPC; the same code in both checkouts, whatever each one's loop is made of.
_HANDLER = (
    """
import asyncio
from bench import workload
from bridge.chat.service import ChatCompletionService
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.transports.mock import MockResponse, MockTransport
from bridge.rpc.call import RpcCall, enter_call
from bridge.upstream.errors import OPENAI_COMPATIBLE
from bridge.upstream.headers import HeaderPolicy
chunk = (b'data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1765000000,'
         b'"model":"echo","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":{"content":"word "},'
         b'"logprobs":null,"finish_reason":null}],"usage":null}\\n\\n')
finish = chunk.replace(b'"finish_reason":null', b'"finish_reason":"stop"').replace(b'"content":"word "', b'')
usage = (b'data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1765000000,'
         b'"model":"echo","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":64,"total_tokens":69}}\\n\\n')
events = [chunk] * 63 + [finish, usage, b"data: [DONE]\\n\\n"]
body = b"".join(events)
third = len(body) // 3
PIECES = [body[:third], body[third:2 * third], body[2 * third:]] if READS == 3 else events
headers = {"content-type": "text/event-stream", "x-correlation-id": "chatcmpl-mock-1"}
"""
    + _SERVICE_ON_MOCK
    + """METHOD = "/prisme.llmgateway.v1.ChatCompletionService/StreamChatCompletion"
async def consume():
    enter_call(RpcCall(METHOD, response_streaming=True))
    async for _ in service.StreamChatCompletion(request, context):
        pass
loop = asyncio.new_event_loop()
def run():
    loop.run_until_complete(consume())
"""
)
STEPS += (
    ("chat stream handler, per chunk, 66 events in 3 reads", "READS = 3" + _HANDLER, "run()", 65),
    ("chat stream handler, per chunk, one event per read", "READS = 66" + _HANDLER, "run()", 65),
    (
        "chunk_from_upstream, a text chunk",
        """
from bridge.chat.convert import chunk_from_upstream
obj = {"id": "chatcmpl-mock-1", "object": "chat.completion.chunk", "created": 1765000000, "model": "echo",
       "system_fingerprint": "fp_mock",
       "choices": [{"index": 0, "delta": {"content": "word "}, "logprobs": None, "finish_reason": None}]}
""",
        "chunk_from_upstream(obj)",
    ),
)

# One stream of 200 events, one per write with a loop turn between them, read through HttpClient.open_sse on
# uvloop and the aiohttp transport (its read timeout on, the default 300 s) with a deadline (the timer
# EventStream keeps): client and server share the process and the loop, so the figure is both; the server's
# part is the same in both checkouts.
_AIOHTTP_READS = """
import asyncio
import uvloop
from aiohttp import web
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.transports.base import TransportSettings
from bridge.upstream.errors import OPENAI_COMPATIBLE
event = (b'data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1765000000,'
         b'"model":"echo","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}\\n\\n')
async def serve(request):
    reply = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await reply.prepare(request)
    for _ in range(200):
        await reply.write(event)
        await asyncio.sleep(0)
    await reply.write_eof()
    return reply
loop = uvloop.new_event_loop()  # the bridge's default loop
async def start():
    runner = web.ServerRunner(web.Server(serve), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return HttpClient(HttpSettings(f"http://127.0.0.1:{port}/v1", transport=TransportSettings()),
                      errors=OPENAI_COMPATIBLE)
client = loop.run_until_complete(start())
async def stream():
    deadline = loop.time() + 30
    async with client.open_sse("/chat/completions", {"model": "m"}, headers={}, deadline=deadline) as events:
        while await events.read() is not None:
            pass
def run():
    loop.run_until_complete(stream())
"""


def _paced_steps() -> tuple[tuple, ...]:
    """Session 31 (the paced row): the chat handler on the paced scenario's shape, one event per read, 20
    content chunks, the finish, the usage and [DONE] (the request's validation, conversion and the stream's
    open divided among its 22 chunks), and the per-stream part alone (a stream of the finish and [DONE])."""
    paced = _HANDLER.replace(
        "events = [chunk] * 63 + [finish, usage", "events = [chunk] * CHUNKS + [finish, usage"
    )
    return (
        (
            "chat stream handler, per chunk, paced shape (22 chunks, one per read)",
            "READS = 0; CHUNKS = 20" + paced,
            "run()",
            22,
        ),
        (
            "chat stream handler, per stream: the finish and [DONE] alone",
            "READS = 0; CHUNKS = 0" + paced,
            "run()",
            1,
        ),
        (
            "aiohttp transport + EventStream, per read (read timeout on; a loopback server in the process)",
            _AIOHTTP_READS,
            "run()",
            200,
        ),
        (
            "request_to_upstream, the benchmark request (stream)",
            "from bench import workload\nfrom bridge.chat.convert import request_to_upstream\n"
            "request = workload.request_proto()",
            "request_to_upstream(request, stream=True)",
        ),
    )


STEPS += _paced_steps()


def _line_steps() -> tuple[tuple[str, str, str], ...]:
    """Session 31's steps: the access line made and written without an event loop (a write per line,
    to /dev/null), in the JSON format (serve's default) and the text one, for a call with every usual
    fact (model, upstream status, overhead, correlation id, tokens)."""
    setup = (
        """
import os
from bridge.logs import setup_logging
setup_logging("INFO", FORMAT, open(os.devnull, "w"))
"""
        + _USUAL_CALL
    )
    return tuple(
        (f"access line made and written, {name} format, every usual fact", f"FORMAT = {name!r}" + setup,
         "log._write(call)")
        for name in ("json", "text")
    )  # fmt: skip


STEPS += _line_steps()

# Session 33 (the unary path): CreateChatCompletion on the mock transport with the mock gateway's reply and
# headers (a uuid correlation id), from the request proto to the reply proto: validation, the request's
# conversion and encoding, the upstream request (its deadline guards, the retry policy), the reply's reading,
# its facts reported to the call and its reply metadata sent; no gRPC, no chain.
_UNARY = (
    """
import asyncio, uvloop
from bench import workload
from bridge.chat.service import ChatCompletionService
from bridge.http.client import HttpClient, HttpSettings
from bridge.http.transports.mock import MockResponse, MockTransport
from bridge.rpc.call import RpcCall, enter_call
from bridge.upstream.errors import OPENAI_COMPATIBLE
from bridge.upstream.headers import HeaderPolicy
reply = (b'{"id":"chatcmpl-mock8fdd31fd53264a2482c9","object":"chat.completion","created":1796657568,'
         b'"model":"echo","system_fingerprint":"fp_mock","choices":[{"index":0,"message":{"role":"assistant",'
         b'"content":"Benchmarks measure what the bridge really costs: twenty words","refusal":null},'
         b'"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":20,'
         b'"total_tokens":40,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":'
         b'{"reasoning_tokens":0},"cost":0.00025,"duration_ms":0,"carbon":{"gco2e":0.012,"kwh":4e-05}}}')
headers = {"content-type": "application/json", "content-length": str(len(reply)),
           "x-correlation-id": "5f0c6a8e-2b1d-4c3e-9f7a-1d2e3f4a5b6c",
           "date": "Tue, 08 Dec 2026 00:00:00 GMT", "server": "Python/3.11 aiohttp/3.13"}
PIECES = [reply]
"""
    + _SERVICE_ON_MOCK
    + """METHOD = "/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion"
async def calls():
    for _ in range(20):
        enter_call(RpcCall(METHOD, response_streaming=False))
        await service.CreateChatCompletion(request, context)
loop = uvloop.new_event_loop()  # the bridge's default loop
def run():
    loop.run_until_complete(calls())
"""
)
STEPS += (("chat unary handler, per call (mock transport, no gRPC)", _UNARY, "run()", 20),)

_TIMER = """
import sys, timeit, json
sys.path.insert(0, ".")
setup, statement, per = sys.argv[1], sys.argv[2], int(sys.argv[3])
number = 2000 if per == 1 else 200
best = min(timeit.repeat(statement, setup, number=number, repeat=5))
print(json.dumps(best / number / per * 1e6))
"""


def time_step(checkout: Path, step: tuple) -> float | None:
    _, setup, statement, *per = step
    python = checkout / ".venv/bin/python"
    done = subprocess.run(
        [str(python), "-c", _TIMER, setup, statement, str(per[0] if per else 1)],
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout (with its .venv)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="the steps whose name holds one of these")
    args = parser.parse_args()
    steps = [step for step in STEPS if not args.only or any(text in step[0] for text in args.only)]
    checkouts = {"this": ROOT, "baseline": args.baseline.resolve()}
    times: dict[str, dict[str, list[float]]] = {step[0]: {"this": [], "baseline": []} for step in steps}
    for _ in range(args.rounds):
        for step in steps:
            for name, checkout in checkouts.items():
                value = time_step(checkout, step)
                if value is not None:
                    times[step[0]][name].append(value)
    rows = {}
    print("| step | this checkout µs | baseline µs | ratio |\n|---|---|---|---|")
    for step, by in times.items():
        this = statistics.median(by["this"]) if by["this"] else None
        base = statistics.median(by["baseline"]) if by["baseline"] else None
        ratio = this / base if this and base else None
        rows[step] = {"this": this, "baseline": base, "ratio": ratio, "runs": by}
        shown = [f"{v:.2f}" if v is not None else "-" for v in (this, base, ratio)]
        print(f"| {step} | {shown[0]} | {shown[1]} | {shown[2]} |")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
