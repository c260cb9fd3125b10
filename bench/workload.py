"""The one request every benchmark sends, in each form a load generator needs, and small shared helpers.

The request is an `echo` chat completion whose user message has 20 words, so the mock gateway answers a
unary call with those 20 words and a stream with 22 chunks (role chunk, one chunk per word, the finish
chunk). Every target (echo server, mock gateway, bridges) sees exactly this request.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Final

SERVICE: Final = "prisme.llmgateway.v1.ChatCompletionService"
UNARY_METHOD: Final = f"/{SERVICE}/CreateChatCompletion"
STREAM_METHOD: Final = f"/{SERVICE}/StreamChatCompletion"

PROMPT: Final = (
    "Benchmarks measure what the bridge really costs: twenty plain words travel through gRPC, "
    "JSON, HTTP, SSE and then back again"
)
assert len(PROMPT.split()) == 20, len(PROMPT.split())
STREAM_CHUNKS: Final = len(PROMPT.split()) + 2  # role chunk + one per word + finish chunk


def request_json() -> dict[str, Any]:
    """The request as JSON: ProtoJSON for ghz and, with `stream` added, the upstream HTTP body."""
    return {"model": "echo", "messages": [{"role": "user", "content": PROMPT}]}


def http_body(*, stream: bool) -> bytes:
    """The upstream HTTP body the bridge sends for this request (compact JSON, like the bridge)."""
    return json.dumps({**request_json(), "stream": stream}, separators=(",", ":")).encode()


def request_proto() -> Any:
    """The request as a CreateChatCompletionRequest message."""
    from google.protobuf import json_format

    from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb

    return json_format.ParseDict(request_json(), pb.CreateChatCompletionRequest())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it shortly after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
