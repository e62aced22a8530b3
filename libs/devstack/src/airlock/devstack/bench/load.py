"""Open-loop load: a fixed send schedule, latency from the scheduled time, and what "sustained" means.

A closed-loop generator (send, wait, send) slows down when the system does and so hides the
queueing it causes (coordinated omission). Here every request has a scheduled send time fixed
before the step starts (``start + i / rate``); it is sent at that time whatever happened to
earlier ones, and its latency is measured from that time, so a send that was itself late
(the generator or the client stalled) counts against the system, not in its favour.

The pure parts (schedule, percentiles, summaries, the sustained criterion and the search for
the maximum sustained rate) are unit-tested; :func:`drive` runs a schedule against any async
``send`` function.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: A step is sustained when it completes this share of what was offered …
SUSTAINED_SHARE = 0.95
#: … and its p99 end-to-end latency stays below the model's latency plus this (no growing queue).
SUSTAINED_P99_SLACK_MS = 1_000.0


def schedule(rate: float, seconds: float) -> list[float]:
    """Send offsets (seconds from the step's start) for ``rate`` requests/s during ``seconds``.

    Raises:
        ValueError: A rate or duration that is not positive.
    """
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive (got {rate}, {seconds})")
    return [index / rate for index in range(max(1, round(rate * seconds)))]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile with linear interpolation between ranks (NaN when empty).

    Raises:
        ValueError: ``fraction`` outside ``[0, 1]``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1] (got {fraction})")
    if not values:
        return math.nan
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """Percentiles of a set of latencies (milliseconds).

    Attributes:
        count: How many values.
        p50: Median.
        p95: 95th percentile.
        p99: 99th percentile.
        max: Largest value.
    """

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarize ``values`` (NaN percentiles when there are none)."""
        return cls(
            count=len(values),
            p50=percentile(values, 0.50),
            p95=percentile(values, 0.95),
            p99=percentile(values, 0.99),
            max=max(values) if values else math.nan,
        )


@dataclass
class Sample:
    """One request of a step.

    Attributes:
        index: Position in the schedule.
        scheduled: When it was due (``time.perf_counter()`` seconds).
        sent: When the send call actually started.
        done: When its answer arrived (``None``: no answer).
        ok: Whether the answer was a success (a completion, HTTP 200).
        error: What went wrong, briefly, when not ``ok``.
    """

    index: int
    scheduled: float
    sent: float = math.nan
    done: float | None = None
    ok: bool = False
    error: str = ""

    @property
    def latency_ms(self) -> float | None:
        """From the scheduled send time to the answer (``None`` without an answer)."""
        return None if self.done is None else (self.done - self.scheduled) * 1000


@dataclass
class StepResult:
    """What one load step measured.

    Attributes:
        system: What was driven (``airlock``, ``litellm``).
        model_ms: The fake model's configured latency.
        offered: Offered requests per second.
        seconds: How long load was offered.
        sent: Requests whose send succeeded.
        answered: Requests with any answer.
        ok: Requests answered with a success.
        errors: Error kinds and their counts.
        throughput: Successful answers per second, from the first scheduled send to the last answer.
        latency: End-to-end latency (scheduled send → answer) of successful requests.
        overhead: ``latency`` minus the model's configured latency.
        send_lag_ms: How late sends started, p99 (the generator's own health).
        extra: Anything system-specific (loss counts, ledger tallies…).
    """

    system: str
    model_ms: float
    offered: float
    seconds: float
    sent: int
    answered: int
    ok: int
    errors: dict[str, int]
    throughput: float
    latency: Summary
    overhead: Summary
    send_lag_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sustained(self) -> bool:
        """Whether the system kept up with this step (see :func:`is_sustained`)."""
        return is_sustained(self)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (with ``sustained``)."""
        return {**asdict(self), "sustained": self.sustained}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepResult:
        """Rebuild a result from its :meth:`as_dict` form."""
        fields = {k: v for k, v in data.items() if k != "sustained"}
        fields["latency"] = Summary(**fields["latency"])
        fields["overhead"] = Summary(**fields["overhead"])
        return cls(**fields)


def is_sustained(step: StepResult) -> bool:
    """Kept up: every sent request answered successfully, at the offered rate, without a queue.

    Precisely: nothing lost or failed (``ok == sent == scheduled``), achieved throughput at
    least :data:`SUSTAINED_SHARE` of the offered rate, and p99 latency below the model's
    latency plus :data:`SUSTAINED_P99_SLACK_MS` (a queue that grows during the step shows
    up there first).
    """
    expected = len(schedule(step.offered, step.seconds))
    if step.sent != expected or step.ok != expected:
        return False
    if step.throughput < SUSTAINED_SHARE * step.offered:
        return False
    return step.latency.p99 <= step.model_ms + SUSTAINED_P99_SLACK_MS


def summarize(
    system: str, model_ms: float, offered: float, seconds: float, samples: Sequence[Sample], **extra: Any
) -> StepResult:
    """Turn a step's samples into its result."""
    answered = [s for s in samples if s.done is not None]
    good = [s for s in answered if s.ok]
    errors: dict[str, int] = {}
    for sample in samples:
        if not sample.ok:
            kind = sample.error or "no answer"
            errors[kind] = errors.get(kind, 0) + 1
    latencies = [s.latency_ms for s in good if s.latency_ms is not None]
    first = min((s.scheduled for s in samples), default=0.0)
    last = max((s.done for s in good if s.done is not None), default=first)
    throughput = len(good) / (last - first) if last > first else 0.0
    lags = [(s.sent - s.scheduled) * 1000 for s in samples if not math.isnan(s.sent)]
    # The machine is shared: each step carries the 1-minute load average at its end.
    extra = {"load_1m": round(os.getloadavg()[0], 2), **extra} if hasattr(os, "getloadavg") else extra
    return StepResult(
        system=system,
        model_ms=model_ms,
        offered=offered,
        seconds=seconds,
        sent=sum(1 for s in samples if not math.isnan(s.sent) and s.error != "send failed"),
        answered=len(answered),
        ok=len(good),
        errors=errors,
        throughput=throughput,
        latency=Summary.of(latencies),
        overhead=Summary.of([value - model_ms for value in latencies]),
        send_lag_ms=percentile(lags, 0.99) if lags else math.nan,
        extra=dict(extra),
    )


def next_probe(tried: dict[float, bool], *, ceiling: float, resolution: float = 0.15) -> float | None:
    """The next rate to try when searching for the highest sustained rate, or ``None`` when done.

    Above the best sustained rate with no failure seen yet: 1.5 × it (up to ``ceiling``).
    Between the best sustained rate and the lowest failed one: their midpoint, until the gap is
    within ``resolution`` of the sustained rate. Below every rate tried when all failed: half
    the lowest.

    Args:
        tried: Rate → whether it was sustained.
        ceiling: Never probe above this.
        resolution: Stop when the failed/sustained gap is this share of the sustained rate.
    """
    good = [rate for rate, ok in tried.items() if ok]
    bad = [rate for rate, ok in tried.items() if not ok and rate > max(good, default=0.0)]
    if not good:
        lowest = min(tried) if tried else ceiling
        probe = lowest / 2
        return probe if probe >= 1.0 and probe not in tried else None
    best = max(good)
    if not bad:
        probe = min(best * 1.5, ceiling)
        return probe if probe > best and probe not in tried else None
    failed = min(bad)
    if failed - best <= resolution * best:
        return None
    probe = round((best + failed) / 2)
    return float(probe) if probe not in tried and best < probe < failed else None


def max_sustained(tried: dict[float, bool]) -> float | None:
    """The highest rate sustained (``None`` when none was)."""
    return max((rate for rate, ok in tried.items() if ok), default=None)


Send = Callable[[int], Awaitable[tuple[bool, str]]]
"""Sends request ``index`` and waits for its answer: ``(ok, error kind)``."""


async def drive(send: Send, rate: float, seconds: float, *, answer_timeout_s: float) -> list[Sample]:
    """Run one open-loop step: request ``i`` is sent at ``start + i / rate`` whatever came before.

    Args:
        send: Sends one request and awaits its answer (raising counts as an error).
        rate: Requests per second.
        seconds: How long to offer load.
        answer_timeout_s: After the last send, how long to wait for outstanding answers.
    """
    offsets = schedule(rate, seconds)
    start = time.perf_counter() + 0.05
    samples = [Sample(index, start + offset) for index, offset in enumerate(offsets)]

    async def one(sample: Sample) -> None:
        sample.sent = time.perf_counter()
        try:
            ok, error = await send(sample.index)
        except TimeoutError:
            ok, error = False, "timeout"
        except Exception as failure:  # a failed request is a measurement, not a crash
            ok, error = False, type(failure).__name__
        sample.done = time.perf_counter() if ok or error not in ("timeout", "send failed") else None
        sample.ok, sample.error = ok, error

    tasks: list[asyncio.Task[None]] = []
    for sample in samples:
        delay = sample.scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(sample)))
    _, pending = await asyncio.wait(tasks, timeout=answer_timeout_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for sample in samples:
        if sample.done is None and not sample.error:
            sample.error = "timeout"
    return samples
