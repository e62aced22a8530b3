"""The open-loop load generator's pure parts: schedule, percentiles, summaries, the sustained rule."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from airlock.devstack.bench.load import (
    SUSTAINED_P99_SLACK_MS,
    Sample,
    StepResult,
    Summary,
    drive,
    is_sustained,
    max_sustained,
    next_probe,
    percentile,
    schedule,
    summarize,
)


def test_schedule_is_evenly_spaced_at_the_rate() -> None:
    offsets = schedule(50, 2)
    assert len(offsets) == 100
    assert offsets[0] == 0
    assert offsets[1] == pytest.approx(0.02)
    assert offsets[-1] == pytest.approx(1.98)


def test_schedule_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        schedule(0, 10)
    with pytest.raises(ValueError, match="must be positive"):
        schedule(10, -1)


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile(values, 0.0) == 1
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError, match="within"):
        percentile(values, 1.5)


def test_percentile_does_not_depend_on_order() -> None:
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0


def _samples(
    latencies_ms: Sequence[float | None], *, ok: bool = True, start: float = 100.0, rate: float = 10.0
) -> list[Sample]:
    samples = []
    for index, latency in enumerate(latencies_ms):
        scheduled = start + index / rate
        sample = Sample(index, scheduled, sent=scheduled)
        if latency is not None:
            sample.done = scheduled + latency / 1000
            sample.ok = ok
        else:
            sample.error = "timeout"
        samples.append(sample)
    return samples


def test_summarize_measures_from_the_scheduled_time_and_subtracts_the_model() -> None:
    samples = _samples([310.0] * 9 + [1300.0])
    result = summarize("x", 300.0, 10.0, 1.0, samples)
    assert result.ok == 10 and result.sent == 10 and result.answered == 10
    assert result.latency.p50 == pytest.approx(310.0)
    assert result.overhead.p50 == pytest.approx(10.0)
    assert result.latency.max == pytest.approx(1300.0)
    # 10 replies between the first scheduled send (t=100) and the last reply (t=100.9+1.3)
    assert result.throughput == pytest.approx(10 / 2.2)


def test_summarize_counts_missing_and_failed_answers() -> None:
    samples = _samples([50.0, None, 50.0])
    samples[2].ok, samples[2].error = False, "model_unavailable"
    result = summarize("x", 0.0, 10.0, 0.3, samples)
    assert result.ok == 1
    assert result.answered == 2
    assert result.errors == {"timeout": 1, "model_unavailable": 1}
    assert result.latency.count == 1


def _step(offered: float, ok: int, throughput: float, p99: float, model_ms: float = 300.0) -> StepResult:
    summary = Summary(ok, p99 / 2, p99, p99, p99)
    return StepResult("x", model_ms, offered, 1.0, ok, ok, ok, {}, throughput, summary, summary, 0.0)


def test_sustained_needs_everything_answered_the_rate_and_no_queue() -> None:
    assert is_sustained(_step(100, 100, 99, 400))
    assert not is_sustained(_step(100, 99, 99, 400)), "one lost request"
    assert not is_sustained(_step(100, 100, 90, 400)), "below 95 % of offered"
    assert not is_sustained(_step(100, 100, 99, 300 + SUSTAINED_P99_SLACK_MS + 1)), "a queue"


def test_step_result_round_trips_through_json_form() -> None:
    step = _step(50, 50, 49.5, 320)
    assert StepResult.from_dict(step.as_dict()) == step
    assert step.as_dict()["sustained"] is True


def test_next_probe_climbs_then_bisects_then_stops() -> None:
    assert next_probe({25: True, 50: True}, ceiling=1000) == 75
    assert next_probe({25: True, 50: True}, ceiling=60) == 60
    assert next_probe({100: True, 200: False}, ceiling=1000) == 150
    assert next_probe({100: True, 150: True, 200: False}, ceiling=1000) == 175
    assert next_probe({100: True, 110: False}, ceiling=1000) is None, "within resolution"
    assert next_probe({25: False, 50: False}, ceiling=1000) == 12.5
    assert next_probe({1.5: False}, ceiling=1000) is None, "nothing sensible left below"
    assert max_sustained({25: True, 50: True, 100: False}) == 50
    assert max_sustained({25: False}) is None


def test_next_probe_ignores_failures_below_the_best_rate() -> None:
    # a noisy low step failed, a higher one held: the search goes on above the best
    assert next_probe({25: False, 50: True}, ceiling=1000) == 75


def test_drive_sends_on_schedule_even_when_answers_are_slow() -> None:
    sent_at: list[float] = []

    async def send(index: int) -> tuple[bool, str]:
        sent_at.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.3)  # slower than the 20 ms between sends: open loop must not wait
        return (index != 3, "" if index != 3 else "boom")

    samples = asyncio.run(drive(send, 50, 0.2, answer_timeout_s=5))
    assert len(samples) == 10
    assert max(sent_at) - min(sent_at) < 0.3, "sends did not wait for answers"
    assert sum(s.ok for s in samples) == 9
    assert samples[3].error == "boom"
    assert all(s.latency_ms is not None and s.latency_ms >= 300 for s in samples)


def test_drive_records_unanswered_requests_as_timeouts() -> None:
    async def send(index: int) -> tuple[bool, str]:
        await asyncio.sleep(10 if index == 0 else 0)
        return True, ""

    samples = asyncio.run(drive(send, 20, 0.1, answer_timeout_s=0.5))
    assert samples[0].error == "timeout" and samples[0].done is None
    assert all(s.ok for s in samples[1:])


def test_drive_counts_exceptions_as_errors_not_crashes() -> None:
    async def send(index: int) -> tuple[bool, str]:
        raise ConnectionResetError("gone")

    samples = asyncio.run(drive(send, 20, 0.1, answer_timeout_s=1))
    assert {s.error for s in samples} == {"ConnectionResetError"}
    assert not any(s.ok for s in samples)
