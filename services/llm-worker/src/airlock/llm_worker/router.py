"""The router: one request through its route's targets — pacing, retries, breakers, fallback.

For each target in the route's plan, in order: skip it if its circuit is open or its pacing
wait does not fit (another target may be free now); otherwise call it, retrying retryable
failures (429, 5xx, timeouts, connection errors, unreadable answers) with exponential
backoff and full jitter, never sooner than ``Retry-After``, within the request's deadline.
A 4xx that is the request's fault ends the request at once (no other target would accept
it either); a target that refuses its own credentials or model (401/403/404) is skipped.
Every call and skip is kept in a trail for the audit event.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airlock.core.errors import ErrorCode, StageError
from airlock.core.models import ChatMessage
from airlock.llm_worker.calls import Answer, AttemptFailure
from airlock.llm_worker.pacing import Pacer, PacingSignal, estimate_tokens
from airlock.llm_worker.params import GovernedParams
from airlock.llm_worker.resilience import Backoff, CircuitBreaker
from airlock.llm_worker.routing import RouteSpec, TargetSpec

#: Below this much time left, an attempt is not started.
MIN_ATTEMPT_S = 0.05
#: Shortest wait before trying a route again when every target was unavailable.
MIN_REPLAN_S = 0.1

Call = Callable[..., Awaitable[Answer]]
"""``call(target, *, messages, params, timeout_s) -> Answer``; raises :class:`AttemptFailure`."""


@dataclass(frozen=True)
class RouterPolicy:
    """Retry and fallback knobs.

    Attributes:
        attempts_per_target: Calls to one target for one request before falling back.
        call_timeout_s: Timeout of one call (also bounded by the request's deadline).
        retry_after_max_s: A ``Retry-After`` longer than this sends the request to the next
            target instead of waiting.
        pacing_max_wait_s: A pacing wait longer than this sends the request to the next target.
        unavailable_wait_max_s: When every target is unavailable (circuit open, paced beyond
            its wait) and none was called, how long in all a request may wait for one to free
            up before failing (the deadline bounds it too).
        backoff: Delays between retries.
    """

    attempts_per_target: int = 3
    call_timeout_s: float = 60.0
    retry_after_max_s: float = 30.0
    pacing_max_wait_s: float = 30.0
    unavailable_wait_max_s: float = 60.0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass(frozen=True)
class Step:
    """One entry of a request's trail: a call's outcome, or why a target was skipped.

    ``outcome`` is ``ok``, an HTTP status (``429``, ``500``…), a failure kind (``timeout``,
    ``connection``, ``malformed``), ``open`` (circuit open) or ``paced`` (pacing wait too long).
    """

    target: str
    outcome: str

    def __str__(self) -> str:
        return f"{self.target}:{self.outcome}"


def format_trail(trail: Sequence[Step]) -> str:
    """``primary:429,primary:ok``: compact, for the audit event."""
    return ",".join(str(step) for step in trail)


@dataclass(frozen=True)
class Routed:
    """A served request.

    Attributes:
        answer: The provider's answer.
        target: The target that served it.
        attempts: Calls made (all targets).
        trail: Every call and skip, in order.
    """

    answer: Answer
    target: TargetSpec
    attempts: int
    trail: tuple[Step, ...]


class RoutingFailure(Exception):
    """No target produced an answer.

    Args:
        error: The structured error for the caller.
        attempts: Calls made.
        trail: Every call and skip, in order.
    """

    def __init__(self, error: StageError, attempts: int, trail: Sequence[Step]) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts
        self.trail = tuple(trail)


class Router:
    """Routes requests over targets with breakers, pacing, retries and fallback.

    Args:
        call: Performs one attempt on one target.
        pacer: This replica's pacing.
        policy: Retry and fallback knobs.
        breaker: Builds a target's circuit breaker on first use.
        slots: Bounds the calls in flight in this process.
        publish: Receives pacing signals to share with the fleet.
        clock: Wall-clock seconds (deadlines and pacing are wall-clock).
        sleep: Awaitable sleep.
        rng: Jitter and weighted choice.
    """

    def __init__(
        self,
        call: Call,
        pacer: Pacer,
        *,
        policy: RouterPolicy | None = None,
        breaker: Callable[[], CircuitBreaker] = CircuitBreaker,
        slots: asyncio.Semaphore | None = None,
        publish: Callable[[PacingSignal], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._call = call
        self._pacer = pacer
        self.policy = policy or RouterPolicy()
        self._new_breaker = breaker
        self.breakers: dict[str, CircuitBreaker] = {}
        self._slots = slots or asyncio.Semaphore(256)
        self._publish = publish or (lambda signal: None)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

    def breaker(self, target: str) -> CircuitBreaker:
        """The circuit breaker of ``target``."""
        found = self.breakers.get(target)
        if found is None:
            found = self.breakers[target] = self._new_breaker()
        return found

    async def complete(
        self,
        route: RouteSpec,
        messages: Sequence[ChatMessage],
        params: GovernedParams,
        deadline: float,
    ) -> Routed:
        """Serve one request through ``route`` before ``deadline`` (epoch seconds).

        Raises:
            RoutingFailure: ``model_rejected`` (the provider refused the request itself),
                ``deadline_exceeded``, or ``model_unavailable`` (every target failed, was
                open or was paced beyond its wait), with ``retry_after`` when known.
        """
        tokens = estimate_tokens(messages, params.max_tokens)
        trail: list[Step] = []
        attempts = 0
        waited = 0.0
        while True:
            wait_hint: float | None = None
            called = False
            for target in route.plan(self._rng):
                # After a wait, skips are not recorded again: the trail shows calls and the first skips.
                outcome = await self._try_target(
                    target, messages, params, deadline, tokens, trail, record_skips=waited == 0.0
                )
                attempts += outcome.attempts
                called = called or outcome.attempts > 0
                if outcome.answer is not None:
                    return Routed(outcome.answer, target, attempts, tuple(trail))
                if outcome.rejected is not None:
                    raise RoutingFailure(StageError(ErrorCode.MODEL_REJECTED, outcome.rejected), attempts, trail)
                if outcome.wait_hint is not None:
                    wait_hint = outcome.wait_hint if wait_hint is None else min(wait_hint, outcome.wait_hint)
                if self._clock() >= deadline - MIN_ATTEMPT_S:
                    break
            if called or wait_hint is None:
                break
            # Every target was skipped (circuit open, or paced beyond its wait): the request
            # waits for the first to free up rather than fail while the provider recovers.
            pause = max(wait_hint, MIN_REPLAN_S) + self._rng.uniform(0, MIN_REPLAN_S)
            if self._clock() + pause >= deadline - MIN_ATTEMPT_S or waited + pause > self.policy.unavailable_wait_max_s:
                break
            await self._sleep(pause)
            waited += pause
        summary = format_trail(trail) or "no target tried"
        if self._clock() >= deadline - MIN_ATTEMPT_S:
            error = StageError(
                ErrorCode.DEADLINE_EXCEEDED, f"deadline passed after {attempts} model call(s) ({summary})"
            )
        else:
            error = StageError(
                ErrorCode.MODEL_UNAVAILABLE,
                f"no target could answer after {attempts} model call(s) ({summary})",
                retry_after=round(wait_hint, 3) if wait_hint is not None else None,
            )
        raise RoutingFailure(error, attempts, trail)

    async def _try_target(
        self,
        target: TargetSpec,
        messages: Sequence[ChatMessage],
        params: GovernedParams,
        deadline: float,
        tokens: int,
        trail: list[Step],
        *,
        record_skips: bool,
    ) -> _TargetOutcome:
        breaker = self.breaker(target.name)
        result = _TargetOutcome()
        for number in range(1, self.policy.attempts_per_target + 1):
            now = self._clock()
            if deadline - now <= MIN_ATTEMPT_S:
                return result
            if not breaker.allow(now):
                if record_skips:
                    trail.append(Step(target.name, "open"))
                result.wait_hint = breaker.retry_in(now)
                return result
            wait = self._pacer.delay(target.name, tokens, now)
            if wait > min(self.policy.pacing_max_wait_s, deadline - now - MIN_ATTEMPT_S):
                breaker.release()
                if record_skips:
                    trail.append(Step(target.name, "paced"))
                result.wait_hint = wait
                return result
            try:
                wait = self._pacer.reserve(target.name, tokens, now)
                if wait > 0:
                    await self._sleep(wait)
                timeout = min(self.policy.call_timeout_s, deadline - self._clock())
                result.attempts += 1
                async with self._slots:
                    answer = await self._call(target, messages=messages, params=params.values, timeout_s=timeout)
            except AttemptFailure as failure:
                now = self._clock()
                trail.append(Step(target.name, failure.label))
                if failure.target_fault:
                    breaker.record_failure(now)
                else:
                    breaker.release()
                if failure.kind == "rate_limited":
                    signal = self._pacer.rate_limited(target.name, failure.retry_after, now)
                    if signal is not None:
                        self._publish(signal)
                if failure.kind == "rejected":
                    result.rejected = failure.detail
                    return result
                if not failure.retryable or number == self.policy.attempts_per_target:
                    return result
                if failure.retry_after is not None and failure.retry_after > self.policy.retry_after_max_s:
                    result.wait_hint = failure.retry_after
                    return result
                delay = self.policy.backoff.delay(number, failure.retry_after, self._rng)
                if now + delay >= deadline - MIN_ATTEMPT_S:
                    result.wait_hint = delay
                    return result
                await self._sleep(delay)
                continue
            except BaseException:
                breaker.release()  # cancelled mid-call: the probe slot must not stay taken
                raise
            now = self._clock()
            breaker.record_success(now)
            self._pacer.settle(target.name, tokens, answer.usage.total_tokens, now)
            trail.append(Step(target.name, "ok"))
            result.answer = answer
            return result
        return result


@dataclass
class _TargetOutcome:
    answer: Answer | None = None
    attempts: int = 0
    rejected: str | None = None
    wait_hint: float | None = None


def openai_call(clients: Mapping[str, Any]) -> Call:
    """The production :data:`Call`: :func:`airlock.llm_worker.calls.attempt` with each target's client."""
    from airlock.llm_worker.calls import attempt

    async def call(
        target: TargetSpec, *, messages: Sequence[ChatMessage], params: Mapping[str, Any], timeout_s: float
    ) -> Answer:
        return await attempt(
            clients[target.name], model=target.served_model, messages=messages, params=params, timeout_s=timeout_s
        )

    return call
