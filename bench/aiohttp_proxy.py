"""REFERENCE ONLY, not the product: a minimal grpc.aio bridge calling the upstream with aiohttp directly.

It answers "what would a minimal bridge on the same stack give?" with the same per-call work as the
bridge's happy path: `validate_request`, `convert.request_to_upstream`, the same headers, compact JSON
(bridge.jsoncodec: orjson), one POST, the same JSON parse, `convert.response_from_upstream` /
`chunk_from_upstream`, the reply headers as initial metadata, and for streams the bridge's own `SSEDecoder`
plus its per-chunk error check. What it leaves out: the upstream client's layers (the deadline guard around
each upstream await, exception mapping, retries, trace context) and the interceptor chain (metrics,
tracing, access log). Errors just end the call INTERNAL. The event loop is uvloop unless
--event-loop asyncio, as the bridge's. With --no-metadata it does not return the reply headers as initial
metadata (the contract does): what that separate gRPC batch costs per call.

    python bench/aiohttp_proxy.py --listen 127.0.0.1:50062 --upstream-url http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import grpc

from bridge import eventloop, jsoncodec
from bridge.auth.callers import ANONYMOUS_CALLER
from bridge.chat import convert
from bridge.chat.validation import validate_request
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.http.sse import SSEDecoder
from bridge.upstream import errors
from bridge.upstream.headers import AuthPolicy, response_metadata, upstream_headers

_DONE = "[DONE]"


class AiohttpProxy(pb_grpc.ChatCompletionServiceServicer):
    def __init__(self, session: aiohttp.ClientSession, url: str, *, metadata: bool = True) -> None:
        self._session = session
        self._url = url
        self._auth = AuthPolicy()
        self._metadata = metadata

    def _prepare(self, request: pb.CreateChatCompletionRequest, context: Any, *, stream: bool) -> tuple:
        if validate_request(request, streaming=stream):
            raise ValueError("invalid request")
        body = convert.request_to_upstream(request, stream=stream)
        headers = upstream_headers(context.invocation_metadata() or (), self._auth, ANONYMOUS_CALLER)
        headers["content-type"] = "application/json"
        data = jsoncodec.dumps(body)
        return data, headers

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Any
    ) -> pb.CreateChatCompletionResponse:
        data, headers = self._prepare(request, context, stream=False)
        async with self._session.post(self._url, data=data, headers=headers) as reply:
            raw = await reply.read()
            if reply.status != 200:
                await context.abort(grpc.StatusCode.INTERNAL, f"upstream {reply.status}")
            if self._metadata:
                await context.send_initial_metadata(response_metadata(reply.headers))
        return convert.response_from_upstream(jsoncodec.loads(raw))

    async def StreamChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Any
    ) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        data, headers = self._prepare(request, context, stream=True)
        async with self._session.post(self._url, data=data, headers=headers) as reply:
            if reply.status != 200:
                await context.abort(grpc.StatusCode.INTERNAL, f"upstream {reply.status}")
            if self._metadata:
                await context.send_initial_metadata(response_metadata(reply.headers))
            decoder = SSEDecoder()
            async for raw in reply.content.iter_any():
                for event in decoder.feed(raw):
                    if event.data == _DONE:
                        return
                    error = errors.error_from_stream_event(
                        event.data, event=event.event, host="upstream", correlation_id=None
                    )
                    if error is not None:
                        await context.abort(error.code, str(error))
                    yield convert.chunk_from_upstream(jsoncodec.loads(event.data))


async def serve(listen: str, upstream_url: str, *, metadata: bool = True) -> None:
    connector = aiohttp.TCPConnector(limit=1024, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        proxy = AiohttpProxy(session, upstream_url.rstrip("/") + "/chat/completions", metadata=metadata)
        pb_grpc.add_ChatCompletionServiceServicer_to_server(proxy, server)
        if server.add_insecure_port(listen) == 0:
            raise OSError(f"could not listen on {listen}")
        await server.start()
        await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--upstream-url", required=True, help="base URL; POSTs go to BASE/chat/completions")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--no-metadata", action="store_true", help="do not return reply headers as initial metadata"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(serve(args.listen, args.upstream_url, metadata=not args.no_metadata), args.event_loop)


if __name__ == "__main__":
    main()
