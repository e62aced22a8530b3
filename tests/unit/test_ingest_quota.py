"""Admission over the log (windows, in-flight caps, reservations), usage books, windows (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.core.errors import ErrorCode
from airlock.core.models import Settlement, Usage, UsageRecord
from airlock.ingest.clients import Limits
from airlock.ingest.quota import (
    LAPSE_GRACE_MS,
    WINDOW_MS,
    AdmissionArbiter,
    AdmissionIntent,
    UsageBook,
    estimate_tokens,
    next_midnight,
    next_month_start,
    read_admission_record,
)

T0 = 1_748_779_200_000  # 2025-06-01T12:00:00Z, a minute boundary
DEADLINE_MS = T0 + 300_000


def intent(
    n: int,
    tenant: str = "acme",
    client: str = "billing",
    rpm: int | None = 3,
    crpm: int | None = None,
    *,
    tenant_limits: Limits | None = None,
    client_limits: Limits | None = None,
    tokens: int = 0,
    cost: float = 0.0,
) -> AdmissionIntent:
    return AdmissionIntent(
        airlock_id=f"a-{n}",
        tenant=tenant,
        client_id=client,
        tenant_limits=tenant_limits or Limits(requests_per_minute=rpm),
        client_limits=client_limits or Limits(requests_per_minute=crpm),
        tokens=tokens,
        cost_usd=cost,
        deadline_ms=DEADLINE_MS,
    )


def settled(n: int, tokens: int = 0, cost: float = 0.0, tenant: str = "acme", client: str = "billing") -> Settlement:
    return Settlement(airlock_id=f"a-{n}", tenant=tenant, client_id=client, total_tokens=tokens, cost_usd=cost)


def test_first_limit_intents_of_a_window_win() -> None:
    arbiter = AdmissionArbiter()
    decisions = [arbiter.apply(intent(n), T0 + n * 100) for n in range(5)]
    assert [d.admitted for d in decisions if d] == [True, True, True, False, False]
    refused = decisions[3]
    assert refused is not None and refused.code == ErrorCode.RATE_LIMITED
    assert refused.retry_after == pytest.approx(59.7) and "tenant 'acme'" in refused.reason
    admitted = arbiter.apply(intent(9), T0 + WINDOW_MS)
    assert admitted is not None and admitted.admitted, "the first admission left the window"


def test_a_minute_boundary_lets_no_second_burst_through() -> None:
    """Calendar minutes admitted 2x the limit across a boundary; the window does not."""
    arbiter = AdmissionArbiter()
    before = [arbiter.apply(intent(n), T0 + 59_000 + n) for n in range(3)]
    after = [arbiter.apply(intent(10 + n), T0 + 60_500 + n) for n in range(3)]
    assert all(d and d.admitted for d in before) and not any(d and d.admitted for d in after)


@settings(max_examples=50, deadline=None)
@given(gaps=st.lists(st.integers(0, 30_000), min_size=1, max_size=80), limit=st.integers(1, 6))
def test_any_sixty_seconds_hold_at_most_the_limit(gaps: list[int], limit: int) -> None:
    arbiter = AdmissionArbiter()
    at, admitted = T0, []
    for n, gap in enumerate(gaps):
        at += gap
        decision = arbiter.apply(intent(n, rpm=limit), at)
        if decision and decision.admitted:
            admitted.append(at)
    assert all(sum(1 for t in admitted if start <= t < start + WINDOW_MS) <= limit for start in admitted)


def test_every_reader_of_the_same_log_decides_alike() -> None:
    """Three replicas read one log (interleaved writers, limits per intent, settlements): same decisions."""
    rng = random.Random(7)
    log: list[tuple[AdmissionIntent | Settlement, int]] = []
    for n in range(120):
        limits = Limits(requests_per_minute=rng.choice([2, 5]), tokens_per_day=2_000, max_in_flight=3)
        tenant, client = rng.choice(["acme", "globex"]), rng.choice(["a", "b"])
        log.append((intent(n, tenant, client, tenant_limits=limits, tokens=300), T0 + n * 2_000))
        if rng.random() < 0.6:
            log.append(
                (settled(n - rng.randint(0, 3), rng.randint(0, 300), tenant=tenant, client=client), T0 + n * 2_000)
            )
    readers = [AdmissionArbiter() for _ in range(3)]
    outcomes = [[reader.apply(i, t) for i, t in log] for reader in readers]
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert any(d and d.admitted for d in outcomes[0]) and any(d and not d.admitted for d in outcomes[0])


def test_a_re_sent_intent_gets_its_first_decision_and_is_counted_once() -> None:
    arbiter = AdmissionArbiter()
    first = arbiter.apply(intent(1, rpm=1), T0)
    again = arbiter.apply(intent(1, rpm=1), T0 + 10)
    assert first == again and first is not None and first.admitted
    second = arbiter.apply(intent(2, rpm=1), T0 + 20)
    assert second is not None and not second.admitted
    assert arbiter.apply(intent(1, rpm=1), T0 + WINDOW_MS + 5) == first, "remembered past the window"


def test_client_limit_counts_across_tenants() -> None:
    arbiter = AdmissionArbiter()
    first = arbiter.apply(intent(1, tenant="acme", rpm=None, crpm=1), T0)
    second = arbiter.apply(intent(2, tenant="globex", rpm=None, crpm=1), T0 + 1)
    assert first is not None and first.admitted and second is not None and not second.admitted
    error = second.refusal()
    assert error.code == ErrorCode.RATE_LIMITED and "client 'billing'" in error.message and error.retry_after


def test_time_never_runs_backwards() -> None:
    arbiter = AdmissionArbiter()
    arbiter.apply(intent(1, rpm=1), T0 + WINDOW_MS)
    late = arbiter.apply(intent(2, rpm=1), T0 + WINDOW_MS - 1)
    assert late is not None and not late.admitted, "an earlier stamp counts at the log's current time"


def test_in_flight_requests_are_capped_until_they_settle() -> None:
    arbiter = AdmissionArbiter()
    capped = Limits(max_in_flight=2)
    decisions = [arbiter.apply(intent(n, tenant_limits=capped), T0 + n) for n in range(3)]
    assert [d and d.admitted for d in decisions] == [True, True, False]
    third = decisions[2]
    assert third is not None and third.code == ErrorCode.RATE_LIMITED and "2 requests in flight" in third.reason
    assert arbiter.in_flight("tenant", "acme") == 2
    arbiter.apply(settled(0, 10), T0 + 10)
    retried = arbiter.apply(intent(3, tenant_limits=capped), T0 + 11)
    assert retried is not None and retried.admitted


def test_estimates_are_reserved_and_settled_by_the_actual_spend() -> None:
    arbiter = AdmissionArbiter()
    budget = Limits(tokens_per_day=1_000)
    first, second, third = (arbiter.apply(intent(n, tenant_limits=budget, tokens=400), T0 + n) for n in range(3))
    assert first and first.admitted and second and second.admitted
    assert third is not None and not third.admitted and third.code == ErrorCode.TOKEN_QUOTA_EXCEEDED
    assert third.retry_after == 1.0 and "800 reserved" in third.reason
    arbiter.apply(settled(0, tokens=100), T0 + 10)  # 100 spent + 400 reserved + 400 asked ≤ 1,000
    retried = arbiter.apply(intent(3, tenant_limits=budget, tokens=400), T0 + 11)
    assert retried is not None and retried.admitted and arbiter.tokens_today("tenant", "acme") == 100


def test_a_request_larger_than_the_rest_of_the_budget_goes_alone() -> None:
    arbiter = AdmissionArbiter()
    budget = Limits(cost_per_month_usd=0.01)
    alone = arbiter.apply(intent(1, tenant_limits=budget, cost=0.05), T0)
    other = arbiter.apply(intent(2, tenant_limits=budget, cost=0.05), T0 + 1)
    assert alone and alone.admitted and other is not None and other.code == ErrorCode.BUDGET_EXCEEDED
    arbiter.apply(settled(1, cost=0.04), T0 + 2)
    spent = arbiter.apply(intent(3, tenant_limits=budget, cost=0.05), T0 + 3)
    assert spent is not None and spent.code == ErrorCode.BUDGET_EXCEEDED and "spent $0.0400" in spent.reason
    assert spent.retry_after == pytest.approx(
        (next_month_start(datetime.fromtimestamp(T0 / 1000, UTC)).timestamp() * 1000 - T0 - 3) / 1000
    )


def test_a_reservation_that_never_settles_lapses_after_its_deadline() -> None:
    arbiter = AdmissionArbiter()
    capped = Limits(max_in_flight=1)
    arbiter.apply(intent(1, tenant_limits=capped), T0)  # refused later by the redactor: no settlement
    blocked = arbiter.apply(intent(2, tenant_limits=capped), DEADLINE_MS + LAPSE_GRACE_MS - 1)
    freed = arbiter.apply(intent(3, tenant_limits=capped), DEADLINE_MS + LAPSE_GRACE_MS)
    assert blocked is not None and not blocked.admitted and freed is not None and freed.admitted


def test_spend_of_requests_admitted_without_a_limit_counts_too() -> None:
    arbiter = AdmissionArbiter()
    arbiter.apply(settled(1, tokens=150), T0)
    refused = arbiter.apply(intent(2, tenant_limits=Limits(tokens_per_day=100)), T0 + 1)
    assert refused is not None and refused.code == ErrorCode.TOKEN_QUOTA_EXCEEDED
    assert refused.retry_after == pytest.approx(12 * 3600 - 0.001)
    tomorrow = arbiter.apply(intent(3, tenant_limits=Limits(tokens_per_day=100)), T0 + 12 * 3600 * 1000)
    assert tomorrow is not None and tomorrow.admitted, "yesterday's tokens do not count today"


@st.composite
def concurrent_traffic(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, int]]]:
    """Requests arriving from two replicas at once, settling in any order, each within its estimate."""
    limit = draw(st.integers(100, 5_000))
    count = draw(st.integers(1, 200))
    estimates = [draw(st.integers(1, 1_500)) for _ in range(count)]
    events = [("intent", n, estimates[n]) for n in range(count)]
    actuals = {n: draw(st.integers(0, estimates[n])) for n in range(count)}
    order: list[tuple[str, int, int]] = []
    pending: list[int] = []
    for kind, n, estimate in events:
        order.append((kind, n, estimate))
        pending.append(n)
        while pending and draw(st.booleans()):
            done = pending.pop(draw(st.integers(0, len(pending) - 1)))
            order.append(("settle", done, actuals[done]))
    order.extend(("settle", n, actuals[n]) for n in pending)
    return limit, order


@settings(max_examples=100, deadline=None)
@given(traffic=concurrent_traffic())
def test_spend_never_passes_the_limit_by_more_than_one_request(traffic: tuple[int, list[tuple[str, int, int]]]) -> None:
    limit, order = traffic
    arbiter = AdmissionArbiter()
    budget = Limits(tokens_per_day=limit)
    admitted: set[int] = set()
    largest = 0
    for step, (kind, n, amount) in enumerate(order):
        if kind == "intent":
            decision = arbiter.apply(intent(n, tenant_limits=budget, tokens=amount), T0 + step)
            if decision and decision.admitted:
                admitted.add(n)
                largest = max(largest, amount)
        elif n in admitted:  # a refused request never reaches the model: nothing to settle
            arbiter.apply(settled(n, tokens=amount), T0 + step)
    assert arbiter.in_flight("tenant", "acme") == 0
    assert arbiter.tokens_today("tenant", "acme") <= limit + largest
    assert admitted, "the first request is always admitted"


def test_admission_records_are_told_apart_and_bad_ones_refused() -> None:
    assert isinstance(read_admission_record(intent(1).to_bytes()), AdmissionIntent)
    assert isinstance(read_admission_record(settled(1, 5).to_bytes()), Settlement)
    for bad in (b"[" * 10_000, b'{"kind": "settlement", "total_tokens": -5}', b'{"kind": "x"}', b"\xff", b"3"):
        with pytest.raises(ValueError, match=r"not JSON|invalid|kind"):
            read_admission_record(bad)


@pytest.mark.parametrize("text", ["hello", "ünïcödé ✓", "1234567890" * 20, "a b c d e f g"])
def test_the_estimate_bounds_the_prompt_tokens_from_above(text: str) -> None:
    """A BPE token holds at least a byte; the fake model counts four characters a token."""
    from airlock.devstack.fake_openai import count_tokens

    estimate = estimate_tokens(len(text.encode()), 1, max_tokens=0)
    assert estimate >= len(text.encode()) >= count_tokens(text)


NOW = datetime(2025, 6, 30, 23, 59, 0, tzinfo=UTC)


def record(tenant: str, tokens: int, cost: float, at: datetime = NOW, client: str = "billing") -> UsageRecord:
    return UsageRecord(
        airlock_id="x",
        request_id="r",
        client_id=client,
        tenant=tenant,
        use_case="default",
        model="m",
        served_model="m",
        usage=Usage(input_tokens=tokens, output_tokens=0),
        cost_usd=cost,
        at=at,
    )


def test_usage_book_sums_per_day_and_month_per_tenant_and_client() -> None:
    book = UsageBook()
    book.add(record("acme", 10, 0.1))
    book.add(record("acme", 5, 0.2, client="crm"))
    book.add(record("acme", 7, 0.3, at=datetime(2025, 6, 29, 12, tzinfo=UTC)))
    book.add(record("acme", 100, 9.0, at=datetime(2025, 5, 31, 23, tzinfo=UTC)))
    assert book.tokens_today("tenant", "acme", NOW) == 15
    assert book.tokens_today("client", "crm", NOW) == 5
    assert book.requests_today("tenant", "acme", NOW) == 2
    assert book.cost_this_month("tenant", "acme", NOW) == pytest.approx(0.6)
    book.prune(NOW)
    assert book.cost_this_month("tenant", "acme", datetime(2025, 5, 31, 23, 30, tzinfo=UTC)) == 0


def test_window_edges() -> None:
    assert next_midnight(NOW) == datetime(2025, 7, 1, tzinfo=UTC)
    assert next_month_start(datetime(2025, 12, 31, 23, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
