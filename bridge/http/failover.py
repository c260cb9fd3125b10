"""Several upstreams behind one bridge: the preferred one first, the others in order when it fails, a
circuit breaker per upstream, and opt-in hedging; a call moves only before its commit point.

The commit point is the moment something of the reply may reach the caller. A unary request commits when
its reply was received whole (the bridge sends nothing before that); a stream commits at its first event
that `commits` accepts (for chat: a chunk carrying content, a tool call or a finish reason, or an error
event or `[DONE]`): the events before it (the role-only opening chunk) are held back and delivered after
it, so a stream that fails before its first token moves to the next upstream invisibly, and one that fails
after it ends with its error, the text already sent never stitched to another generation.

What moves a call (`moves_unary`, `moves_stream`): what bridge.http.retry retries (refused, dropped
before the reply, 502, 503, 429 rate limited) and, for a stream before its commit point, a connection
lost or a body ended early. Never a 4xx other than 429 (the request is at fault, another upstream would
say the same), never a timeout of the call's deadline, never an error the upstream reported once
committed. A 429 with `Retry-After` holds that upstream only, for that long.

Attempts and the retry policy (`RetryPolicy`, the same `--retries`): a call makes at most
max(number of upstreams, 1 + retries) attempts, attempt k on upstream k mod n. The first visit to each
upstream goes at once (another host needs no backoff); coming back to one already tried waits as the
retry policy says (its backoff, at least its Retry-After), and for a stream only with `--retry-streams`.
The clients of a pool are built without retries of their own.

Circuit breaker (`Breaker`): after `failures` consecutive failures (those that move a call, 429 aside)
an upstream is skipped for `cooldown` seconds, then one trial request is let through (half-open): it
closes the breaker if it succeeds, reopens it otherwise. When no upstream would be admitted, the
preferred one is tried anyway: the bridge never refuses a call on its own.

Hedging (`HedgePolicy`, off by default): when the first attempt has not committed after `after` seconds,
a second request goes to the next upstream (the same one if there is only one); the first to commit
wins, the other is cancelled at once (its connection closed). At most `max_ratio` of the last `window`
calls are hedged. A request that must not be sent twice (`store: true`: the upstream keeps the
completion) is never hedged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import grpc

from bridge import errors
from bridge.errors import Reason, UpstreamError
from bridge.http.breaker import Breaker, BreakerPolicy, BreakerState, HedgeBudget, HedgePolicy
from bridge.http.client import EventStream, HttpClient, JSONObject, JsonReply
from bridge.http.retry import RetryPolicy, retryable
from bridge.http.sse import ServerSentEvent

__all__ = [
    "Events",
    "HeldStream",
    "UpstreamPool",
    "duplicable",
    "moves_stream",
    "moves_unary",
]

T = TypeVar("T")
Commits = Callable[[ServerSentEvent], bool]

_STREAM_CUT: Final = frozenset(
    {Reason.UPSTREAM_CONNECTION_LOST, Reason.UPSTREAM_STREAM_TRUNCATED, Reason.UPSTREAM_STREAM_INCOMPLETE}
)
_RATE_LIMITED: Final = 429
_NO_BREAKER_SETTINGS: Final = BreakerPolicy()  # the defaults
_NO_HEDGING: Final = HedgePolicy()


def moves_unary(error: BaseException) -> bool:
    """Whether a unary request that failed with `error` may go to another upstream."""
    return _rate_limited(error) or retryable(error)


def moves_stream(error: BaseException) -> bool:
    """Whether a stream that failed with `error` before its commit point may go to another upstream."""
    if moves_unary(error):
        return True
    return isinstance(error, UpstreamError) and error.http_status is None and error.reason in _STREAM_CUT


def _rate_limited(error: BaseException) -> bool:
    # Any 429, a spent quota included: another upstream has its own (retry only waits for a rate limit).
    return isinstance(error, UpstreamError) and error.http_status == _RATE_LIMITED


def duplicable(body: JSONObject | None) -> bool:
    """Whether a request may be sent twice at once (hedged): not when the upstream keeps what it
    answers (`store: true`), where a duplicate would be stored twice."""
    return body is None or body.get("store") is not True


# ------------------------------------------------------------------------------------------ the pool


class Events(Protocol):
    """An upstream event stream as a service reads it: an `EventStream`, or a pool's `HeldStream`."""

    status: int
    headers: Mapping[str, str]
    host: str
    correlation_id: str | None

    @property
    def ended_mid_event(self) -> bool: ...

    @property
    def waited(self) -> float:
        """Seconds spent waiting for the body's reads so far."""
        ...

    async def read(self) -> list[ServerSentEvent] | None:
        """The events of the next read (often one, possibly none); None once the body ended."""
        ...

    def batches(self) -> AsyncIterator[list[ServerSentEvent]]: ...

    def protocol_error(
        self, message: str, reason: Reason, code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    ) -> errors.UpstreamProtocolError: ...


@dataclass(eq=False, slots=True)
class _Upstream:
    client: HttpClient
    name: str  # host:port, as the access line and the metrics name it
    breaker: Breaker
    held_until: float = 0.0  # its 429's Retry-After


class HeldStream:
    """A committed event stream: the events held back before the commit point, then the rest."""

    def __init__(
        self,
        inner: EventStream,
        held: list[list[ServerSentEvent]],
        close: contextlib.AsyncExitStack,
        upstream: str,
    ) -> None:
        self._inner = inner
        self._held = held
        self._close = close
        self._handed_over = False
        self.upstream = upstream
        self.status = inner.status
        self.headers = inner.headers
        self.host = inner.host
        self.correlation_id = inner.correlation_id

    @property
    def ended_mid_event(self) -> bool:
        return self._inner.ended_mid_event

    @property
    def waited(self) -> float:
        return self._inner.waited

    async def read(self) -> list[ServerSentEvent] | None:
        if self._held:
            return self._held.pop(0)
        if not self._handed_over:  # read up to the commit point in the attempt's task, now in the caller's
            self._handed_over = True
            self._inner.handed_over()
        return await self._inner.read()

    async def batches(self) -> AsyncIterator[list[ServerSentEvent]]:
        while (batch := await self.read()) is not None:
            yield batch
            del batch

    def protocol_error(
        self, message: str, reason: Reason, code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    ) -> errors.UpstreamProtocolError:
        return self._inner.protocol_error(message, reason, code)

    async def aclose(self) -> None:
        await self._close.aclose()


class UpstreamPool:
    """Several upstream clients used as one (the `request_json` / `open_sse` of `HttpClient`), with
    failover before the commit point, a breaker each, and hedging. `on_attempt(n)` as attempt n of a
    call starts, `on_upstream(name)` once an upstream answered it (both in the caller's task)."""

    def __init__(
        self,
        clients: Sequence[HttpClient],
        *,
        retry: RetryPolicy,
        breaker: BreakerPolicy = _NO_BREAKER_SETTINGS,
        hedge: HedgePolicy = _NO_HEDGING,
        on_attempt: Callable[[int], None] | None = None,
        on_upstream: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not clients:
            raise ValueError("an upstream pool needs at least one client")
        names = [client.address for client in clients]
        if len(set(names)) != len(names):  # two base URLs on one host:port: told apart by their path
            names = [client.base_url for client in clients]
        self.upstreams = [_Upstream(c, n, Breaker(breaker)) for c, n in zip(clients, names, strict=True)]
        self.retry = retry
        self.hedge = hedge
        self.budget = HedgeBudget(hedge)
        self.hedges_fired = 0
        self.hedges_won = 0
        self._on_attempt = on_attempt
        self._on_upstream = on_upstream
        self._clock = clock
        first = clients[0]
        self.settings, self.host, self.address = first.settings, first.host, first.address

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.client.aclose()

    def states(self) -> list[tuple[str, BreakerState]]:
        return [(upstream.name, upstream.breaker.state) for upstream in self.upstreams]

    def protocol_error(
        self,
        message: str,
        reason: Reason,
        headers: Mapping[str, str],
        *,
        code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
        host: str | None = None,
    ) -> errors.UpstreamProtocolError:
        """An error for a reply that cannot be understood; `host` names the upstream that sent it (the
        reply's `JsonReply.host`: any of the pool's, not necessarily the first)."""
        return self.upstreams[0].client.protocol_error(message, reason, headers, code=code, host=host)

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        body: JSONObject | None = None,
        query: Mapping[str, str] | None = None,
    ) -> JsonReply:
        async def attempt(upstream: _Upstream) -> JsonReply:
            return await upstream.client.request_json(
                method, path, headers=headers, deadline=deadline, body=body, query=query
            )

        return await self._run(
            attempt, moves_unary, deadline=deadline, streaming=False, hedgeable=duplicable(body)
        )

    @contextlib.asynccontextmanager
    async def open_sse(
        self,
        path: str,
        body: JSONObject,
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        commits: Commits | None = None,
    ) -> AsyncIterator[HeldStream]:
        """The event stream of the first upstream to reach the commit point (`commits`: which event is
        the first that may reach the caller; None: the first event)."""

        async def attempt(upstream: _Upstream) -> HeldStream:
            return await _open_committed(upstream, path, body, headers, deadline, commits or _any_event)

        stream = await self._run(
            attempt,
            moves_stream,
            deadline=deadline,
            streaming=True,
            hedgeable=duplicable(body),
            discard=HeldStream.aclose,
        )
        try:
            yield stream
        finally:
            await stream.aclose()

    # --- internals ---

    async def _run(
        self,
        attempt: Callable[[_Upstream], Awaitable[T]],
        moves: Callable[[BaseException], bool],
        *,
        deadline: float | None,
        streaming: bool,
        hedgeable: bool,
        discard: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        count = len(self.upstreams)
        plan = [self.upstreams[k % count] for k in range(max(count, 1 + self.retry.retries))]
        visits: dict[_Upstream, int] = {}
        error: UpstreamError | None = None
        hedged = False
        number = 0
        index = 0
        try:
            while index < len(plan):
                upstream = plan[index]
                index += 1
                if not self._admitted(upstream) and (number or self._any_admitted(plan[index:])):
                    continue  # skipped; the preferred one goes anyway when none would be admitted
                if visits.get(upstream) and error is not None:
                    if streaming and not self.retry.streams:
                        break
                    if not await self._wait_to_retry(error, visits[upstream], deadline):
                        break
                visits[upstream] = visits.get(upstream, 0) + 1
                number += 1
                self._note_attempt(number)
                try:
                    if number == 1 and hedgeable and self.hedge.after > 0:
                        partner = self._partner(plan, index)
                        result, hedged, extra = await self._hedged(upstream, partner, attempt, discard)
                        number += extra
                        if extra:
                            visits[partner] = visits.get(partner, 0) + 1
                    else:
                        result = await self._attempt(upstream, attempt)
                except UpstreamError as failed:
                    error = failed
                    if not moves(failed):
                        raise
                    continue
                return result
        finally:
            if self.hedge.after > 0:
                self.budget.record(hedged)
        if error is None:  # no upstream admitted after the first failure's break: cannot happen
            raise RuntimeError("no upstream attempt was made")
        raise error.after_attempts(number) if number > 1 else error

    def _note_attempt(self, number: int) -> None:
        if self._on_attempt is not None:
            self._on_attempt(number)

    def _admitted(self, upstream: _Upstream) -> bool:
        now = self._clock()
        return upstream.held_until <= now and upstream.breaker.admits(now)

    def _any_admitted(self, rest: Sequence[_Upstream]) -> bool:
        now = self._clock()
        return any(u.held_until <= now and u.breaker.would_admit(now) for u in rest)

    def _partner(self, plan: Sequence[_Upstream], index: int) -> _Upstream:
        """The hedge's upstream: the next one admitted after the first, else the first again."""
        for upstream in plan[index : len(self.upstreams)]:
            if self._admitted(upstream):
                return upstream
        return plan[index - 1]

    async def _wait_to_retry(self, error: UpstreamError, retry: int, deadline: float | None) -> bool:
        loop = asyncio.get_running_loop()
        remaining = None if deadline is None else deadline - loop.time()
        wait = self.retry.next_delay(error, retry, random.random(), remaining=remaining, took=0.0)
        if wait is None:
            return False
        await asyncio.sleep(wait)
        return True

    async def _attempt(self, upstream: _Upstream, attempt: Callable[[_Upstream], Awaitable[T]]) -> T:
        """One request to `upstream`, its outcome told to its breaker."""
        try:
            result = await attempt(upstream)
        except UpstreamError as error:
            self._failed(upstream, error)
            raise
        except BaseException:
            upstream.breaker.abandoned()
            raise
        upstream.breaker.succeeded()
        if self._on_upstream is not None:
            self._on_upstream(upstream.name)
        return result

    def _failed(self, upstream: _Upstream, error: UpstreamError) -> None:
        now = self._clock()
        if error.http_status == _RATE_LIMITED:
            upstream.breaker.abandoned()  # alive, only busy: its Retry-After says for how long
            if error.retry_after:
                upstream.held_until = now + error.retry_after
        elif moves_stream(error):
            upstream.breaker.failed(now)
        else:
            upstream.breaker.succeeded()  # it answered: the request was at fault, not the upstream

    async def _hedged(
        self,
        first: _Upstream,
        second: _Upstream,
        attempt: Callable[[_Upstream], Awaitable[T]],
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> tuple[T, bool, int]:
        """(result, whether a hedge was sent, extra attempts made): `first`, and `second` too if `first`
        has not committed within the hedge delay and the budget allows; the first success wins."""
        tasks: list[asyncio.Future[T]] = [asyncio.ensure_future(self._attempt(first, attempt))]
        try:
            done, _ = await asyncio.wait(tasks, timeout=self.hedge.after)
            if done or not self.budget.allows():
                return await tasks[0], False, 0
            self.hedges_fired += 1
            self._note_attempt(2)
            tasks.append(asyncio.ensure_future(self._attempt(second, attempt)))
            winner = await _first_success(tasks, discard)
            if winner is tasks[1]:
                self.hedges_won += 1
            return winner.result(), True, 1
        finally:
            await _cancel(tasks)


async def _first_success(
    tasks: Sequence[asyncio.Future[T]], discard: Callable[[T], Awaitable[None]] | None
) -> asyncio.Future[T]:
    """The first of `tasks` to succeed (others that also succeeded are discarded); if all fail, the
    last failure is raised."""
    pending = set(tasks)
    failure: BaseException | None = None
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        winners = [task for task in tasks if task in done and task.exception() is None]
        for task in done:
            if task.exception() is not None:
                failure = task.exception()
        if winners:
            for extra in winners[1:]:
                if discard is not None:
                    await discard(extra.result())
            return winners[0]
    assert failure is not None
    raise failure


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancels the tasks still running and waits for them to unwind (their connections closed)."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.gather(*running, return_exceptions=True)


async def _open_committed(
    upstream: _Upstream,
    path: str,
    body: JSONObject,
    headers: Mapping[str, str],
    deadline: float | None,
    commits: Commits,
) -> HeldStream:
    """`upstream`'s stream, read up to its commit point; the events read are held for the caller."""
    stack = contextlib.AsyncExitStack()
    try:
        events = await stack.enter_async_context(
            upstream.client.open_sse(path, body, headers=headers, deadline=deadline)
        )
        held: list[list[ServerSentEvent]] = []
        while True:
            batch = await events.read()
            if batch is None:
                raise events.protocol_error(
                    "stream ended before its first content",
                    Reason.UPSTREAM_STREAM_INCOMPLETE,
                    grpc.StatusCode.UNAVAILABLE,
                )
            held.append(batch)
            if any(commits(event) for event in batch):
                return HeldStream(events, held, stack, upstream.name)
    except BaseException:
        await stack.aclose()
        raise


def _any_event(event: ServerSentEvent) -> bool:
    return True
