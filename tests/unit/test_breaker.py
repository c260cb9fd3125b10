"""The circuit breaker and the hedge budget of an upstream pool (bridge.http.breaker): pure state, told
the time by the test."""

from __future__ import annotations

from bridge.chat.stream import commits
from bridge.http.breaker import Breaker, BreakerPolicy, BreakerState, HedgeBudget, HedgePolicy
from bridge.http.sse import ServerSentEvent


def test_the_breaker_opens_after_n_consecutive_failures_then_lets_one_trial_through_after_its_cooldown() -> (
    None
):
    breaker = Breaker(BreakerPolicy(failures=3, cooldown=10))
    breaker.failed(0)
    breaker.failed(1)
    breaker.succeeded()  # consecutive: a success starts the count again
    for now in (2, 3, 4):
        assert breaker.admits(now)
        breaker.failed(now)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.admits(13.9)
    assert breaker.admits(14)  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.admits(14.5)  # one trial at a time
    breaker.failed(15)  # the trial failed: open again for a whole cooldown
    assert breaker.state is BreakerState.OPEN
    assert not breaker.admits(24)
    assert breaker.admits(25)
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admits(25)


def test_a_cancelled_trial_leaves_the_trial_to_the_next_call() -> None:
    breaker = Breaker(BreakerPolicy(failures=1, cooldown=10))
    breaker.failed(0)
    assert breaker.admits(10)
    breaker.abandoned()
    assert breaker.state is BreakerState.OPEN
    assert breaker.admits(10)


def test_the_hedge_budget_allows_at_most_its_share_of_the_window() -> None:
    budget = HedgeBudget(HedgePolicy(after=0.05, max_ratio=0.5, window=4))
    assert not budget.allows()  # 1 of 1 would be 100 %
    budget.record(False)
    assert budget.allows()  # 1 of 2
    budget.record(True)
    assert not budget.allows()  # 2 of 3
    budget.record(False)
    budget.record(False)
    assert budget.allows()  # the window keeps 4 calls (F T F F): 2 of 5 at most
    budget.record(True)  # the window: T F F T
    assert not budget.allows()  # 3 of 5
    for _ in range(4):  # the hedged calls leave the window
        budget.record(False)
    assert budget.allows()


def _event(data: str, event: str = "message") -> ServerSentEvent:
    return ServerSentEvent(data=data, event=event)


def test_the_commit_point_of_a_chat_stream_is_its_first_chunk_with_content_a_tool_call_or_a_finish() -> None:
    held = [
        '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
        '{"choices":[],"prompt_filter_results":[]}',
        '{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}',
        # usage alone (the bridge may have asked for it, vLLM's continuous usage puts it on every chunk)
        '{"choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":{"prompt_tokens":1}}',
        '{"choices":[],"usage":{"prompt_tokens":1}}',
    ]
    committing = [
        '{"choices":[{"index":0,"delta":{"content":"Hi"}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c"}]}}]}',
        '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        '{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}',
        '{"error":{"message":"failed"}}',
        "[DONE]",
        "not json",
    ]
    assert [commits(_event(data)) for data in held] == [False] * len(held)
    assert [commits(_event(data)) for data in committing] == [True] * len(committing)
    assert commits(_event("{}", event="error"))
    assert not commits(_event("{}", event="ping"))
