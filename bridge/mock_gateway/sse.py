"""SSE framing of the mock's streams, in every style real servers use (CRLF, CR, comments, ...)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from bridge.mock_gateway.bodies import dumps
from bridge.mock_gateway.call import Call, ScriptStoppedError
from bridge.mock_gateway.records import Json


@dataclass(frozen=True, slots=True)
class Style:
    eol: str = "\n"
    bytewise: bool = False
    comments: bool = False
    nospace: bool = False
    multiline: bool = False


PLAIN: Final = Style()
STYLES: Final[dict[str, Style]] = {
    "echo-crlf": Style(eol="\r\n"),
    "echo-cr": Style(eol="\r"),
    "echo-bytewise": Style(bytewise=True),
    "echo-comments": Style(comments=True),
    "echo-nospace": Style(nospace=True),
    "echo-multiline": Style(multiline=True),
}


def frame(style: Style, seq: int, data: str, event: str | None = None) -> bytes:
    """One SSE event as bytes; ``seq`` is the event's position in the stream (0 = first)."""
    if style is PLAIN and event is None:
        return f"data: {data}\n\n".encode()
    eol = style.eol
    lines: list[str] = []
    if style.comments:
        lines.append(("\ufeff" if seq == 0 else "") + ": ping")
        event = event or ("message" if seq % 2 else None)
        if seq == 1:
            lines.append("id: mock-1")
    if event:
        lines.append(f"event: {event}")
    prefix = "data:" if style.nospace else "data: "
    lines.extend(prefix + line for line in data.split("\n"))
    text = eol.join(lines) + eol + eol
    if style.comments and seq == 0:
        text += ": OPENROUTER PROCESSING" + eol + eol
    return text.encode()


class SseStream:
    """A prepared ``text/event-stream`` response written event by event in one style."""

    def __init__(self, call: Call, response: web.StreamResponse, style: Style) -> None:
        self.call = call
        self.response = response
        self.style = style
        self._seq = 0

    @classmethod
    async def open(
        cls, call: Call, style: Style = PLAIN, *, close: bool = False, headers: dict[str, str] | None = None
    ) -> SseStream:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
        )
        if close:
            response.force_close()
        await response.prepare(call.request)
        return cls(call, response, style)

    async def send(self, payload: Json | str, event: str | None = None) -> None:
        if isinstance(payload, str):
            data = payload
        elif self.style.multiline:
            data = json.dumps(payload, indent=1, ensure_ascii=False)
        else:
            data = dumps(payload)
        await self.write(frame(self.style, self._seq, data, event))
        self._seq += 1

    async def send_all(self, payloads: Iterable[Json], *, done: bool = True) -> web.StreamResponse:
        for payload in payloads:
            await self.send(payload)
        if done:
            await self.send("[DONE]")
        return self.response

    async def write(self, data: bytes) -> None:
        try:
            if self.style.bytewise:
                await self._write_bytewise(data)
            else:
                await self.response.write(data)
        except ConnectionError as exc:
            raise ScriptStoppedError("client_disconnected", self.response) from exc

    async def _write_bytewise(self, data: bytes) -> None:
        writer = self.call.request.writer
        for i in range(len(data)):
            await self.response.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)  # let the receiver read this byte on its own


def abort_connection(call: Call) -> None:
    """Close the TCP connection once what was written is flushed, without ending the HTTP body."""
    transport = call.request.transport
    if transport is not None:
        transport.close()
