"""What can fail around an upstream request's awaits (`Failures`: the transport's exceptions and the call's
deadline, and the bridge error for each) and the guard that keeps the deadline and maps them (`Guard`), for
bridge.http.client: one guard per unary attempt, one per stream's open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from bridge import errors
from bridge.http.transports.base import Transport

__all__ = ["Failures", "Guard"]


@dataclass(frozen=True, slots=True)
class Failures:
    """What can fail around an upstream await of one request, and the bridge error for it."""

    transport: Transport
    host: str
    address: str  # host:port
    correlation_id: str | None

    @property
    def caught(self) -> tuple[type[BaseException], ...]:
        # TimeoutError: the call's deadline (Guard raises it as asyncio.timeout_at would).
        return (TimeoutError, *self.transport.caught)

    def error(
        self, exc: BaseException, *, deadline_passed: bool = False, before_reply: bool = False
    ) -> errors.BridgeError:
        """The error for `exc`; `deadline_passed`: the call's deadline ended the await (a transport's own
        timeouts, which some libraries raise as TimeoutError too, are the transport's to map);
        `before_reply`: no reply had begun, so bridge.http.retry may send the request again."""
        if deadline_passed:
            return errors.deadline_exceeded(self.host, self.correlation_id)
        error = self.transport.error_for(exc, address=self.address, correlation_id=self.correlation_id)
        if before_reply and isinstance(error, errors.UpstreamError):
            return error.evolve(before_reply=True)
        return error


class Guard:
    """The call's deadline around upstream awaits (what `asyncio.timeout_at` does: one
    timer cancelling the task, told apart from any other cancel by the task's cancel count), its errors and
    the transport's mapped to bridge errors. A plain context manager (not a generator), without a timer when
    there is no deadline, and what an error needs worked out only when there is one: one is entered per
    unary attempt, one per stream's open."""

    __slots__ = (
        "_before_reply",
        "_cancelling",
        "_expired",
        "_failures",
        "_headers",
        "_task",
        "_timer",
        "_when",
    )

    def __init__(
        self,
        failures: Callable[[Mapping[str, str] | None], Failures],
        deadline: float | None,
        headers: Mapping[str, str] | None,
        before: bool,
    ) -> None:
        self._failures, self._headers, self._before_reply = failures, headers, before
        self._when = deadline
        self._timer: asyncio.Handle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False

    def replied(self, headers: Mapping[str, str]) -> None:
        """A reply has begun (its `headers` give errors its correlation id): no longer before the reply."""
        self._headers, self._before_reply = headers, False

    async def __aenter__(self) -> None:
        if self._when is not None:
            task = self._task = asyncio.current_task()
            if task is None:
                raise RuntimeError("an upstream deadline is kept inside a task")
            self._cancelling = task.cancelling()
            loop = asyncio.get_running_loop()
            if self._when <= loop.time():  # as asyncio.timeout_at: at the next turn of the loop
                self._timer = loop.call_soon(self._expire)
            else:
                self._timer = loop.call_at(self._when, self._expire)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._expired:
            assert self._task is not None
            # As asyncio.timeout: the deadline's cancel, and no other since the scope began.
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                timed_out = TimeoutError()
                timed_out.__cause__ = exc
                raise self._error(self._failures(self._headers), timed_out) from timed_out
        if exc is not None:
            failures = self._failures(self._headers)
            if isinstance(exc, failures.caught):
                raise self._error(failures, exc) from exc

    def _expire(self) -> None:
        assert self._task is not None
        self._task.cancel()
        self._expired = True

    def _error(self, failures: Failures, exc: BaseException) -> errors.BridgeError:
        return failures.error(exc, deadline_passed=self._expired, before_reply=self._before_reply)
