"""Retry delays and circuit breakers: pure logic, with the clock passed in."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, never shorter than the provider's ``Retry-After``.

    Attributes:
        base_s: Ceiling of the first delay.
        max_s: Ceiling of any jittered delay.
    """

    base_s: float = 0.25
    max_s: float = 8.0

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Delay before retry number ``retry`` (1 = the first retry).

        Full jitter: uniform in ``[0, min(max_s, base_s · 2^(retry-1))]`` — retrying clients
        spread out instead of hammering in waves. A ``Retry-After`` is a floor: waiting less
        than the provider asked only earns another 429.
        """
        ceiling = min(self.max_s, self.base_s * 2 ** max(0, retry - 1))
        jittered = (rng or random).uniform(0, ceiling)
        return max(jittered, retry_after or 0.0)


class BreakerState(StrEnum):
    """Where a circuit breaker is."""

    CLOSED = "closed"
    """Calls flow; consecutive failures are counted."""
    OPEN = "open"
    """Calls are refused until the cool-down ends."""
    HALF_OPEN = "half_open"
    """One probe call is let through; its result closes or reopens the circuit."""


@dataclass
class CircuitBreaker:
    """A per-target circuit breaker.

    Opens after ``threshold`` consecutive target faults; after ``cooldown_s`` one probe is let
    through (half-open): a success closes it, a failure opens it for another cool-down.

    Attributes:
        threshold: Consecutive faults that open the circuit.
        cooldown_s: How long it stays open before probing.
        probe_poll_s: How long others wait before asking again while a probe is out.
    """

    threshold: int = 5
    cooldown_s: float = 30.0
    probe_poll_s: float = 1.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    transitions: list[tuple[float, BreakerState]] = field(default_factory=list)

    def allow(self, now: float) -> bool:
        """Whether a call may go to the target now (taking the probe slot when half-open)."""
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown_s:
            self._move(BreakerState.HALF_OPEN, now)
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self, now: float) -> float:
        """Seconds worth waiting before asking again (0 when calls go through now).

        While another request's probe is out, ``probe_poll_s``: the probe takes a call's time.
        """
        if self.state is BreakerState.OPEN:
            return max(0.0, self.cooldown_s - (now - self.opened_at))
        if self.state is BreakerState.HALF_OPEN and self.probing:
            return self.probe_poll_s
        return 0.0

    def record_success(self, now: float) -> None:
        """A call succeeded: close the circuit."""
        self.failures = 0
        self.probing = False
        if self.state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED, now)

    def record_failure(self, now: float) -> None:
        """A call failed by the target's fault: count it, open on the threshold or a failed probe."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.threshold
        ):
            self.probing = False
            self.opened_at = now
            self._move(BreakerState.OPEN, now)

    def release(self) -> None:
        """A probe ended without a verdict on the target (e.g. a 429): free the probe slot."""
        self.probing = False

    def _move(self, state: BreakerState, now: float) -> None:
        self.state = state
        self.transitions.append((now, state))
        del self.transitions[:-20]
