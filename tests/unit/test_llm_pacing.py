"""Fleet pacing: membership shares, GCRA reservations, 429 pauses and their signals (pure)."""

from __future__ import annotations

import random

from airlock.core.models import ChatMessage
from airlock.llm_worker.pacing import Pacer, PacingPolicy, PacingSignal, estimate_tokens


def pacer(rpm: int | None = None, tpm: int | None = None, share: float = 1.0, origin: str = "me") -> Pacer:
    return Pacer(
        {"t": (rpm, tpm)},
        share=lambda: share,
        origin=origin,
        policy=PacingPolicy(burst_s=0.0, recovery_s=10.0, default_pause_s=2.0, resume_spread_s=0.0),
        rng=random.Random(0),
    )


def send_times(p: Pacer, count: int, tokens: int = 1, now: float = 100.0) -> list[float]:
    return [now + p.reserve("t", tokens, now) for _ in range(count)]


def test_requests_per_minute_spaces_calls_evenly() -> None:
    times = send_times(pacer(rpm=120), 5)  # 2 per second
    assert times == [100.0, 100.5, 101.0, 101.5, 102.0]


def test_each_replica_paces_at_its_membership_share_so_the_fleet_stays_under_the_limit() -> None:
    # Three replicas owning 3, 2 and 1 of 6 partitions: together they stay at 120 rpm.
    replicas = [pacer(rpm=120, share=owned / 6) for owned in (3, 2, 1)]
    horizon = 60.0
    total = 0
    for replica in replicas:
        times = send_times(replica, 1000)
        total += sum(1 for t in times if t < 100.0 + horizon)
    assert total == 120


def test_tokens_per_minute_paces_by_estimated_tokens_and_settles_with_actual_usage() -> None:
    p = pacer(tpm=6000)  # 100 tokens per second
    assert p.reserve("t", 500, 100.0) == 0.0  # first call goes at once, books 5 s
    assert p.delay("t", 500, 100.0) == 5.0
    p.settle("t", reserved=500, used=100, now=100.0)  # it used only 100: 4 s come back
    assert p.delay("t", 500, 100.0) == 1.0


def test_burst_allows_calls_ahead_of_the_steady_pace() -> None:
    p = Pacer({"t": (60, None)}, share=lambda: 1.0, origin="me", policy=PacingPolicy(burst_s=2.0))
    times = send_times(p, 5)
    assert times == [100.0, 100.0, 100.0, 101.0, 102.0]


def test_unconfigured_target_is_not_paced_until_a_429() -> None:
    p = pacer()
    assert send_times(p, 3) == [100.0, 100.0, 100.0]


def test_429_pauses_the_target_for_retry_after_and_halves_the_pace_which_recovers() -> None:
    p = pacer(rpm=600)  # 10/s
    signal = p.rate_limited("t", retry_after=3.0, now=100.0)
    assert signal is not None and signal.pause_until == 103.0 and signal.factor == 0.5
    assert p.delay("t", 1, 100.0) == 3.0
    assert p.factor("t", 102.0) == 0.5
    assert p.factor("t", 108.0) == 0.75  # halfway through the 10 s recovery
    assert p.factor("t", 113.0) == 1.0
    times = send_times(p, 3, now=103.0)
    assert times == [103.0, 103.2, 103.4]  # 5/s right after the pause


def test_only_the_first_429_of_a_pause_is_news() -> None:
    p = pacer(rpm=600)
    first = p.rate_limited("t", retry_after=3.0, now=100.0)
    echo = p.rate_limited("t", retry_after=3.0, now=100.1)  # an in-flight call bouncing too
    longer = p.rate_limited("t", retry_after=10.0, now=100.2)
    assert first is not None and echo is None
    assert longer is not None and longer.pause_until == 110.2 and longer.factor == 0.5  # not halved twice
    without_header = pacer().rate_limited("t", retry_after=None, now=50.0)
    assert without_header is not None and without_header.pause_until == 52.0  # default pause


def test_signal_from_another_replica_pauses_and_slows_this_one() -> None:
    here = pacer(rpm=600, origin="b")
    signal = PacingSignal(target="t", pause_until=105.0, factor=0.25, origin="a")
    signal = PacingSignal.model_validate_json(signal.model_dump_json())  # as it travels
    here.apply(signal, now=100.0)
    assert here.paused_for("t", 100.0) == 5.0
    assert here.factor("t", 105.0) == 0.25
    own = PacingSignal(target="t", pause_until=200.0, factor=0.1, origin="b")
    here.apply(own, now=100.0)  # its own echo changes nothing
    assert here.paused_for("t", 100.0) == 5.0
    stale = PacingSignal(target="t", pause_until=90.0, factor=0.1, origin="a")
    here.apply(stale, now=100.0)
    assert here.factor("t", 105.0) == 0.25


def test_estimate_counts_prompt_and_output_ceiling() -> None:
    messages = [ChatMessage(role="user", content="x" * 400)]
    assert estimate_tokens(messages, 50) == 100 + 4 + 50
    assert estimate_tokens(messages, None) == 100 + 4 + 256
