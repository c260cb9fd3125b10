"""The state an upstream pool keeps between calls (no IO, no clock of its own): each upstream's circuit
breaker, and the budget that bounds hedging. bridge.http.failover says how they are used."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

__all__ = ["Breaker", "BreakerPolicy", "BreakerState", "HedgeBudget", "HedgePolicy"]


# ------------------------------------------------------------------------------------ circuit breaker


class BreakerState(enum.IntEnum):
    """An upstream's state, as the `prisme_bridge_upstream_state` gauge reports it."""

    CLOSED = 0  # in use
    HALF_OPEN = 1  # one trial request in flight
    OPEN = 2  # skipped until its cool-down ends


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5  # consecutive failures that open the breaker
    cooldown: float = 30.0  # seconds it stays open before a trial


class Breaker:
    """Closed → (N consecutive failures) → open → (cool-down) → half-open: one trial → closed or open."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0

    def admits(self, now: float) -> bool:
        """Whether a request may go now; an open breaker past its cool-down admits one, its trial."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.policy.cooldown:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def would_admit(self, now: float) -> bool:
        """`admits`, without granting a trial."""
        if self.state is BreakerState.OPEN:
            return now - self.opened_at >= self.policy.cooldown
        return self.state is BreakerState.CLOSED

    def succeeded(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.policy.failures:
            self.state = BreakerState.OPEN
            self.opened_at = now

    def abandoned(self) -> None:
        """The request admitted ended without an outcome (cancelled): a trial is given to the next call."""
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.OPEN  # its cool-down has passed: the next call is the trial


# -------------------------------------------------------------------------------------------- hedging


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    after: float = 0.0  # seconds without a commit before the hedge; 0: never
    max_ratio: float = 0.1  # of the calls in the window
    window: int = 1000  # calls


class HedgeBudget:
    """At most `max_ratio` of the last `window` calls hedged."""

    def __init__(self, policy: HedgePolicy) -> None:
        self.policy = policy
        self._calls: deque[bool] = deque(maxlen=policy.window)
        self._hedged = 0

    def allows(self) -> bool:
        """Whether one more call may be hedged now (this call counted)."""
        return self._hedged + 1 <= self.policy.max_ratio * (len(self._calls) + 1)

    def record(self, hedged: bool) -> None:
        if len(self._calls) == self._calls.maxlen and self._calls[0]:
            self._hedged -= 1
        self._calls.append(hedged)
        self._hedged += hedged
