"""The router's retry, fallback, breaker and pacing decisions, on a virtual clock.

The provider is a scripted stand-in for :func:`airlock.llm_worker.calls.attempt` (the real
client is exercised in ``test_llm_calls.py`` and the integration tests).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from airlock.core.errors import ErrorCode
from airlock.core.models import ChatMessage, Usage
from airlock.llm_worker.calls import Answer, AttemptFailure
from airlock.llm_worker.pacing import Pacer, PacingPolicy, PacingSignal
from airlock.llm_worker.params import GovernedParams
from airlock.llm_worker.resilience import Backoff, BreakerState, CircuitBreaker
from airlock.llm_worker.router import Router, RouterPolicy, RoutingFailure
from airlock.llm_worker.routing import RouteSpec, TargetSpec

MESSAGES = [ChatMessage(role="user", content="hello <PERSON_1>")]
PARAMS = GovernedParams({"max_tokens": 10})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Provider:
    """Answers per target from a script: an exception instance, ``"ok"``, or ``"length"``."""

    def __init__(self, clock: Clock, script: dict[str, list[Any]], call_s: float = 0.3) -> None:
        self.clock = clock
        self.script = {name: list(steps) for name, steps in script.items()}
        self.calls: list[tuple[str, float, float]] = []  # target, sent at, timeout
        self.call_s = call_s

    async def __call__(
        self, target: TargetSpec, *, messages: Sequence[ChatMessage], params: dict[str, Any], timeout_s: float
    ) -> Answer:
        self.calls.append((target.name, self.clock.now, timeout_s))
        steps = self.script.get(target.name) or ["ok"]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, AttemptFailure):
            if step.kind == "timeout":
                self.clock.now += timeout_s
            raise step
        self.clock.now += self.call_s
        return Answer(
            "answer",
            "length" if step == "length" else "stop",
            target.served_model,
            Usage(input_tokens=5, output_tokens=7),
            300,
        )


def target(name: str, **extra: Any) -> TargetSpec:
    return TargetSpec(name=name, provider="openai-compatible", model=f"model-{name}", endpoint="http://x/v1", **extra)


def route(*targets: TargetSpec) -> RouteSpec:
    return RouteSpec(targets=list(targets))


def router(
    provider: Provider,
    clock: Clock,
    *,
    pacer: Pacer | None = None,
    published: list[PacingSignal] | None = None,
    **policy: Any,
) -> Router:
    settings: dict[str, Any] = {"attempts_per_target": 3, "call_timeout_s": 5.0, "backoff": Backoff(0.2, 2.0)}
    settings.update(policy)
    return Router(
        provider,
        pacer or Pacer({}, share=lambda: 1.0, origin="me", policy=PacingPolicy(resume_spread_s=0.0)),
        policy=RouterPolicy(**settings),
        breaker=lambda: CircuitBreaker(threshold=3, cooldown_s=30),
        publish=(published.append if published is not None else None),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
    )


def rate_limited(retry_after: float | None) -> AttemptFailure:
    return AttemptFailure("rate_limited", "429", status=429, retry_after=retry_after)


SERVER_ERROR = AttemptFailure("server", "500", status=500)
TIMEOUT = AttemptFailure("timeout", "timed out")


async def test_500_then_success_retries_the_same_target_after_a_jittered_backoff() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [SERVER_ERROR, "ok"]})
    routed = await router(provider, clock).complete(route(target("a"), target("b")), MESSAGES, PARAMS, 1100.0)
    assert routed.target.name == "a" and routed.attempts == 2
    assert [str(s) for s in routed.trail] == ["a:500", "a:ok"]
    assert len(clock.sleeps) == 1 and 0 <= clock.sleeps[0] <= 0.2


async def test_429_waits_at_least_retry_after_and_shares_a_pacing_signal() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [rate_limited(2.5), "ok"]})
    published: list[PacingSignal] = []
    routed = await router(provider, clock, published=published).complete(route(target("a")), MESSAGES, PARAMS, 1100.0)
    (first, _, _), (second, sent_again, _) = provider.calls
    assert first == second == "a"
    assert sent_again - 1000.0 >= 2.5  # Retry-After honoured
    assert [str(s) for s in routed.trail] == ["a:429", "a:ok"]
    assert [(s.target, s.pause_until) for s in published] == [("a", 1002.5)]


async def test_long_retry_after_falls_back_instead_of_waiting() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [rate_limited(120.0)], "b": ["ok"]})
    routed = await router(provider, clock).complete(route(target("a"), target("b")), MESSAGES, PARAMS, 1100.0)
    assert routed.target.name == "b" and [str(s) for s in routed.trail] == ["a:429", "b:ok"]
    assert clock.sleeps == []


async def test_timeouts_exhaust_the_target_then_fall_back_with_per_attempt_timeout() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [TIMEOUT], "b": ["ok"]})
    routed = await router(provider, clock, attempts_per_target=2).complete(
        route(target("a"), target("b")), MESSAGES, PARAMS, 1100.0
    )
    assert [str(s) for s in routed.trail] == ["a:timeout", "a:timeout", "b:ok"]
    assert routed.target.name == "b" and routed.attempts == 3
    assert all(timeout == 5.0 for _, _, timeout in provider.calls)


async def test_attempt_timeout_never_exceeds_the_request_deadline() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [TIMEOUT]})
    with pytest.raises(RoutingFailure) as failed:
        await router(provider, clock, call_timeout_s=60.0).complete(route(target("a")), MESSAGES, PARAMS, 1003.0)
    assert provider.calls[0][2] == 3.0
    assert failed.value.error.code is ErrorCode.DEADLINE_EXCEEDED
    assert clock.now <= 1003.0 + 1e-9


async def test_request_fault_4xx_is_not_retried_nor_sent_elsewhere() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [AttemptFailure("rejected", "HTTP 400", status=400)]})
    with pytest.raises(RoutingFailure) as failed:
        await router(provider, clock).complete(route(target("a"), target("b")), MESSAGES, PARAMS, 1100.0)
    assert failed.value.error.code is ErrorCode.MODEL_REJECTED
    assert [name for name, _, _ in provider.calls] == ["a"]


async def test_target_refusing_its_credentials_is_skipped_without_retry() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [AttemptFailure("target_refused", "HTTP 401", status=401)], "b": ["ok"]})
    routed = await router(provider, clock).complete(route(target("a"), target("b")), MESSAGES, PARAMS, 1100.0)
    assert [str(s) for s in routed.trail] == ["a:401", "b:ok"]


async def test_all_targets_down_fails_as_model_unavailable_with_the_trail() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [SERVER_ERROR], "b": [AttemptFailure("connection", "refused")]})
    with pytest.raises(RoutingFailure) as failed:
        await router(provider, clock, attempts_per_target=2).complete(
            route(target("a"), target("b")), MESSAGES, PARAMS, 1100.0
        )
    error = failed.value.error
    assert error.code is ErrorCode.MODEL_UNAVAILABLE
    assert failed.value.attempts == 4
    assert "a:500,a:500,b:connection,b:connection" in error.message


async def test_breaker_opens_skips_the_target_then_probes_and_recovers() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [SERVER_ERROR, SERVER_ERROR, SERVER_ERROR, "ok"], "b": ["ok"]})
    subject = router(provider, clock)
    both = route(target("a"), target("b"))
    first = await subject.complete(both, MESSAGES, PARAMS, 1100.0)
    assert [str(s) for s in first.trail] == ["a:500", "a:500", "a:500", "b:ok"]
    assert subject.breaker("a").state is BreakerState.OPEN
    second = await subject.complete(both, MESSAGES, PARAMS, clock.now + 100)
    assert [str(s) for s in second.trail] == ["a:open", "b:ok"]  # fails fast, no call to a
    clock.now += 31  # cool-down over: one probe
    third = await subject.complete(both, MESSAGES, PARAMS, clock.now + 100)
    assert [str(s) for s in third.trail] == ["a:ok"]
    assert subject.breaker("a").state is BreakerState.CLOSED


async def test_every_circuit_open_fails_fast_when_told_not_to_wait() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [SERVER_ERROR]})
    subject = router(provider, clock, unavailable_wait_max_s=0.0)
    with pytest.raises(RoutingFailure):
        await subject.complete(route(target("a")), MESSAGES, PARAMS, 1100.0)
    calls = len(provider.calls)
    with pytest.raises(RoutingFailure) as failed:
        await subject.complete(route(target("a")), MESSAGES, PARAMS, clock.now + 100)
    assert len(provider.calls) == calls
    assert failed.value.error.code is ErrorCode.MODEL_UNAVAILABLE
    assert failed.value.error.retry_after == 30.0


async def test_every_circuit_open_waits_for_the_probe_within_its_budget() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": [SERVER_ERROR, SERVER_ERROR, SERVER_ERROR, "ok"]})
    subject = router(provider, clock, unavailable_wait_max_s=45.0)
    with pytest.raises(RoutingFailure):
        await subject.complete(route(target("a")), MESSAGES, PARAMS, 1100.0)  # 3 × 500: the circuit opens
    opened = clock.now
    served = await subject.complete(route(target("a")), MESSAGES, PARAMS, clock.now + 100)
    assert [str(s) for s in served.trail] == ["a:open", "a:ok"]  # waited, then was the probe
    assert provider.calls[-1][1] - opened >= 30.0
    assert subject.breaker("a").state is BreakerState.CLOSED
    provider.script["a"] = [SERVER_ERROR]
    for _ in range(3):
        with pytest.raises(RoutingFailure):
            await subject.complete(route(target("a")), MESSAGES, PARAMS, clock.now + 100)
    started = clock.now
    with pytest.raises(RoutingFailure) as failed:  # the deadline is too close to wait 30 s
        await subject.complete(route(target("a")), MESSAGES, PARAMS, clock.now + 10)
    assert failed.value.error.code is ErrorCode.MODEL_UNAVAILABLE and clock.now == started


async def test_paced_target_waits_its_slot_or_spills_to_the_next_target() -> None:
    clock = Clock()
    pacing = Pacer({"a": (60, None)}, share=lambda: 1.0, origin="me", policy=PacingPolicy(burst_s=0.0))
    provider = Provider(clock, {}, call_s=0.0)
    subject = router(provider, clock, pacer=pacing, pacing_max_wait_s=1.5)
    both = route(target("a"), target("b"))
    pacing.reserve("a", 1, clock.now)  # a call in flight elsewhere in this replica: next slot in 1 s
    waited = await subject.complete(both, MESSAGES, PARAMS, clock.now + 100)
    assert waited.target.name == "a" and clock.sleeps == [1.0]
    pacing.reserve("a", 1, clock.now)
    pacing.reserve("a", 1, clock.now)  # now the next slot is 2 s away: more than the 1.5 s allowed
    spilled = await subject.complete(both, MESSAGES, PARAMS, clock.now + 100)
    assert [str(s) for s in spilled.trail] == ["a:paced", "b:ok"]
    assert clock.sleeps == [1.0]


async def test_length_finish_reason_is_returned_as_is() -> None:
    clock = Clock()
    provider = Provider(clock, {"a": ["length"]})
    routed = await router(provider, clock).complete(route(target("a")), MESSAGES, PARAMS, 1100.0)
    assert routed.answer.finish_reason == "length"
