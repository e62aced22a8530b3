"""The llm-worker's contract seen from a caller, through all four stages of the session stack."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from airlock.client import AirlockClient
from airlock.core.lifecycle import State
from airlock.core.models import CompletionReply, ErrorReply, UsageRecord
from airlock.devstack.ledger import wait_for_timeline
from airlock.devstack.stack import LocalStack
from tests.integration.kafka_reading import read_topic

pytestmark = pytest.mark.integration


async def usage_records(stack: LocalStack, airlock_id: str) -> list[UsageRecord]:
    records = await read_topic(stack.kafka_settings, stack.topics.usage)
    found = [UsageRecord.model_validate_json(r.value) for r in records]
    return [u for u in found if u.airlock_id == airlock_id]


async def test_cut_short_answer_reaches_the_caller_flagged_and_is_metered_once(
    stack: LocalStack, client: AirlockClient
) -> None:
    request = client.build(f"tell me everything {uuid.uuid4().hex} [[fake:length]]", tenant="acme", model="gpt-4o-mini")
    reply = await client.ask(request, timeout=60)

    assert isinstance(reply, CompletionReply), reply
    assert reply.finish_reason == "length" and reply.complete is False
    [timeline] = await wait_for_timeline(stack.kafka_settings, request.request_id)
    assert timeline.states[-2:] == [State.COMPLETED, State.DELIVERED]
    completed = next(e for e in timeline.events if e["to_state"] == "COMPLETED")
    assert completed["details"]["finish_reason"] == "length" and completed["details"]["complete"] is False
    await asyncio.sleep(1.0)
    [usage] = await usage_records(stack, reply.airlock_id)
    assert usage.tenant == "acme" and usage.request_id == request.request_id
    assert usage.usage == reply.usage and usage.cost_usd > 0
    assert completed["details"]["cost_usd"] == usage.cost_usd


async def test_unapproved_model_gets_a_structured_refusal(stack: LocalStack, client: AirlockClient) -> None:
    request = client.build("hello", tenant="acme", model="gpt-unapproved")
    reply = await client.ask(request, timeout=60)

    assert isinstance(reply, ErrorReply), reply
    assert (reply.code, reply.stage) == ("model_not_allowed", "llm-worker")
    [timeline] = await wait_for_timeline(stack.kafka_settings, request.request_id)
    assert timeline.states[-1] == State.FAILED
