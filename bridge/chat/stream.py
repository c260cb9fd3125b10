"""How an upstream chat completion stream ends, and what its events are (no IO of its own).

The rules: `data: [DONE]` ends the stream OK; an error event (bridge.upstream.errors) ends it with that
error; other event types are skipped; every `message` event is a JSON object chunk. A body that ends
without `[DONE]` is accepted only on an event boundary after a choice reported its `finish_reason`
(some providers close without `[DONE]`); otherwise the stream was cut short: UNAVAILABLE.
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
from bridge.rpc.call import this_call
from bridge.upstream.errors import error_from_stream_event

__all__ = ["chunks", "commits"]

log = logging.getLogger(__name__)

_DONE: Final = "[DONE]"


async def chunks(stream: Events) -> AsyncIterator[JSONObject]:
    """The chunk objects of a chat completion event stream, in order, until it ends as it should."""
    finished = False  # a choice reported finish_reason: a close without [DONE] is then acceptable
    event: ServerSentEvent | None = None
    chunk: JSONObject | None = None
    served = this_call()
    batches = stream.batches()
    while True:
        started = perf_counter()
        events = await anext(batches, None)
        served.waited_on_upstream(perf_counter() - started)  # the bridge's overhead is the rest
        if events is None:
            break
        for event in events:
            if event.data == _DONE:
                return
            chunk = _chunk(stream, event)
            if chunk is not None:
                finished = finished or _has_finish_reason(chunk)
                yield chunk
        # Nothing of a read is held while the next one waits (an idle stream).
        del events
        event = chunk = None
    _check_end(stream, finished)


def _chunk(stream: Events, event: ServerSentEvent) -> JSONObject | None:
    error = error_from_stream_event(
        event.data, event=event.event, host=stream.host, correlation_id=stream.correlation_id
    )
    if error is not None:
        raise error
    if event.event != "message":
        log.debug("skipping SSE event of type %r", event.event)
        return None
    try:
        chunk = jsoncodec.loads(event.data)
    except (ValueError, RecursionError):
        raise stream.protocol_error(
            "stream chunk is not valid JSON", Reason.UPSTREAM_INVALID_RESPONSE
        ) from None
    if not isinstance(chunk, dict):
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
    if not isinstance(choices, list):
        return False
    return any(isinstance(choice, dict) and choice.get("finish_reason") for choice in choices)


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
