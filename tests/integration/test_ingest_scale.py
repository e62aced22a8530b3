"""Quotas with several ingest replicas and across restarts: state lives in Kafka, not in a pod."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from airlock.client import AirlockClient
from airlock.core.models import CompletionReply, ErrorReply
from airlock.devstack.mesh import readiness, wait_ready
from airlock.devstack.stack import LocalStack
from airlock.ingest.clients import Limits
from airlock.ingest.quota import AdmissionIntent, RateArbiter
from tests.integration.kafka_reading import read_topic
from tests.integration.test_ingest import (
    MODEL,
    audit_events,
    edit_clients,
    first_refusal,
    publish_usage,
    unique,
    wait_reloaded,
)

pytestmark = pytest.mark.integration

LIMIT = 6
BURST = 24
#: The documented worst-case overshoot of requests per minute (DESIGN.md, ingest): none.
OVERSHOOT_BOUND = 0


async def admitted_per_minute(stack: LocalStack, tenant: str) -> Counter[int]:
    """Replay the admission log as every replica does; count admissions of ``tenant`` per minute."""
    arbiter = RateArbiter()
    per_minute: Counter[int] = Counter()
    for record in await read_topic(stack.kafka_settings, stack.topics.ingest_admissions):
        assert record.timestamp_type == 1, "admission log must be stamped by the broker (LogAppendTime)"
        intent = AdmissionIntent.model_validate_json(record.value)
        decision = arbiter.apply(intent, record.timestamp)
        if intent.tenant == tenant and decision.admitted:
            per_minute[decision.minute] += 1
    return per_minute


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
        per_minute = await admitted_per_minute(stack, tenant)
        print(f"\nburst of {BURST}, limit {LIMIT}/min, 3 ingest replicas: admitted per minute {dict(per_minute)}")
        assert per_minute and all(count <= LIMIT + OVERSHOOT_BOUND for count in per_minute.values())
        assert sum(per_minute.values()) == len(admitted)
        assert LIMIT <= len(admitted) <= LIMIT * len(per_minute)
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
    await publish_usage(stack, tenant, tokens=100, cost=0.0)
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
