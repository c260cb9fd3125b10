"""Incremental, IO-free Server-Sent Events decoder working on bytes.

Implements the WHATWG HTML "interpreting an event stream" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html):

- lines end with CRLF, LF or CR, even when a CRLF is split across two chunks;
- one UTF-8 BOM is stripped at the very start of the stream only;
- lines starting with ``:`` are comments (keep-alives such as ``: OPENROUTER PROCESSING``);
- ``field:value`` with exactly one leading space removed from the value; a line without a
  colon is a field with an empty value; unknown fields are ignored;
- ``data`` lines are joined with ``"\\n"``; a blank line dispatches; an event without any
  ``data`` line is never dispatched (unlike older openai-python and httpx-sse);
- an unfinished event at end of stream is dropped, but :meth:`SSEDecoder.finish` reports it
  so the caller can treat a stream that ends mid-event as an error.

Lines are split on the bytes CR and LF only and decoded as UTF-8 one complete line at a
time, so multi-byte characters may straddle chunks and U+2028, U+2029 or U+0085 inside
JSON payloads are not line breaks. Invalid UTF-8 is replaced with U+FFFD, never raised.

The OpenAI ``data: [DONE]`` sentinel is not special here: it is dispatched as ordinary data
and handled by the stream layer.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "SSEError", "SSEEventTooLarge", "ServerSentEvent"]

DEFAULT_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024

_BOM: Final = b"\xef\xbb\xbf"
# CRLF must be tried before a lone CR so that it counts as one line end.
_LINE_END: Final = re.compile(rb"\r\n?|\n")
# A byte looked for in a chunk as an int: `b"\r" in chunk` first tries its operand as an int, and the
# TypeError it makes and clears costs ten times the search (CPython 3.11).
_CR: Final = 0x0D
_LF: Final = 0x0A


class SSEError(Exception):
    """Base class for errors raised while decoding an event stream."""


class SSEEventTooLarge(SSEError):  # noqa: N818 - public name agreed for the stream layer
    """A line or an event's data grew past ``max_event_bytes``. ``events``: those the same chunk completed
    before it (nothing received is lost: the caller delivers them, then fails)."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"SSE {what} exceeds max_event_bytes={limit}")
        self.limit = limit
        self.events: list[ServerSentEvent] = []


class ServerSentEvent(NamedTuple):
    """One dispatched event (a named tuple: one is made per event, and a tuple is the cheapest to make)."""

    data: str
    event: str = "message"
    id: str | None = None
    """Last event id in effect when dispatched (sticky across events, per spec)."""
    retry: int | None = None
    """Reconnection time in ms from a ``retry`` field of this event, if any."""


class SSEDecoder:
    """Turns byte chunks into :class:`ServerSentEvent` objects.

    Call :meth:`feed` with each chunk as it arrives, then :meth:`finish` at end of stream.
    Work is linear in the input size whatever the chunking. After :class:`SSEEventTooLarge`
    the decoder state is unspecified: abandon the stream.
    """

    __slots__ = (
        "_after_cr",
        "_buf",
        "_data",
        "_data_bytes",
        "_event_type",
        "_id_buffer",
        "_last_event_id",
        "_max",
        "_retry",
        "_stream_start",
    )
    _after_cr: bool
    _buf: bytearray
    _data: list[str]
    _data_bytes: int
    _event_type: str
    _id_buffer: str | None
    _last_event_id: str | None
    _max: int
    _retry: int | None
    _stream_start: bool

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be positive")
        self._max = max_event_bytes
        self._last_event_id = None
        self._id_buffer = None
        self._reset_stream()

    @property
    def last_event_id(self) -> str | None:
        """Id committed at the latest blank line, dispatched or not (``Last-Event-ID`` to resume with)."""
        return self._last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk and return the events it completed, in order.

        The fast path (in line here: one frame per read), for a decoder between events (at most a partial
        line buffered) given a chunk without CR: each leading `data: ...` event of one line (what
        OpenAI-compatible servers send) is cut out with one `find` and dispatched as the full rules would;
        the rest of the chunk from the first other line (a comment, another field, several data lines, a
        BOM, an unfinished event) goes to the full decoder (`_feed`)."""
        if not chunk:
            return []
        if self._data or self._after_cr or self._event_type or self._retry is not None or _CR in chunk:
            return self._feed(chunk)
        buf = self._buf
        if buf:
            if _LF not in chunk:
                return self._feed(chunk)  # the line goes on: appended (copying it here would be quadratic)
            chunk = bytes(buf) + chunk  # a partial line: no CR or LF, and nothing of its event processed
            buf.clear()
        if self._stream_start:
            if chunk.startswith(_BOM[: len(chunk)]):  # a BOM, or what may be the start of one
                return self._feed(chunk)
            self._stream_start = False  # the first line does not start with a BOM
        events: list[ServerSentEvent] = []
        start = 0
        limit = self._max
        last_id = self._id_buffer
        event = tuple.__new__  # ServerSentEvent's own `__new__` is a Python function: twice the cost
        # An event of one data line: its line's LF found with one `find`, the next byte the blank line's.
        while chunk.startswith(b"data: ", start):
            end = chunk.find(b"\n", start)
            if end < 0 or chunk[end + 1 : end + 2] != b"\n" or end - start > limit:
                break
            data = chunk[start + 6 : end].decode("utf-8", "replace")  # _decode, in line
            events.append(event(ServerSentEvent, (data, "message", last_id, None)))
            start = end + 2
        if events:  # committed at the blank line, as _dispatch does; a data-only event changes no other state
            self._last_event_id = last_id
        if start < len(chunk):
            try:
                events += self._feed(chunk[start:] if start else chunk)
            except SSEEventTooLarge as exc:
                exc.events[:0] = events  # those completed before it come first
                raise
        return events

    def _feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """`feed` by the full rules, line by line."""
        if self._after_cr:
            # A CR ended the previous chunk's last line; its LF half must not start a new one.
            self._after_cr = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        buf = self._buf
        scan_from = len(buf)  # the buffered partial line holds no CR or LF
        buf += chunk
        if _LF not in chunk and _CR not in chunk:
            self._check_line(len(buf))
            return []
        events: list[ServerSentEvent] = []
        start = 0
        try:
            for match in _LINE_END.finditer(buf, scan_from):
                event = self._process_line(buf[start : match.start()])
                if event is not None:
                    events.append(event)
                start = match.end()
            self._after_cr = buf.endswith(b"\r")
            del buf[:start]
            self._check_line(len(buf))
        except SSEEventTooLarge as exc:
            exc.events = events
            raise
        return events

    def finish(self) -> bool:
        """End the stream; return True if it ended on an event boundary.

        False means a partial line or undispatched ``data`` was pending; that unfinished
        event is discarded, as the spec requires. Fields without data (``event:``, ``id:``)
        pending at EOF do not count: such an event would never be dispatched anyway. A
        trailing lone CR already ended its line. The decoder is then ready for a new stream
        (e.g. a reconnection) and keeps :attr:`last_event_id`.
        """
        pending = bytes(self._buf)
        if self._stream_start:
            pending = pending.removeprefix(_BOM)
        clean = not pending and not self._data
        self._id_buffer = self._last_event_id
        self._reset_stream()
        return clean

    def _reset_stream(self) -> None:
        self._buf = bytearray()
        self._after_cr = False
        self._stream_start = True
        self._reset_event()

    def _reset_event(self) -> None:
        # The id buffer is deliberately not reset: the last event id is sticky per spec.
        self._data = []
        self._data_bytes = 0
        self._event_type = ""
        self._retry = None

    def _check_line(self, size: int) -> None:
        if size > self._max:
            raise SSEEventTooLarge("line", self._max)

    def _process_line(self, line: bytearray) -> ServerSentEvent | None:
        self._check_line(len(line))
        if self._stream_start:
            # BOM holds no CR/LF, so stripping it from the first line equals stripping it
            # from the stream; later BOMs are ordinary characters.
            self._stream_start = False
            if line.startswith(_BOM):
                del line[:3]
        if not line:
            return self._dispatch()
        if line[0] == 0x3A:  # ":" comment
            return None
        # ":" is ASCII and never inside a multi-byte sequence, so splitting before decoding
        # is the same as splitting the decoded line.
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            del value[:1]
        self._apply_field(bytes(name), value)
        return None

    def _apply_field(self, name: bytes, value: bytearray) -> None:
        if name == b"data":
            self._data_bytes += len(value) + (1 if self._data else 0)
            if self._data_bytes > self._max:
                raise SSEEventTooLarge("event data", self._max)
            self._data.append(_decode(value))
        elif name == b"event":
            self._event_type = _decode(value)
        elif name == b"id":
            if b"\x00" not in value:
                self._id_buffer = _decode(value)
        elif name == b"retry" and value.isdigit():  # bytes.isdigit() is ASCII-only
            self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        # The last event id is committed even when nothing is dispatched.
        self._last_event_id = self._id_buffer
        if not self._data:
            self._reset_event()
            return None
        event = ServerSentEvent(
            data="\n".join(self._data),
            event=self._event_type or "message",
            id=self._last_event_id,
            retry=self._retry,
        )
        self._reset_event()
        return event


def _decode(raw: bytes | bytearray) -> str:
    return raw.decode("utf-8", errors="replace")
