"""The event loop a bridge process runs on (`--event-loop`): uvloop (libuv) or the standard library's.

`run` is `asyncio.run` with the chosen loop. grpc.aio runs on any asyncio loop: it polls its completion
queue from its own thread and hands results to the loop with thread-safe calls, which uvloop implements
(docs/PERFORMANCE.md: the whole test suite runs on both loops).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, TypeVar

__all__ = ["DEFAULT_EVENT_LOOP", "EventLoopName", "run"]

EventLoopName = Literal["uvloop", "asyncio"]
DEFAULT_EVENT_LOOP: Final[EventLoopName] = "uvloop"
_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T], loop: EventLoopName = DEFAULT_EVENT_LOOP) -> _T:
    """Runs `main` to completion on a new event loop of the kind `loop` names, as asyncio.run does."""
    with asyncio.Runner(loop_factory=_factory(loop)) as runner:
        return runner.run(main)


def _factory(loop: EventLoopName) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None  # asyncio's default
