"""Backoff with full jitter and the circuit breaker (pure, clock passed in)."""

from __future__ import annotations

import random

from airlock.llm_worker.resilience import Backoff, BreakerState, CircuitBreaker


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    backoff = Backoff(base_s=0.5, max_s=4.0)
    rng = random.Random(1)
    for retry, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [backoff.delay(retry, rng=rng) for _ in range(500)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.9 and min(delays) < cap * 0.1  # spread over the whole range


def test_retry_after_is_a_floor_of_the_delay() -> None:
    backoff = Backoff(base_s=0.25, max_s=8.0)
    rng = random.Random(2)
    assert all(backoff.delay(1, retry_after=3.0, rng=rng) == 3.0 for _ in range(100))
    assert all(backoff.delay(6, retry_after=0.1, rng=rng) >= 0.1 for _ in range(100))


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=10)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success(0)  # a success in between resets the count
    breaker.record_failure(1)
    breaker.record_failure(1)
    assert breaker.state is BreakerState.CLOSED and breaker.allow(1)
    breaker.record_failure(2)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(5)
    assert breaker.retry_in(5) == 7


def test_breaker_lets_one_probe_through_after_cooldown_and_closes_on_success() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=10)
    breaker.record_failure(0)
    assert breaker.allow(10)  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(10.1)  # only one probe at a time
    assert breaker.retry_in(10.1) == breaker.probe_poll_s
    breaker.record_success(11)
    assert breaker.state is BreakerState.CLOSED and breaker.allow(11) and breaker.allow(11)
    assert [state for _, state in breaker.transitions] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_failed_probe_reopens_for_a_new_cooldown_and_released_probe_can_be_retaken() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=10)
    breaker.record_failure(0)
    assert breaker.allow(10)
    breaker.record_failure(10.5)
    assert breaker.state is BreakerState.OPEN and not breaker.allow(15) and breaker.retry_in(15) == 5.5
    assert breaker.allow(20.5)
    breaker.release()  # the probe ended without a verdict (e.g. a 429)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow(20.6)
