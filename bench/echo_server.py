"""Baseline A: a trivial grpc.aio ChatCompletionService answering canned messages (the grpc.aio ceiling).

The canned CreateChatCompletionResponse and stream chunks are what the bridge itself would send for each
benchmark request (bench.workload.PROMPTS): at startup they are fetched once from the mock gateway
(`--sample-from`) and converted with `bridge.chat.convert`, so the echo server and the bridge put the same
bytes on the wire. Per call it does no work but finding the reply by the request's prompt (one dict lookup)
and returning (or yielding) those messages.

    python bench/echo_server.py --listen 127.0.0.1:50061 --sample-from http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench import workload
from bridge.chat import convert
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc


def _post(url: str, *, stream: bool, prompt: str) -> bytes:
    request = urllib.request.Request(
        url + "/chat/completions",
        data=workload.http_body(stream=stream, prompt=prompt),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body: bytes = reply.read()
        return body


Canned = tuple[pb.CreateChatCompletionResponse, list[pb.StreamChatCompletionResponse]]


def canned_messages(base_url: str, prompt: str) -> Canned:
    """The bridge's answer to the benchmark request for `prompt`, built from one real mock reply of each
    kind."""
    response = convert.response_from_upstream(json.loads(_post(base_url, stream=False, prompt=prompt)))
    chunks: list[dict[str, Any]] = []
    for line in _post(base_url, stream=True, prompt=prompt).decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line.removeprefix("data: ")))
    return response, [convert.chunk_from_upstream(chunk) for chunk in chunks]


class EchoService(pb_grpc.ChatCompletionServiceServicer):
    def __init__(self, replies: dict[str, Canned]) -> None:
        self._replies = replies  # by the request's (first message's) prompt

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Any
    ) -> pb.CreateChatCompletionResponse:
        return self._replies[request.messages[0].content.string_value][0]

    async def StreamChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Any
    ) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        for chunk in self._replies[request.messages[0].content.string_value][1]:
            yield chunk


async def serve(listen: str, sample_from: str) -> None:
    replies = {prompt: canned_messages(sample_from, prompt) for prompt in workload.PROMPTS}
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ChatCompletionServiceServicer_to_server(EchoService(replies), server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"could not listen on {listen}")
    await server.start()
    for response, chunks in replies.values():
        print(
            f"echo server on {listen}: unary {response.ByteSize()} bytes, "
            f"stream {len(chunks)} chunks of ~{chunks[1].ByteSize()} bytes",
            file=sys.stderr,
            flush=True,
        )
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--sample-from", required=True, help="mock gateway base URL (…/v1)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.sample_from))


if __name__ == "__main__":
    main()
