"""An upstream that answers with exactly the bytes a test gives it: header names and values no HTTP server
library would send (non-ASCII, control bytes), any status code, any body.

`RawUpstream` is a plain asyncio TCP server on loopback. It reads one HTTP/1.1 request (head and
`Content-Length` body), hands it to the test's `answer` function and writes the `RawReply` it returns, then
closes the connection (`Connection: close`: no keep-alive state carries from one example to the next).
`completion_reply` makes the usual answers: a chat completion for a unary request, an event stream for a
streaming one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Header = tuple[bytes, bytes]
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class RawRequest:
    """What the bridge sent: its request line, headers (names lower-cased) and body."""

    line: bytes
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def stream(self) -> bool:
        return bool(self.body) and self.json.get("stream") is True


@dataclass(frozen=True)
class RawReply:
    """A reply, as bytes: status line, headers in order, body. `Content-Length` and `Connection: close`
    are added (framing is not what these tests are about), except for statuses that have no body."""

    status: int = 200
    headers: Sequence[Header] = ()
    body: bytes = b""
    reason: bytes = b"Whatever"

    def encode(self) -> bytes:
        bodiless = self.status in (204, 304) or 100 <= self.status < 200
        head = [b"HTTP/1.1 %d %s" % (self.status, self.reason)]
        head += [name + b": " + value for name, value in self.headers]
        if not bodiless:
            head.append(b"Content-Length: %d" % len(self.body))
        head.append(b"Connection: close")
        return b"\r\n".join(head) + b"\r\n\r\n" + (b"" if bodiless else self.body)


Answer = Callable[[RawRequest], RawReply]
COMPLETION_TEXT = "raw answer"


def completion_reply(request: RawRequest, headers: Sequence[Header] = (), status: int = 200) -> RawReply:
    """A chat completion saying `COMPLETION_TEXT`: a JSON document, or an event stream when asked."""
    if not request.stream:
        document = {
            "id": "chatcmpl-raw",
            "object": "chat.completion",
            "created": 1,
            "model": "raw",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": COMPLETION_TEXT},
                    "finish_reason": "stop",
                }
            ],
        }
        body = json.dumps(document).encode()
        content_type = b"application/json"
    else:
        chunks = [
            {"role": "assistant", "content": ""},
            {"content": COMPLETION_TEXT},
        ]
        events = [_chunk(delta, None) for delta in chunks] + [_chunk({}, "stop")]
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        content_type = b"text/event-stream"
    return RawReply(status, [(b"Content-Type", content_type), *headers], body)


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "raw",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@dataclass
class RawUpstream:
    """The server. `answer` decides each reply; `requests` keeps what was received."""

    answer: Answer = field(default=completion_reply, repr=False)
    requests: list[RawRequest] = field(default_factory=list, repr=False)
    port: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' printer shows every field
        printer.text(repr(self))

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> RawUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            self.requests.append(request)
            writer.write(self.answer(request).encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # a connection opened and closed (a pool's probe): nothing to answer
    line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for raw in lines:
        name, _, value = raw.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return RawRequest(line, headers, body)


@contextlib.contextmanager
def raw_upstream_thread(answer: Answer) -> Iterator[RawUpstream]:
    """A RawUpstream on an event loop of its own, in a thread: for sync tests (hypothesis) whose bridge runs
    as a process. `answer` is read on each request, so a test may swap `upstream.answer` between calls."""
    loop = asyncio.new_event_loop()
    upstream = RawUpstream(answer)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(upstream.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(upstream.close())
        loop.close()

    thread = threading.Thread(target=run, name="raw-upstream", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield upstream
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
