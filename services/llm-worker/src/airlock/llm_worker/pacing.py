"""Pacing the fleet: each target's requests- and tokens-per-minute limit, shared by every replica.

Two mechanisms, both without a central coordinator:

* **Shares by membership.** A limit is configured once, for the whole fleet. Each replica
  paces itself at ``limit × share``, where ``share`` is the fraction of the input topic's
  partitions it owns (the consumer group's assignment, which Kafka keeps disjoint and
  complete). Requests are spread evenly over partitions (keyed by Airlock id), so the
  replicas' shares add up to the limit and follow scaling and rebalances by themselves.
* **429 signals.** A replica that gets a 429 pauses the target for ``Retry-After`` and halves
  its pace (recovering linearly afterwards), and publishes a :class:`PacingSignal` on the
  pacing topic; every replica applies it. So a 429 storm slows the whole fleet at once,
  instead of each replica discovering it by hammering the provider.

Pacing is a reservation scheme (GCRA): each call reserves its slot in a virtual schedule and
waits for it, so waiting callers are served in order and nobody polls.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from airlock.core.models import SCHEMA_VERSION, ChatMessage, utcnow

#: Output tokens assumed for a request without ``max_tokens`` when reserving token budget.
DEFAULT_OUTPUT_ESTIMATE = 256


class PacingSignal(BaseModel):
    """A target's pause and slow-down, published to every llm-worker replica.

    Attributes:
        target: The routing target that answered 429.
        pause_until: Wall-clock epoch seconds before which nobody calls it.
        factor: Fraction of its configured pace to use once the pause ends (recovers to 1).
        origin: The replica that saw the 429 (ignores its own signal).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    target: str
    pause_until: float
    factor: float = Field(gt=0, le=1)
    origin: str
    at: datetime = Field(default_factory=utcnow)


def estimate_tokens(messages: Sequence[ChatMessage], max_tokens: int | None) -> int:
    """Tokens a call may consume: the prompt (≈ 4 characters a token) plus its output ceiling."""
    prompt = sum((len(m.content) + 3) // 4 + 4 for m in messages)
    return prompt + (max_tokens if max_tokens is not None else DEFAULT_OUTPUT_ESTIMATE)


@dataclass
class _TargetPace:
    rpm: int | None
    tpm: int | None
    request_tat: float = 0.0
    token_tat: float = 0.0
    pause_until: float = 0.0
    slowed_to: float = 1.0


@dataclass(frozen=True)
class PacingPolicy:
    """How pacing reacts.

    Attributes:
        burst_s: Calls may run this far ahead of the steady pace (GCRA tolerance).
        recovery_s: After a pause, time to ramp from the slowed pace back to the full one.
        min_factor: Floor of the slow-down factor.
        default_pause_s: Pause after a 429 that carried no ``Retry-After``.
        resume_spread_s: Calls waiting out a pause on a target without a configured limit
            resume spread over this window, not all at once.
    """

    burst_s: float = 1.0
    recovery_s: float = 30.0
    min_factor: float = 0.1
    default_pause_s: float = 1.0
    resume_spread_s: float = 1.0


class Pacer:
    """Per-target pacing of this replica.

    Args:
        limits: Target name → (rpm, tpm); ``None`` for no configured limit.
        share: This replica's share of the fleet's limits (0 < share ≤ 1), read per call.
        origin: This replica's id, stamped on its signals.
        policy: Reaction knobs.
        rng: Jitter source.
    """

    def __init__(
        self,
        limits: dict[str, tuple[int | None, int | None]],
        *,
        share: Callable[[], float],
        origin: str,
        policy: PacingPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._paces = {name: _TargetPace(rpm, tpm) for name, (rpm, tpm) in limits.items()}
        self._share = share
        self.origin = origin
        self.policy = policy or PacingPolicy()
        self._rng = rng or random.Random()

    def _pace(self, target: str) -> _TargetPace:
        pace = self._paces.get(target)
        if pace is None:
            pace = self._paces[target] = _TargetPace(None, None)
        return pace

    def factor(self, target: str, now: float) -> float:
        """The fraction of the configured pace in force (1 = full speed)."""
        pace = self._pace(target)
        if pace.slowed_to >= 1.0:
            return 1.0
        if now <= pace.pause_until:
            return pace.slowed_to
        ramp = (now - pace.pause_until) / self.policy.recovery_s if self.policy.recovery_s > 0 else 1.0
        return min(1.0, pace.slowed_to + (1.0 - pace.slowed_to) * ramp)

    def paused_for(self, target: str, now: float) -> float:
        """Seconds until the target's pause ends (0 when not paused)."""
        return max(0.0, self._pace(target).pause_until - now)

    def _intervals(self, pace: _TargetPace, target: str, now: float) -> tuple[float | None, float | None]:
        scale = max(min(self._share(), 1.0), 1e-6) * self.factor(target, now)
        request_s = 60.0 / (pace.rpm * scale) if pace.rpm else None
        token_s = 60.0 / (pace.tpm * scale) if pace.tpm else None
        return request_s, token_s

    def _start(self, pace: _TargetPace, target: str, now: float) -> float:
        start = now
        if pace.rpm:
            start = max(start, pace.request_tat - self.policy.burst_s)
        if pace.tpm:
            start = max(start, pace.token_tat - self.policy.burst_s)
        return max(start, pace.pause_until)

    def delay(self, target: str, tokens: int, now: float) -> float:
        """How long a call would wait for its slot now (without reserving it)."""
        return self._start(self._pace(target), target, now) - now

    def reserve(self, target: str, tokens: int, now: float) -> float:
        """Reserve a call's slot; returns how long to wait before sending it."""
        pace = self._pace(target)
        start = self._start(pace, target, now)
        request_s, token_s = self._intervals(pace, target, now)
        if request_s is not None:
            pace.request_tat = max(pace.request_tat, start) + request_s
        if token_s is not None:
            pace.token_tat = max(pace.token_tat, start) + tokens * token_s
        if request_s is None and token_s is None and start > now:
            start += self._rng.uniform(0, self.policy.resume_spread_s)
        return start - now

    def settle(self, target: str, reserved: int, used: int, now: float) -> None:
        """Return (or charge) the difference between reserved and actually used tokens."""
        pace = self._pace(target)
        _, token_s = self._intervals(pace, target, now)
        if token_s is not None:
            pace.token_tat -= (reserved - used) * token_s

    def rate_limited(self, target: str, retry_after: float | None, now: float) -> PacingSignal | None:
        """A 429 from ``target``: pause and slow it here; the signal to share, if it is news.

        Only the first 429 of a pause halves the pace: the calls already in flight when it
        came will bounce too, and must not each halve it again.
        """
        pace = self._pace(target)
        pause = retry_after if retry_after is not None else self.policy.default_pause_s
        until = now + pause
        news = False
        if now >= pace.pause_until:
            pace.slowed_to = max(self.policy.min_factor, self.factor(target, now) * 0.5)
            news = True
        if until > pace.pause_until + 0.25:
            news = True
        pace.pause_until = max(pace.pause_until, until)
        if not news:
            return None
        return PacingSignal(target=target, pause_until=pace.pause_until, factor=pace.slowed_to, origin=self.origin)

    def apply(self, signal: PacingSignal, now: float) -> None:
        """Apply another replica's signal (idempotent; stale ones change nothing)."""
        if signal.origin == self.origin or signal.pause_until <= now:
            return
        pace = self._pace(signal.target)
        current = self.factor(signal.target, now)
        pace.pause_until = max(pace.pause_until, signal.pause_until)
        pace.slowed_to = min(current, signal.factor)
