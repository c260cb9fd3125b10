"""How an upstream chat completion stream ends, and what its events are (no IO of its own).

The rules: `data: [DONE]` ends the stream OK; an error event (bridge.upstream.errors) ends it with that
error; other event types are skipped; every `message` event is a JSON object chunk. A body that ends
without `[DONE]` is accepted only on an event boundary after a choice reported its `finish_reason`
(some providers close without `[DONE]`); otherwise the stream was cut short: UNAVAILABLE.

`Chunks` applies them read by read, in a handler's own loop (no generator between the upstream's read
and the handler: each layer costs per chunk); `chunks` is the same as an async iterator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

import grpc

from bridge import jsoncodec
from bridge.errors import Reason
from bridge.http.client import JSONObject
from bridge.http.failover import Events
from bridge.http.sse import ServerSentEvent
from bridge.upstream.errors import error_from_stream_event

__all__ = ["Chunks", "chunks", "commits"]

log = logging.getLogger(__name__)

_DONE: Final = "[DONE]"
_ERROR: Final = '"error"'


class Chunks:
    """The stream rules over one chat completion event stream, applied a read at a time by the reader's
    own loop (no generator or coroutine of this module between the upstream's read and the reader):

        chunks = Chunks(events)
        while chunks.reading():
            for chunk in chunks.take(await events.read()):
                ...

    Nothing of a read is held here while the next one waits."""

    __slots__ = ("_done", "_failure", "_finished", "_stream")

    def __init__(self, stream: Events) -> None:
        self._stream = stream
        self._finished = False  # a choice reported finish_reason: a close without [DONE] is then acceptable
        self._done = False  # the stream ended as it should
        self._failure: BaseException | None = None  # raised after the chunks its read completed before it

    def reading(self) -> bool:
        """Whether the stream goes on (read it again); False once it ended as it should ([DONE], or a
        finish reason then the body's end); raises what ended it otherwise, after the chunks before it."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._done = True
            raise failure
        return not self._done

    def take(self, events: list[ServerSentEvent] | None) -> list[JSONObject]:
        """The chunks of one read's `events` (None: the body ended, which raises if it ended too early),
        up to `[DONE]`; an error event or a chunk not understood is raised, or by the next `reading()`
        when chunks of the same read came before it."""
        stream = self._stream
        if events is None:
            self._done = True
            _check_end(stream, self._finished)
            return []
        out: list[JSONObject] = []
        finished = self._finished
        loads = jsoncodec.loads
        try:
            for event in events:
                data = event.data
                if data == _DONE:
                    self._done = True
                    break
                if event.event == "message" and _ERROR not in data:  # almost every event: no error
                    try:  # _parse, in line
                        chunk = loads(data)
                    except (ValueError, RecursionError):
                        raise _not_json(stream) from None
                    if type(chunk) is not dict:
                        raise _not_an_object(stream)
                else:  # an error (raised), another event type (skipped), or a chunk naming "error"
                    other = _chunk(stream, event)
                    if other is None:
                        continue
                    chunk = other
                if not finished:  # a choice with a finish reason, looked for in each chunk until one is found
                    choices = chunk.get("choices")
                    if type(choices) is list:
                        for choice in choices:
                            if type(choice) is dict and choice.get("finish_reason"):
                                finished = self._finished = True
                                break
                out.append(chunk)
        except Exception as error:  # an error event or a chunk not understood: the chunks before it first
            if not out:
                raise
            self._failure = error
        return out


async def chunks(stream: Events) -> AsyncIterator[JSONObject]:
    """The chunk objects of a chat completion event stream, in order, until it ends as it should."""
    reader = Chunks(stream)
    while reader.reading():
        read = reader.take(await stream.read())
        read.reverse()
        while read:  # popped: nothing of a read is held while the next one waits (an idle stream)
            yield read.pop()


def _chunk(stream: Events, event: ServerSentEvent) -> JSONObject | None:
    error = error_from_stream_event(
        event.data, event=event.event, host=stream.host, correlation_id=stream.correlation_id
    )
    if error is not None:
        raise error
    if event.event != "message":
        log.debug("skipping SSE event of type %r", event.event)
        return None
    return _parse(stream, event.data)


def _parse(stream: Events, data: str) -> JSONObject:
    try:
        chunk = jsoncodec.loads(data)
    except (ValueError, RecursionError):
        raise _not_json(stream) from None
    if type(chunk) is not dict:
        raise _not_an_object(stream)
    return chunk


def _not_json(stream: Events) -> Exception:
    return stream.protocol_error("stream chunk is not valid JSON", Reason.UPSTREAM_INVALID_RESPONSE)


def _not_an_object(stream: Events) -> Exception:
    return stream.protocol_error("stream chunk is not a JSON object", Reason.UPSTREAM_INVALID_RESPONSE)


def _check_end(stream: Events, finished: bool) -> None:
    if stream.ended_mid_event:
        raise stream.protocol_error(
            "stream ended in the middle of an event",
            Reason.UPSTREAM_STREAM_TRUNCATED,
            grpc.StatusCode.UNAVAILABLE,
        )
    if not finished:
        raise stream.protocol_error(
            "stream ended without [DONE] or a finish_reason",
            Reason.UPSTREAM_STREAM_INCOMPLETE,
            grpc.StatusCode.UNAVAILABLE,
        )


_GENERATED: Final = ("content", "tool_calls", "function_call", "reasoning_content", "refusal")


def commits(event: ServerSentEvent) -> bool:
    """Whether `event` is the stream's commit point (bridge.http.failover): the first event that may
    reach the caller, after which the call never moves to another upstream. A chunk carrying content, a
    tool call or a finish reason, an error, `[DONE]`, anything not understood; not the role-only opening
    chunk, an empty one (Azure's filter results), a keep-alive or an unknown event type. Usage alone does
    not commit (the bridge may have asked for it: bridge.chat.usage); held, it reaches the caller at the
    commit point, or is dropped with its stream on a move."""
    if event.data == _DONE or event.event == "error":
        return True
    if event.event != "message":
        return False
    try:
        chunk = jsoncodec.loads(event.data)
    except (ValueError, RecursionError):
        return True
    if not isinstance(chunk, dict) or "error" in chunk:
        return True
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return True
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason"):
            return True
        delta = choice.get("delta")
        if not isinstance(delta, dict) or any(delta.get(key) for key in _GENERATED):
            return True
    return False
