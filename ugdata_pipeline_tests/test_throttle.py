"""Token bucket pacing, backoff timing and Retry-After parsing shared by the service clients."""

import asyncio
import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ugdata_pipeline.throttle import AsyncTokenBucket, CircuitBreaker, RetryPolicy, parse_retry_after, redact


class FakeClock:
    """A clock that only advances when the bucket sleeps, so pacing is exact and the test is instant."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_paces_requests_to_the_rate(monkeypatch):
    clock = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("ugdata_pipeline.throttle.asyncio.sleep", fake_sleep)
    bucket = AsyncTokenBucket(rate=10, capacity=5, clock=clock)

    async def run() -> list[float]:
        times = []
        for _ in range(25):
            await bucket.acquire()
            times.append(clock.now)
        return times

    times = asyncio.run(run())
    # The first 5 go out as a burst; the next 20 are paced at 10/s: 2 s in all.
    assert times[:5] == [0.0] * 5
    assert times[-1] == pytest.approx(2.0)


def test_oversized_request_waits_for_a_full_bucket_then_goes_into_debt(monkeypatch):
    clock = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("ugdata_pipeline.throttle.asyncio.sleep", fake_sleep)
    bucket = AsyncTokenBucket(rate=100, capacity=100, clock=clock)

    async def run() -> tuple[float, float]:
        await bucket.acquire(250)  # full bucket available at once: no wait, level -150
        first = clock.now
        await bucket.acquire(1)  # must wait until the debt is repaid
        return first, clock.now

    first, second = asyncio.run(run())
    assert first == 0.0
    assert second == pytest.approx(1.51)


def test_token_bucket_rejects_a_non_positive_rate():
    with pytest.raises(ValueError, match="rate must be positive"):
        AsyncTokenBucket(rate=0)


@given(attempt=st.integers(1, 12), retry_after=st.none() | st.floats(0, 500))
def test_backoff_is_capped_jittered_and_honours_retry_after(attempt, retry_after):
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=30, rng=random.Random(attempt))
    delay = policy.delay_s(attempt, retry_after)
    ceiling = min(30, 0.5 * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= max(ceiling, min(retry_after or 0, 30))
    if retry_after is not None:
        assert delay >= min(retry_after, 30)


def test_retry_policy_needs_one_attempt():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(10, usegmt=True), now=1_000) == 0.0


def test_redact_hides_every_secret():
    text = "GET https://x/?access_token=MLY|123 failed; header OAuth MLY|123"
    assert "MLY|123" not in redact(text, "MLY|123", None, "")
    assert redact("nothing", None) == "nothing"


def test_circuit_breaker_opens_after_consecutive_failures_or_a_trip_and_stays_open():
    breaker = CircuitBreaker(3)
    assert [breaker.failure("HTTP 503"), breaker.failure("HTTP 503")] == [False, False]
    breaker.success()  # a success in between: the count starts again
    assert [breaker.failure("timeout"), breaker.failure("timeout")] == [False, False] and not breaker.is_open
    assert breaker.failure("HTTP 500: boom") is True  # the third in a row opens it, once
    assert breaker.is_open and breaker.reason == "3 calls in a row failed (last: HTTP 500: boom)"
    breaker.success()
    assert breaker.failure("again") is False and breaker.reason.startswith("3 calls")  # open for the whole run
    keyed = CircuitBreaker(50)
    assert keyed.trip("HTTP 401: check OPENAI_API_KEY") is True and keyed.trip("other") is False
    assert keyed.reason == "HTTP 401: check OPENAI_API_KEY"
    with pytest.raises(ValueError, match="threshold must be at least 1"):
        CircuitBreaker(0)
