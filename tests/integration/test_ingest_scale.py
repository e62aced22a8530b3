"""Quotas with several ingest replicas and across restarts: state lives in Kafka, not in a pod."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airlock.client import AirlockClient
from airlock.core.models import ChatParams, CompletionReply, ErrorReply, Settlement, UsageRecord
from airlock.core.pricing import DEFAULT_PRICES
from airlock.devstack.mesh import readiness, wait_ready
from airlock.devstack.stack import LocalStack
from airlock.ingest.clients import Limits
from airlock.ingest.quota import (
    WINDOW_MS,
    Admission,
    AdmissionArbiter,
    AdmissionIntent,
    estimate_tokens,
    read_admission_record,
)
from tests.integration.kafka_reading import read_topic
from tests.integration.test_ingest import (
    MODEL,
    audit_events,
    edit_clients,
    first_refusal,
    unique,
    wait_reloaded,
)

pytestmark = pytest.mark.integration

LIMIT = 6
BURST = 24
#: The documented worst-case overshoot of requests per minute (DESIGN.md, ingest): none.
OVERSHOOT_BOUND = 0


async def admission_log(stack: LocalStack) -> list[tuple[AdmissionIntent | Settlement, int, Admission | None]]:
    """Replay the admission log as every replica does: each record, its log time, its decision."""
    arbiter = AdmissionArbiter()
    replayed = []
    for record in await read_topic(stack.kafka_settings, stack.topics.ingest_admissions):
        assert record.timestamp_type == 1, "admission log must be stamped by the broker (LogAppendTime)"
        entry = read_admission_record(record.value)
        replayed.append((entry, record.timestamp, arbiter.apply(entry, record.timestamp)))
    return replayed


async def admission_times(stack: LocalStack, tenant: str) -> list[int]:
    """When each of ``tenant``'s admitted requests was admitted (log time, ms)."""
    return [
        at
        for entry, at, decision in await admission_log(stack)
        if isinstance(entry, AdmissionIntent) and entry.tenant == tenant and decision and decision.admitted
    ]


def busiest_window(times: list[int]) -> int:
    """The most admissions in any 60 seconds."""
    return max((sum(1 for t in times if start <= t < start + WINDOW_MS) for start in times), default=0)


async def test_requests_per_minute_hold_across_three_ingest_replicas(stack: LocalStack, client: AirlockClient) -> None:
    assert stack.mesh is not None
    tenant = unique("burst")
    await edit_clients(stack, lambda file: file.with_tenant(tenant, Limits(requests_per_minute=LIMIT)))
    stack.mesh.start("ingest", 2)
    try:
        await wait_ready(stack.kafka_settings, stack.mesh, timeout_s=240)
        await wait_reloaded(stack)
        owners = [readiness(r) for r in stack.mesh.replicas["ingest"]]
        assert len(owners) == 3 and all(o and o["assigned"] for o in owners), owners

        requests = [client.build(f"Burst request {i}", tenant=tenant, model=MODEL) for i in range(BURST)]
        await asyncio.gather(*(client.publish(r) for r in requests))
        replies = await asyncio.gather(*(client.wait(r.request_id, timeout=180) for r in requests))

        admitted = [r for r in replies if isinstance(r, CompletionReply)]
        limited = [r for r in replies if isinstance(r, ErrorReply) and r.code == "rate_limited"]
        assert len(admitted) + len(limited) == BURST, [r for r in replies if r not in admitted + limited]
        times = await admission_times(stack, tenant)
        print(f"\nburst of {BURST}, limit {LIMIT}/min, 3 ingest replicas: most in any 60 s {busiest_window(times)}")
        assert busiest_window(times) <= LIMIT + OVERSHOOT_BOUND
        assert len(times) == len(admitted) >= LIMIT
        assert all(r.retry_after is not None and 0 < r.retry_after <= 60 for r in limited)
        events = await audit_events(stack, [r.request_id for r in requests])
        partitions = {e[0].details.source.split("/")[1] for e in events.values() if e and e[0].details.source}
        assert len(partitions) == 3, "the burst was spread over every replica's partitions"
        for refused in limited:
            [*_, last] = events[refused.request_id or ""]
            assert (last.to_state, last.details.error_code) == ("REJECTED", "rate_limited")
    finally:
        stack.mesh.scale("ingest", 1)
        await wait_ready(stack.kafka_settings, stack.mesh, timeout_s=240)


async def test_budgets_and_duplicates_survive_an_ingest_restart(stack: LocalStack, client: AirlockClient) -> None:
    assert stack.mesh is not None
    tenant = unique("restart")
    await edit_clients(stack, lambda file: file.with_tenant(tenant, Limits(tokens_per_day=100)))
    # One request larger than the whole budget is admitted alone; its spend closes the day.
    spent = await client.ask(client.build("Spend it all. " + "x" * 400, tenant=tenant, model=MODEL), timeout=90)
    assert isinstance(spent, CompletionReply) and spent.usage.total_tokens > 100
    before = await first_refusal(client, tenant)
    accepted = await client.ask(client.build("Remember me", tenant="acme", model=MODEL), timeout=90)
    assert before.code == "token_quota_exceeded" and isinstance(accepted, CompletionReply)

    stack.mesh.kill("ingest")
    stack.mesh.start("ingest", 1)
    await wait_ready(stack.kafka_settings, stack.mesh, timeout_s=240)

    after = await client.ask(client.build("And now?", tenant=tenant, model=MODEL), timeout=120)
    assert isinstance(after, ErrorReply) and after.code == "token_quota_exceeded", after
    duplicate = client.build("Remember me", tenant="acme", model=MODEL, request_id=accepted.request_id)
    again = await client.ask(duplicate, timeout=120)
    assert isinstance(again, ErrorReply) and again.code == "duplicate_request", again
    assert again.duplicate_of == accepted.airlock_id


#: Budgets under concurrency (issue 17): a burst far beyond the budget, two ingest replicas.
BUDGET_TOKENS = 2_000
BUDGET_COST_USD = 0.0002
PROBE = "Budget probe {n}: " + "lorem ipsum " * 16
PROBE_MAX_TOKENS = 96


async def spent_by(stack: LocalStack, tenant: str) -> tuple[int, float, int]:
    """``(tokens, cost, requests)`` of ``tenant`` on the usage topic (what the llm-worker metered)."""
    records = [
        UsageRecord.model_validate_json(r.value) for r in await read_topic(stack.kafka_settings, stack.topics.usage)
    ]
    mine = [r for r in records if r.tenant == tenant]
    return sum(r.usage.total_tokens for r in mine), sum(r.cost_usd for r in mine), len(mine)


async def test_budgets_hold_under_concurrent_bursts_across_two_ingest_replicas(
    stack: LocalStack, client: AirlockClient
) -> None:
    """Spend stays within the limit plus one request's maximum, with 40 and 200 requests at once."""
    assert stack.mesh is not None
    bursts = {unique("tokens40"): 40, unique("tokens200"): 200, unique("cost40"): 40}
    tokens_tenants, cost_tenant = list(bursts)[:2], list(bursts)[2]

    def budgets(file: Any) -> Any:
        for tenant in tokens_tenants:
            file = file.with_tenant(tenant, Limits(tokens_per_day=BUDGET_TOKENS))
        return file.with_tenant(cost_tenant, Limits(cost_per_month_usd=BUDGET_COST_USD))

    await edit_clients(stack, budgets)
    stack.mesh.start("ingest", 1)
    try:
        await wait_ready(stack.kafka_settings, stack.mesh, timeout_s=240)
        await wait_reloaded(stack)
        params = ChatParams(max_tokens=PROBE_MAX_TOKENS)
        requests = [
            client.build(PROBE.format(n=n), tenant=tenant, model=MODEL, params=params)
            for tenant, count in bursts.items()
            for n in range(count)
        ]
        await asyncio.gather(*(client.publish(r) for r in requests))
        replies = await asyncio.gather(*(client.wait(r.request_id, timeout=240) for r in requests))
        by_tenant = {r.request_id: request.tenant for r, request in zip(replies, requests, strict=True)}
        assert all(r is not None for r in replies), "every request was answered"
        refused = [r for r in replies if isinstance(r, ErrorReply)]
        assert {r.code for r in refused} <= {"token_quota_exceeded", "budget_exceeded"}, {r.code for r in refused}

        largest = estimate_tokens(len(PROBE.format(n=999).encode()), 1, PROBE_MAX_TOKENS)
        price = DEFAULT_PRICES.models[MODEL]
        largest_cost = (largest * max(price.input_per_million, price.output_per_million)) / 1_000_000
        for tenant, count in bursts.items():
            tokens, cost, completed = await spent_by(stack, tenant)
            answered = sum(1 for r in replies if isinstance(r, CompletionReply) and by_tenant[r.request_id] == tenant)
            print(f"\n{count} at once, 2 ingest replicas: {completed} completed, {tokens} tokens, ${cost:.6f}")
            assert completed == answered >= 1 and completed < count
            if tenant in tokens_tenants:
                assert tokens <= BUDGET_TOKENS + largest, (tenant, tokens)
            else:
                assert cost <= BUDGET_COST_USD + largest_cost, (tenant, cost)
        events = await audit_events(stack, [r.request_id for r in requests])
        partitions = {e[0].details.source.split("/")[1] for e in events.values() if e and e[0].details.source}
        assert len(partitions) > 1, "the bursts were spread over both replicas' partitions"
        settled = {e.airlock_id for e, _, _ in await admission_log(stack) if isinstance(e, Settlement)}
        assert {r.airlock_id for r in replies if isinstance(r, CompletionReply)} <= settled
    finally:
        stack.mesh.scale("ingest", 1)
        await wait_ready(stack.kafka_settings, stack.mesh, timeout_s=240)
