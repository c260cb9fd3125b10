"""How an upstream chat completion stream ends, and what its events are (no IO of its own).

The rules: `data: [DONE]` ends the stream OK; an error event (bridge.upstream.errors) ends it with that
error; other event types are skipped; every `message` event is a JSON object chunk. A body that ends
without `[DONE]` is accepted only on an event boundary after a choice reported its `finish_reason`
(some providers close without `[DONE]`); otherwise the stream was cut short: UNAVAILABLE.

`Chunks` applies them read by read, for a handler's own loop (no generator between the upstream's read
and the handler: each layer costs per chunk); `chunks` is the same as an async iterator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from time import perf_counter
from typing import Final

import grpc

from bridge import jsoncodec
from bridge.errors import Reason
from bridge.http.client import JSONObject
from bridge.http.failover import Events
from bridge.http.sse import ServerSentEvent
from bridge.rpc.call import RpcCall, this_call
from bridge.upstream.errors import error_from_stream_event

__all__ = ["Chunks", "chunks", "commits"]

log = logging.getLogger(__name__)

_DONE: Final = "[DONE]"
_ERROR: Final = '"error"'


class Chunks:
    """The chunk objects of one chat completion event stream, read by read (`read`), until it ends as it
    should. Nothing of a read is held here while the next one waits."""

    __slots__ = ("_done", "_failure", "_finished", "_served", "_stream")

    def __init__(self, stream: Events, served: RpcCall | None = None) -> None:
        self._stream = stream
        self._served = served or this_call()  # told how long each read waited (its overhead is the rest)
        self._finished = False  # a choice reported finish_reason: a close without [DONE] is then acceptable
        self._done = False  # [DONE] read
        self._failure: BaseException | None = None  # an error event, raised after the chunks before it

    async def read(self) -> list[JSONObject] | None:
        """The chunks of the next read of the body (often one, possibly none); None once the stream ended
        as it should ([DONE], or a finish reason then the body's end); raises how it ended otherwise."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._done = True
            raise failure
        if self._done:
            return None
        stream = self._stream
        started = perf_counter()
        events = await stream.read()
        self._served.waited_on_upstream(perf_counter() - started)
        if events is None:
            self._done = True
            _check_end(stream, self._finished)
            return None
        out: list[JSONObject] = []
        try:
            for event in events:
                data = event.data
                if data == _DONE:
                    self._done = True
                    break
                if event.event == "message" and _ERROR not in data:  # almost every event: no error
                    chunk = _parse(stream, data)
                else:  # an error (raised), another event type (skipped), or a chunk naming "error"
                    other = _chunk(stream, event)
                    if other is None:
                        continue
                    chunk = other
                if not self._finished:
                    self._finished = _has_finish_reason(chunk)
                out.append(chunk)
        except Exception as error:  # an error event or a chunk not understood: the chunks before it first
            if not out:
                raise
            self._failure = error
        return out


async def chunks(stream: Events) -> AsyncIterator[JSONObject]:
    """The chunk objects of a chat completion event stream, in order, until it ends as it should."""
    reader = Chunks(stream)
    while (read := await reader.read()) is not None:
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
        raise stream.protocol_error(
            "stream chunk is not valid JSON", Reason.UPSTREAM_INVALID_RESPONSE
        ) from None
    if type(chunk) is not dict:
        raise stream.protocol_error("stream chunk is not a JSON object", Reason.UPSTREAM_INVALID_RESPONSE)
    return chunk


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


def _has_finish_reason(chunk: JSONObject) -> bool:
    choices = chunk.get("choices")
    if type(choices) is list:
        for choice in choices:
            if type(choice) is dict and choice.get("finish_reason"):
                return True
    return False


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
