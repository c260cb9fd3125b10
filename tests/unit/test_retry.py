"""bridge.http.retry: which failures are retried, how long apart, within which deadline; the retry loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from bridge import errors
from bridge.errors import Reason
from bridge.http.retry import MIN_ATTEMPT_S, NO_RETRIES, RetryPolicy, retryable
from bridge.http.transports.httpx import error_for as error_from_transport_exception
from tests.helpers import http_error, stream_error

POLICY = RetryPolicy(retries=2, backoff=0.2, max_backoff=2.0)


def _transport_error(exc: Exception, *, before_reply: bool) -> errors.BridgeError:
    error = error_from_transport_exception(exc, address="gw.test:443")
    assert isinstance(error, errors.UpstreamError)
    return error.evolve(before_reply=before_reply)


def _refused() -> errors.BridgeError:
    return _transport_error(httpx.ConnectError("refused"), before_reply=True)


def _reset(*, before_reply: bool) -> errors.BridgeError:
    return _transport_error(httpx.ReadError("reset"), before_reply=before_reply)


QUOTA = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(_refused, True, id="connection-refused"),
        pytest.param(lambda: _reset(before_reply=True), True, id="reset-before-the-reply"),
        pytest.param(lambda: _reset(before_reply=False), False, id="reset-after-the-reply-began"),
        pytest.param(lambda: http_error(502), True, id="502"),
        pytest.param(lambda: http_error(503), True, id="503"),
        pytest.param(lambda: http_error(429), True, id="429-rate-limited"),
        pytest.param(lambda: http_error(429, QUOTA), False, id="429-quota"),
        pytest.param(lambda: http_error(500), False, id="500"),
        pytest.param(lambda: http_error(504), False, id="504"),
        pytest.param(lambda: http_error(400), False, id="400"),
        pytest.param(lambda: http_error(408), False, id="408"),
        pytest.param(
            lambda: _transport_error(httpx.ReadTimeout("silent"), before_reply=True),
            False,
            id="read-timeout-waiting-for-the-reply",
        ),
        pytest.param(
            lambda: _transport_error(httpx.PoolTimeout("full"), before_reply=True), False, id="pool-exhausted"
        ),
        pytest.param(
            lambda: _transport_error(httpx.RemoteProtocolError("cut"), before_reply=False),
            False,
            id="body-cut-short",
        ),
        pytest.param(lambda: errors.deadline_exceeded("gw.test"), False, id="deadline"),
        pytest.param(
            lambda: stream_error({"error": {"message": "overloaded", "code": "overloaded"}}),
            False,
            id="error-document-in-a-200",
        ),
        pytest.param(lambda: errors.invalid_request([("model", "empty")]), False, id="invalid-request"),
        pytest.param(errors.internal_error, False, id="internal"),
    ],
)
def test_only_failures_the_upstream_cannot_have_answered_are_retryable(
    make: Callable[[], errors.BridgeError], expected: bool
) -> None:
    assert retryable(make()) is expected


def test_backoff_is_full_jitter_doubling_up_to_its_cap() -> None:
    error = http_error(503)
    assert POLICY.delay(error, 1, 0.0) == 0.0
    assert POLICY.delay(error, 1, 0.5) == pytest.approx(0.1)
    assert POLICY.delay(error, 2, 0.5) == pytest.approx(0.2)
    capped = RetryPolicy(retries=10, backoff=0.2, max_backoff=1.0)
    assert capped.delay(error, 8, 0.999) == pytest.approx(0.999)


def test_retry_after_is_the_least_wait_and_a_longer_one_is_not_waited_for() -> None:
    asked = http_error(429, headers={"Retry-After": "1"})
    assert asked.retry_after == 1.0
    assert POLICY.delay(asked, 1, 0.0) == 1.0
    assert POLICY.delay(asked, 1, 0.999) == 1.0  # the jittered backoff (0.2 at most) is shorter
    litellm = http_error(429, headers={"llm_provider-retry-after": "1"})  # a LiteLLM proxy's name for it
    assert POLICY.delay(litellm, 1, 0.0) == 1.0
    assert POLICY.delay(http_error(503, headers={"Retry-After": "7"}), 1, 0.0) is None


def test_attempts_are_bounded() -> None:
    error = http_error(502)
    assert POLICY.delay(error, 2, 0.5) is not None
    assert POLICY.delay(error, 3, 0.5) is None
    assert NO_RETRIES.delay(error, 1, 0.5) is None


def test_a_retry_needs_time_before_the_deadline() -> None:
    asked = http_error(503, headers={"Retry-After": "1"})
    assert POLICY.next_delay(asked, 1, 0.0, remaining=None, took=30.0) == 1.0
    assert POLICY.next_delay(asked, 1, 0.0, remaining=1.0 + MIN_ATTEMPT_S, took=0.01) == 1.0
    assert POLICY.next_delay(asked, 1, 0.0, remaining=1.0 + MIN_ATTEMPT_S / 2, took=0.01) is None
    # An attempt that took 3 s before failing is not retried with 2 s left after the wait.
    assert POLICY.next_delay(asked, 1, 0.0, remaining=3.0, took=3.0) is None
    assert POLICY.next_delay(http_error(500), 1, 0.0, remaining=60.0, took=0.0) is None


class _Upstream:
    """Fails with `failures` in turn, then answers "ok"; counts attempts."""

    def __init__(self, *failures: errors.BridgeError) -> None:
        self._failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self._failures:
            raise self._failures.pop(0)
        return "ok"


FAST = RetryPolicy(retries=2, backoff=0.001, max_backoff=0.01)


async def test_run_retries_until_an_answer_and_reports_each_attempt() -> None:
    upstream = _Upstream(http_error(503), _refused())
    started: list[int] = []
    assert await FAST.run(upstream, deadline=None, on_attempt=started.append) == "ok"
    assert (upstream.calls, started) == (3, [1, 2, 3])


async def test_run_gives_up_with_the_last_error_saying_how_many_attempts() -> None:
    last = http_error(502)
    upstream = _Upstream(http_error(503), http_error(502), last)
    with pytest.raises(errors.UpstreamHTTPError) as raised:
        await FAST.run(upstream, deadline=None)
    assert upstream.calls == 3
    assert (raised.value.http_status, raised.value.attempts) == (502, 3)
    assert raised.value.message.endswith(" (after 3 attempts)")
    assert raised.value.to_status().details.endswith(" (after 3 attempts)")
    # A copy says it: the error the last attempt raised is as it was (its cause, here).
    assert raised.value is not last
    assert raised.value.__cause__ is last
    assert (last.message, last.attempts) == ("upstream returned HTTP 502", 1)


def test_retry_decides_on_the_reason_field() -> None:
    lost = errors.UpstreamUnavailableError("x", reason=Reason.UPSTREAM_CONNECTION_LOST, before_reply=True)
    assert retryable(lost)
    assert not retryable(lost.evolve(reason=Reason.UPSTREAM_POOL_EXHAUSTED))
    assert not retryable(lost.evolve(before_reply=False))
    limited = http_error(429)
    assert limited.reason == Reason.UPSTREAM_RATE_LIMITED
    assert retryable(limited)
    assert not retryable(limited.evolve(reason=Reason.UPSTREAM_QUOTA_EXCEEDED))


async def test_run_raises_other_failures_at_once() -> None:
    upstream = _Upstream(http_error(500))
    with pytest.raises(errors.UpstreamHTTPError) as raised:
        await FAST.run(upstream, deadline=None)
    assert upstream.calls == 1
    assert "attempts" not in raised.value.message


async def test_streams_are_retried_only_when_asked() -> None:
    upstream = _Upstream(http_error(503))
    with pytest.raises(errors.UpstreamHTTPError):
        await FAST.run(upstream, deadline=None, streaming=True)
    assert upstream.calls == 1
    upstream = _Upstream(http_error(503))
    streams = RetryPolicy(retries=2, backoff=0.001, max_backoff=0.01, streams=True)
    assert await streams.run(upstream, deadline=None, streaming=True) == "ok"
    assert upstream.calls == 2


@pytest.mark.parametrize(
    ("policy", "streaming"),
    [(NO_RETRIES, False), (NO_RETRIES, True), (FAST, True)],
    ids=["no-retries", "no-retries-stream", "stream-not-retried"],
)
async def test_one_allowed_attempt_is_reported_and_its_error_raised_as_it_is(
    policy: RetryPolicy, streaming: bool
) -> None:
    """No retry allowed (run's early path): the attempt is reported as attempt 1 before it starts, a
    retryable error (only the policy stops it) or any other is raised as the very object the attempt
    raised (no copy saying attempts, nothing swallowed), and an answer is returned."""
    started: list[int] = []
    failures: list[BaseException] = [http_error(503), ValueError("not the upstream's")]

    async def attempt() -> str:
        assert started[-1:] == [1]  # reported as it starts
        if failures:
            raise failures.pop(0)
        return "ok"

    for expected in list(failures):
        with pytest.raises(type(expected)) as raised:
            await policy.run(attempt, deadline=None, streaming=streaming, on_attempt=started.append)
        assert raised.value is expected
        assert raised.value.__cause__ is None
    assert await policy.run(attempt, deadline=None, streaming=streaming, on_attempt=started.append) == "ok"
    assert started == [1, 1, 1]
    assert await policy.run(attempt, deadline=None, streaming=streaming) == "ok"  # no on_attempt: fine


async def test_run_keeps_within_the_deadline() -> None:
    upstream = _Upstream(http_error(503, headers={"Retry-After": "1"}))
    patient = RetryPolicy(retries=2, backoff=0.001, max_backoff=5.0)
    deadline = asyncio.get_running_loop().time() + 0.5
    with pytest.raises(errors.UpstreamHTTPError):
        await patient.run(upstream, deadline=deadline)
    assert upstream.calls == 1  # waiting 1 s would pass the deadline: the caller gets the 503 now
