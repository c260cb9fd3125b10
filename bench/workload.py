"""The requests the benchmarks send, in each form a load generator needs, and small shared helpers.

A request is an `echo` chat completion whose user message has N words, so the mock gateway answers a unary
call with those words and a stream with N + 2 chunks (role chunk, one chunk per word, the finish chunk).
`PROMPT` (20 words: a 22-chunk stream) is the unary request; `LONG_PROMPT` (62 words: a 64-chunk stream,
the issue-12 goal's stream) is the stream request of bench/run.py. Every target (echo server, mock gateway,
bridges) sees exactly these requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

SERVICE: Final = "prisme.llmgateway.v1.ChatCompletionService"
UNARY_METHOD: Final = f"/{SERVICE}/CreateChatCompletion"
STREAM_METHOD: Final = f"/{SERVICE}/StreamChatCompletion"

_ROOT: Final = Path(__file__).resolve().parent.parent  # where `python -m bridge.cli` runs from

PROMPT: Final = (
    "Benchmarks measure what the bridge really costs: twenty plain words travel through gRPC, "
    "JSON, HTTP, SSE and then back again"
)
assert len(PROMPT.split()) == 20, len(PROMPT.split())
STREAM_CHUNKS: Final = len(PROMPT.split()) + 2  # role chunk + one per word + finish chunk
LONG_PROMPT: Final = f"{PROMPT}, once, {PROMPT}, twice, {PROMPT}"
assert len(LONG_PROMPT.split()) == 62, len(LONG_PROMPT.split())
PROMPTS: Final = (PROMPT, LONG_PROMPT)
# Issue 22's paced scenario: the mock's `paced-<ms>` model sends each event after that pause, so a reader
# gets one token per read, as LLM streams arrive. 18 words: 20 chunks, 100 ms apart.
PACED_MODEL: Final = "paced-100"
PACED_PROMPT: Final = " ".join(PROMPT.split()[:18])


def chunks_of(prompt: str) -> int:
    """How many messages the stream answering `prompt` carries."""
    return len(prompt.split()) + 2


def request_json(prompt: str = PROMPT, model: str = "echo") -> dict[str, Any]:
    """The request as JSON: ProtoJSON for ghz and, with `stream` added, the upstream HTTP body."""
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


def http_body(*, stream: bool, prompt: str = PROMPT) -> bytes:
    """The upstream HTTP body the bridge sends for this request (compact JSON, like the bridge)."""
    return json.dumps({**request_json(prompt), "stream": stream}, separators=(",", ":")).encode()


def request_proto(prompt: str = PROMPT, model: str = "echo") -> Any:
    """The request as a CreateChatCompletionRequest message."""
    from google.protobuf import json_format

    from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb

    return json_format.ParseDict(request_json(prompt, model), pb.CreateChatCompletionRequest())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it shortly after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def bridge_on_mock(settings: dict[str, Any]) -> AsyncIterator[str]:
    """The mock gateway in a process of its own (so its work is not the bridge's) and the bridge in this
    one (`bridge.app.build_bridge`, what `prisme-bridge serve` runs) in front of it, with `settings` (flat
    names) over listen and upstream_url; yields the bridge's address once both serve."""
    from bridge.app import build_bridge
    from bridge.settings import ServeSettings

    mock_port = free_port()
    mock = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "mock-gateway", "--listen", f"127.0.0.1:{mock_port}",
        "--log-level", "WARNING", cwd=_ROOT,
    )  # fmt: skip
    try:
        await _accepting(mock_port)
        values = {"listen": "127.0.0.1:0", "upstream_url": f"http://127.0.0.1:{mock_port}/v1", **settings}
        bridge = await build_bridge(ServeSettings.model_validate(values))
        await bridge.start()
        try:
            yield f"127.0.0.1:{bridge.port}"
        finally:
            await bridge.stop(0)
    finally:
        mock.terminate()
        await mock.wait()


async def _accepting(port: int, within: float = 20.0) -> None:
    """Returns once 127.0.0.1:`port` accepts connections; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
