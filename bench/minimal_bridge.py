"""REFERENCE ONLY, not the product: the minimal bridge of issue 22, what this stack costs with nothing added.

One file, the same stack as the bridge (grpc.aio server, aiohttp client, uvloop, orjson) and nothing of
the bridge's own code but its generated messages: the request turned into the upstream JSON by hand, one
POST on a shared `aiohttp.ClientSession`, the reply's `x-correlation-id` returned as initial metadata (the
bridge's contract does that too), the reply built by direct assignment into the proto, and for streams a
bytes split of `data: ...\\n\\n` events. No validation, logging, error mapping, deadline, retry, metrics,
interceptor or SSE edge case: an upstream error ends the call INTERNAL. It serves only what the benchmark
sends (text messages, the echo replies of bench.workload's prompts, the paced scenario).

    python bench/minimal_bridge.py --listen 127.0.0.1:50063 --upstream-url http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import grpc
import orjson
import uvloop

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc


def _body(request: pb.CreateChatCompletionRequest, stream: bool) -> bytes:
    messages = [
        {"role": m.role, "content": m.content_text or m.content.string_value} for m in request.messages
    ]
    return orjson.dumps({"model": request.model, "messages": messages, "stream": stream})


def _fill(reply: Any, doc: dict[str, Any]) -> None:
    reply.id = doc["id"]
    reply.object = doc["object"]
    reply.created = doc["created"]
    reply.model = doc["model"]


class MinimalBridge(pb_grpc.ChatCompletionServiceServicer):
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url
        self._headers = {"content-type": "application/json"}

    async def CreateChatCompletion(self, request: Any, context: Any) -> pb.CreateChatCompletionResponse:
        async with self._session.post(self._url, data=_body(request, False), headers=self._headers) as r:
            raw = await r.read()
            if r.status != 200:
                await context.abort(grpc.StatusCode.INTERNAL, f"upstream {r.status}")
            await context.send_initial_metadata((("x-correlation-id", r.headers["x-correlation-id"]),))
        doc = orjson.loads(raw)
        reply = pb.CreateChatCompletionResponse()
        _fill(reply, doc)
        for c in doc["choices"]:
            choice = reply.choices.add()
            choice.index = c["index"]
            choice.finish_reason = c["finish_reason"] or ""
            choice.message.role = c["message"]["role"]
            choice.message.content = c["message"]["content"]
        usage = doc.get("usage")
        if usage:
            reply.usage.prompt_tokens = usage["prompt_tokens"]
            reply.usage.completion_tokens = usage["completion_tokens"]
            reply.usage.total_tokens = usage["total_tokens"]
        return reply

    async def StreamChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async with self._session.post(self._url, data=_body(request, True), headers=self._headers) as r:
            if r.status != 200:
                await context.abort(grpc.StatusCode.INTERNAL, f"upstream {r.status}")
            await context.send_initial_metadata((("x-correlation-id", r.headers["x-correlation-id"]),))
            buffer = b""
            async for raw in r.content.iter_any():
                buffer += raw
                start = 0
                while (end := buffer.find(b"\n\n", start)) >= 0:
                    data = buffer[start + 6 : end]  # after "data: "
                    start = end + 2
                    if data == b"[DONE]":
                        return
                    yield _chunk(orjson.loads(data))
                buffer = buffer[start:]


def _chunk(doc: dict[str, Any]) -> pb.StreamChatCompletionResponse:
    chunk = pb.StreamChatCompletionResponse()
    _fill(chunk, doc)
    for c in doc["choices"]:
        choice = chunk.choices.add()
        choice.index = c["index"]
        if c.get("finish_reason"):
            choice.finish_reason = c["finish_reason"]
        delta = c["delta"]
        if "role" in delta:
            choice.delta.role = delta["role"]
        if "content" in delta:
            choice.delta.content = delta["content"]
    return chunk


async def serve(listen: str, upstream_url: str) -> None:
    connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector) as session:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        bridge = MinimalBridge(session, upstream_url.rstrip("/") + "/chat/completions")
        pb_grpc.add_ChatCompletionServiceServicer_to_server(bridge, server)
        if server.add_insecure_port(listen) == 0:
            raise OSError(f"could not listen on {listen}")
        await server.start()
        await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--upstream-url", required=True, help="base URL; POSTs go to BASE/chat/completions")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=uvloop.new_event_loop) as run:
        run.run(serve(args.listen, args.upstream_url))


if __name__ == "__main__":
    main()
