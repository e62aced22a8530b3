"""Rate arbitration over the admission log, usage books and budget windows (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from airlock.core.errors import ErrorCode, StageError
from airlock.core.models import Usage, UsageRecord
from airlock.ingest.clients import Limits
from airlock.ingest.quota import (
    MINUTE_MS,
    AdmissionIntent,
    RateArbiter,
    UsageBook,
    check_budgets,
    next_midnight,
    next_month_start,
    rate_refusal,
)

T0 = 1_748_779_200_000  # 2025-06-01T12:00:00Z, a minute boundary


def intent(n: int, tenant: str = "acme", client: str = "billing", rpm: int | None = 3, crpm: int | None = None):
    return AdmissionIntent(airlock_id=f"a-{n}", tenant=tenant, client_id=client, tenant_rpm=rpm, client_rpm=crpm)


def test_first_limit_intents_of_a_minute_win() -> None:
    arbiter = RateArbiter()
    decisions = [arbiter.apply(intent(n), T0 + n * 100) for n in range(5)]
    assert [d.admitted for d in decisions] == [True, True, True, False, False]
    assert decisions[3].retry_after == pytest.approx(59.7) and decisions[3].scope == "tenant"
    assert arbiter.apply(intent(9), T0 + MINUTE_MS).admitted, "a new minute starts a new count"


def test_every_reader_of_the_same_log_decides_alike() -> None:
    """Three replicas read one log (interleaved writers, limits per intent): same decisions."""
    rng = random.Random(7)
    log = [
        (
            intent(n, tenant=rng.choice(["acme", "globex"]), client=rng.choice(["a", "b"]), rpm=rng.choice([2, 5])),
            T0 + n * 2_000,
        )
        for n in range(120)
    ]
    readers = [RateArbiter() for _ in range(3)]
    outcomes = [[reader.apply(i, t) for i, t in log] for reader in readers]
    assert outcomes[0] == outcomes[1] == outcomes[2]
    per_minute: dict[tuple[int, str], int] = {}
    for (item, _), decision in zip(log, outcomes[0], strict=True):
        if decision.admitted:
            per_minute[decision.minute, item.tenant] = per_minute.get((decision.minute, item.tenant), 0) + 1
    assert per_minute and all(count <= 5 for count in per_minute.values())


def test_a_re_sent_intent_gets_its_first_decision_and_is_counted_once() -> None:
    arbiter = RateArbiter()
    first = arbiter.apply(intent(1, rpm=1), T0)
    again = arbiter.apply(intent(1, rpm=1), T0 + 10)
    assert first == again and first.admitted
    assert arbiter.apply(intent(2, rpm=1), T0 + 20).admitted is False
    assert arbiter.apply(intent(1, rpm=1), T0 + MINUTE_MS + 5).admitted, "remembered into the next minute"


def test_client_limit_counts_across_tenants() -> None:
    arbiter = RateArbiter()
    first = arbiter.apply(intent(1, tenant="acme", rpm=None, crpm=1), T0)
    second = arbiter.apply(intent(2, tenant="globex", rpm=None, crpm=1), T0 + 1)
    assert first.admitted and not second.admitted and second.scope == "client"
    error = rate_refusal(second, intent(2, tenant="globex", rpm=None, crpm=1))
    assert error.code == ErrorCode.RATE_LIMITED and "client 'billing'" in error.message and error.retry_after


def test_time_never_runs_backwards() -> None:
    arbiter = RateArbiter()
    arbiter.apply(intent(1, rpm=1), T0 + MINUTE_MS)
    late = arbiter.apply(intent(2, rpm=1), T0 + MINUTE_MS - 1)
    assert not late.admitted, "a stamp from the previous minute counts in the current one"


def test_admitted_counts_for_reports() -> None:
    arbiter = RateArbiter()
    for n in range(2):
        arbiter.apply(intent(n), T0 + n)
    now = datetime.fromtimestamp((T0 + 1000) / 1000, UTC)
    assert arbiter.admitted("tenant", "acme", now) == 2
    assert arbiter.admitted("tenant", "acme", datetime.fromtimestamp((T0 + MINUTE_MS) / 1000, UTC)) == 0


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


def test_budget_checks_name_the_scope_and_retry_after_the_window() -> None:
    book = UsageBook()
    book.add(record("acme", 100, 1.0))
    with pytest.raises(StageError) as caught:
        check_budgets(
            book,
            tenant="acme",
            tenant_limits=Limits(tokens_per_day=100),
            client_id="billing",
            client_limits=Limits(),
            now=NOW,
        )
    assert caught.value.code == ErrorCode.TOKEN_QUOTA_EXCEEDED and caught.value.retry_after == 60
    with pytest.raises(StageError) as caught:
        check_budgets(
            book,
            tenant="acme",
            tenant_limits=Limits(),
            client_id="billing",
            client_limits=Limits(cost_per_month_usd=1.0),
            now=NOW,
        )
    assert caught.value.code == ErrorCode.BUDGET_EXCEEDED and "client 'billing'" in caught.value.message
    assert caught.value.retry_after == 60
    check_budgets(
        book,
        tenant="acme",
        tenant_limits=Limits(tokens_per_day=101, cost_per_month_usd=1.01),
        client_id="billing",
        client_limits=Limits(),
        now=NOW,
    )


def test_window_edges() -> None:
    assert next_midnight(NOW) == datetime(2025, 7, 1, tzinfo=UTC)
    assert next_month_start(datetime(2025, 12, 31, 23, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
