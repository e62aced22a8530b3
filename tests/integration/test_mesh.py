"""The four stages end to end on the real broker, the fake OpenAI server and real Presidio."""

from __future__ import annotations

import json
import uuid

import pytest

from airlock.auditor.reader import read_ledger
from airlock.auditor.replay import replay
from airlock.client import AirlockClient
from airlock.core import headers as h
from airlock.core.lifecycle import State
from airlock.core.models import CompletionReply, ErrorReply
from airlock.devstack.ledger import wait_for_timeline
from airlock.devstack.stack import LocalStack
from tests.integration.kafka_reading import header, read_topic
from tests.integration.markers import unmasked_marker

pytestmark = pytest.mark.integration

NAME, EMAIL, PHONE = "Jane Roe", "jane.roe@example.com", "+1 415 555 0134"
FULL_LIFECYCLE = [State.RECEIVED, State.ACCEPTED, State.REDACTED, State.COMPLETED, State.DELIVERED]


def pii_prompt(marker: str) -> str:
    return f"Hi, I am {NAME}. Mail me at {EMAIL} or call {PHONE}. Reference {marker}. Thanks, {NAME}"


async def test_pii_request_gets_restored_answer_and_model_sees_no_pii(stack: LocalStack, client: AirlockClient) -> None:
    marker = unmasked_marker(pii_prompt)
    request = client.build(pii_prompt(marker), tenant="acme", model="gpt-4o-mini")

    reply = await client.ask(request, timeout=60)

    assert isinstance(reply, CompletionReply), reply
    assert reply.request_id == request.request_id
    assert NAME in reply.content and EMAIL in reply.content and PHONE in reply.content
    assert reply.content.count(NAME) == 2
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert stack.fake is not None
    seen = [body for body in stack.fake.received() if marker in json.dumps(body)]
    assert len(seen) == 1, f"the model should be called exactly once: {stack.fake.received()[-3:]}"
    sent = json.dumps(seen[0])
    for value in (NAME, "Jane", "Roe", EMAIL, PHONE):
        assert value not in sent
    assert sent.count("<PERSON_1>") == 2 and "<EMAIL_ADDRESS_1>" in sent and "<PHONE_NUMBER_1>" in sent


async def test_ledger_holds_full_lifecycle_with_intact_chain(stack: LocalStack, client: AirlockClient) -> None:
    request = client.build(pii_prompt("lifecycle"), tenant="acme", model="gpt-4o-mini")
    assert isinstance(await client.ask(request, timeout=60), CompletionReply)

    timelines = await wait_for_timeline(stack.kafka_settings, request.request_id)

    assert len(timelines) == 1
    assert timelines[0].states == FULL_LIFECYCLE
    stages = [event["stage"] for event in timelines[0].events]
    assert stages == ["ingest", "ingest", "redactor", "llm-worker", "redactor"]
    ledger = await read_ledger(stack.kafka_settings, stack.topics.ledger)
    report = replay({p: [v for _, v in records] for p, records in ledger.items()})
    assert report.records > 0
    assert report.ok, report.findings
    assert report.valid == report.records


async def _dead_letter_for(stack: LocalStack, request_id: str) -> list:
    records = await read_topic(stack.kafka_settings, stack.topics.dlq)
    return [r for r in records if header(r, h.REQUEST_ID) == request_id]


async def test_malformed_bytes_end_in_dlq_with_error_reply_and_pipeline_continues(
    stack: LocalStack, client: AirlockClient
) -> None:
    request_id = f"bad-{uuid.uuid4().hex[:8]}"
    garbage = b"\xff\xfe this is {not json"

    await client.publish_raw(garbage, request_id=request_id, reply_to=client.reply_to)
    reply = await client.wait(request_id, timeout=60)

    assert isinstance(reply, ErrorReply)
    assert reply.code == "malformed" and reply.stage == "ingest"
    dead = await _dead_letter_for(stack, request_id)
    assert len(dead) == 1
    assert stack.dead_letters().open(dead[0].value, dead[0].headers).value == garbage
    assert garbage not in dead[0].value, "a dead letter's body is sealed"
    assert header(dead[0], h.ERROR_CODE) == "malformed"
    assert "UTF-8" in (header(dead[0], h.DLQ_REASON) or "")
    assert header(dead[0], h.DLQ_SOURCE).startswith(stack.topics.requests + "/")
    timelines = await wait_for_timeline(stack.kafka_settings, request_id)
    assert [t.states for t in timelines] == [[State.RECEIVED, State.REJECTED]]
    assert timelines[0].events[-1]["details"]["error_code"] == "malformed"

    follow_up = client.build("What is the capital of France?", tenant="acme", model="gpt-4o-mini")
    assert isinstance(await client.ask(follow_up, timeout=60), CompletionReply)


async def test_schema_invalid_request_ends_in_dlq_with_error_reply(stack: LocalStack, client: AirlockClient) -> None:
    request_id = f"invalid-{uuid.uuid4().hex[:8]}"
    document = {
        "request_id": request_id,
        "reply_to": client.reply_to,
        "tenant": "acme",
        "messages": "not a list",
    }
    raw = json.dumps(document).encode()

    client.expect(request_id)
    await client.publish_raw(raw)  # no headers: ingest finds the addressing in the body
    reply = await client.wait(request_id, timeout=60)

    assert isinstance(reply, ErrorReply)
    assert reply.code == "schema_invalid"
    assert "messages" in reply.message and "client_id" in reply.message
    matching = await _dead_letter_for(stack, request_id)
    assert [stack.dead_letters().open(r.value, r.headers).value for r in matching] == [raw]
    assert len(matching) == 1 and header(matching[0], h.ERROR_CODE) == "schema_invalid"
    timelines = await wait_for_timeline(stack.kafka_settings, request_id)
    assert [t.states for t in timelines] == [[State.RECEIVED, State.REJECTED]]


async def test_no_raw_pii_in_audit_topic_or_ledger(stack: LocalStack, client: AirlockClient) -> None:
    request = client.build(pii_prompt("audit-scan"), tenant="acme", model="gpt-4o-mini")
    assert isinstance(await client.ask(request, timeout=60), CompletionReply)
    await wait_for_timeline(stack.kafka_settings, request.request_id)

    for topic in (stack.topics.audit, stack.topics.ledger):
        records = await read_topic(stack.kafka_settings, topic)
        assert records, f"{topic} is empty"
        blob = b"\n".join(r.value for r in records).decode()
        for value in (NAME, EMAIL, PHONE, "Roe"):
            assert value not in blob, f"{value!r} leaked into {topic}"
