"""Retries of upstream requests the upstream cannot have answered: the policy (pure) and the loop that
applies it around one attempt of a request.

A failed attempt is retried only when no answer can have begun, so nothing is generated (or billed) twice:

- the connection could not be made (`UPSTREAM_UNREACHABLE`: refused, DNS, connect timeout): nothing was sent;
- the connection failed before the reply's status line (`UPSTREAM_CONNECTION_LOST` before a reply: a
  pooled keep-alive connection the upstream had just closed, a proxy dropping it);
- the upstream refused it: 502 or 503 (not processed), or 429 rate limited (not a spent quota), after at
  least the wait its `Retry-After` asked for.

Never once a reply began (a 2xx whose body failed, any other status, an error document), never after a
timeout (the upstream may still be generating), and a stream only with `streams` (before its first event:
`open_sse` fails before anything is yielded). Each retry waits a random time up to the backoff, which
doubles per retry ("full jitter": a burst of failures does not come back in step) and is at least the
upstream's Retry-After; a Retry-After longer than `max_backoff` is not waited for (the caller gets it as
RetryInfo and decides). A retry is made only if its wait ends before the call's deadline with time left for
an attempt: at least as long as the failed one took, and `MIN_ATTEMPT_S`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from bridge.errors import Reason, UpstreamError

__all__ = ["DEFAULT_RETRIES", "MIN_ATTEMPT_S", "NO_RETRIES", "RetryPolicy", "retryable"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRIES: Final = 2
DEFAULT_BACKOFF_S: Final = 0.2
DEFAULT_MAX_BACKOFF_S: Final = 2.0
# The least time an attempt is given: a retry that would leave less before the deadline is not made.
MIN_ATTEMPT_S: Final = 0.1
_REFUSED_STATUSES: Final = frozenset({502, 503})
_RATE_LIMITED: Final = 429
_BEFORE_REPLY_REASONS: Final = frozenset({Reason.UPSTREAM_UNREACHABLE, Reason.UPSTREAM_CONNECTION_LOST})


def retryable(error: BaseException) -> bool:
    """Whether `error` ended an attempt the upstream cannot have answered (see the module docstring)."""
    if not isinstance(error, UpstreamError):
        return False
    if error.http_status is not None:
        if error.http_status == _RATE_LIMITED:
            return error.reason == Reason.UPSTREAM_RATE_LIMITED  # a spent quota does not come back soon
        return error.http_status in _REFUSED_STATUSES
    return error.before_reply and error.reason in _BEFORE_REPLY_REASONS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times, and how long apart, a request that failed retryably is sent again."""

    retries: int = DEFAULT_RETRIES  # after the first attempt; 0: never retry
    backoff: float = DEFAULT_BACKOFF_S  # seconds: the first retry waits up to this, each next up to twice
    max_backoff: float = DEFAULT_MAX_BACKOFF_S  # the longest wait, seconds
    streams: bool = False  # also retry a stream that failed before it began

    def delay(self, error: BaseException, retry: int, rand: float) -> float | None:
        """Seconds to wait before retry number `retry` (1 = the first) after `error`, `rand` in [0, 1);
        None if it is not to be retried at all."""
        if retry > self.retries or not retryable(error):
            return None
        asked = error.retry_after if isinstance(error, UpstreamError) else None
        if asked is not None and asked > self.max_backoff:
            return None  # the upstream wants more patience than the bridge holds a call for
        jittered = rand * min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return max(asked or 0.0, jittered)

    def next_delay(
        self, error: BaseException, retry: int, rand: float, *, remaining: float | None, took: float
    ) -> float | None:
        """`delay`, if the call's deadline leaves time for it and another attempt (`remaining` seconds
        until the deadline, None without one; `took`: how long the failed attempt lasted)."""
        wait = self.delay(error, retry, rand)
        if wait is None or remaining is None:
            return wait
        return wait if remaining - wait >= max(MIN_ATTEMPT_S, took) else None

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        deadline: float | None,
        streaming: bool = False,
        on_attempt: Callable[[int], None] | None = None,
    ) -> T:
        """The result of `attempt()`, called again after each retryable failure while the policy allows;
        otherwise its last error, as a copy whose message says how many attempts were made. `deadline`: the
        call's, as an event-loop time; `on_attempt(n)` is called as attempt n (1, 2, ...) starts."""
        allowed = self if self.streams or not streaming else NO_RETRIES
        if not allowed.retries:
            # One attempt (a stream by default): what the loop makes of a first attempt it does not retry,
            # its error raised as it is, without the loop's clock, draw and handler on the hot path.
            if on_attempt is not None:
                on_attempt(1)
            return await attempt()
        loop = asyncio.get_running_loop()
        number = 1
        while True:
            if on_attempt is not None:
                on_attempt(number)
            started = loop.time()
            try:
                return await attempt()
            except UpstreamError as error:
                now = loop.time()
                remaining = None if deadline is None else deadline - now
                took = now - started
                wait = allowed.next_delay(error, number, random.random(), remaining=remaining, took=took)
                if wait is None:
                    if number > 1:
                        raise error.after_attempts(number) from error
                    raise
                log.debug("upstream attempt %d failed (%s); retrying in %.3f s", number, error.message, wait)
            await asyncio.sleep(wait)
            number += 1


NO_RETRIES: Final = RetryPolicy(retries=0)
