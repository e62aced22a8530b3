"""One hostile request harms no one else: the attacks of issue 17 against the running mesh.

Each attack but the flood comes from an authenticated client with a valid signature, through
the real broker, the real ingest and the rest of the mesh. Contained means: the attacker's record
ends refused, with its own error and dead letter, and innocent requests — sent in the same
moment, to the same request partition — are answered as if nothing happened.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from airlock.client import AirlockClient
from airlock.core import headers as h
from airlock.core.models import AuditEvent, CompletionReply, ErrorReply
from airlock.devstack.stack import LocalStack
from tests.integration.kafka_reading import header, read_topic
from tests.integration.test_ingest import add_client, document, wait_noticed, wait_rejected

pytestmark = pytest.mark.integration

MODEL = "gpt-4o-mini"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("poison", ["nested", "lone-surrogate"])
async def test_a_poison_request_is_refused_alone_and_the_innocent_are_answered(
    stack: LocalStack, client: AirlockClient, poison: str
) -> None:
    attacker_id = unique("attacker")
    credentials = await add_client(stack, attacker_id)
    async with stack.client(attacker_id, credentials=credentials) as attacker:
        rid = unique("poison")
        if poison == "nested":
            body = b"[" * 50_000
        else:
            body = json.dumps(document(attacker, rid, messages=[{"role": "user", "content": "hi \ud800"}])).encode()
        innocent = [client.build(f"What is {n} plus {n}?", tenant="acme", model=MODEL) for n in range(3)]
        await attacker.publish_raw(body, request_id=rid)
        answers = await asyncio.gather(*(client.ask(request, timeout=90) for request in innocent))
        refusal = await attacker.wait(rid, timeout=60)

    assert all(isinstance(answer, CompletionReply) for answer in answers), answers
    assert isinstance(refusal, ErrorReply) and refusal.code == "malformed"
    assert (await wait_rejected(stack, [rid]))[rid].details.error_code == "malformed"


async def test_a_reply_topic_that_does_not_exist_is_refused_and_wedges_nothing(stack: LocalStack) -> None:
    """A glob grant lets a client name any reply topic under its prefix, existing or not."""
    client_id = unique("globber")
    credentials = await add_client(stack, client_id, reply_topics=[stack.topics.responses + ".*"])
    async with stack.client(client_id, credentials=credentials) as globber:
        rid = unique("nowhere")
        missing = f"{stack.topics.responses}.{unique('missing')}"
        await globber.publish_raw(json.dumps(document(globber, rid, reply_to=missing)).encode())
        refusal = await globber.wait(rid, timeout=60)
        # The same client, so the same request partition as the refused one (by client and id).
        follow_up = await globber.ask(globber.build("Still there?", tenant="acme", model=MODEL), timeout=90)

    assert isinstance(refusal, ErrorReply) and refusal.code == "reply_topic_not_allowed"
    assert "does not exist" in refusal.message
    assert isinstance(follow_up, CompletionReply), follow_up


#: Issue 17's flood: records nobody signed, as small as they come.
FLOOD = 3_000
#: Ledger records per unsigned record at most (it was two lifecycle events each).
NOISE_LEDGER_RATIO = 0.01


async def test_a_flood_of_unsigned_records_costs_the_ledger_a_notice_per_window(stack: LocalStack) -> None:
    """Every unsigned record is dead-lettered and counted; the evidence kept forever stays small."""
    flooder = unique("flooder")
    await add_client(stack, flooder)
    marker = uuid.uuid4().hex[:4]
    values = [f"{marker}{n:06d}".encode() for n in range(FLOOD)]  # 10 bytes each
    producer = AIOKafkaProducer(**stack.client_kafka_settings(flooder).client_args(), linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(stack.topics.requests, value) for value in values])
    finally:
        await producer.stop()

    deadline = asyncio.get_running_loop().time() + 180
    opener, opened = stack.dead_letters(), {}
    while True:
        for record in await read_topic(stack.kafka_settings, stack.topics.dlq):
            if (record.partition, record.offset) not in opened and header(record, h.ERROR_CODE) == "signature_missing":
                opened[record.partition, record.offset] = (record, opener.open(record.value, record.headers).value)
        dead = [record for record, value in opened.values() if value in set(values)]
        if len(dead) >= FLOOD or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1.0)
    assert len({value for _, value in opened.values() if value in set(values)}) == FLOOD, (
        f"{len(dead)} of {FLOOD} dead-lettered"
    )
    assert {header(r, h.ERROR_CODE) for r in dead} == {"signature_missing"}

    covering = await wait_noticed(stack, dead, timeout_s=120)
    assert set(covering.values()) == {"signature_missing"}
    sources = {header(r, h.DLQ_SOURCE) for r in dead}
    events = [e for r in await read_topic(stack.kafka_settings, stack.topics.audit) if (e := _ingest_event(r.value))]
    notices = {e.event_id for e in events if e.kind == "notice" and _covers(e, sources)}
    lifecycles = [e for e in events if e.kind == "transition" and e.details.source in sources]
    ratio = len(notices) / FLOOD
    print(f"\n{FLOOD} unsigned records: {len(notices)} audit notices ({ratio:.4f} per record), no lifecycles")
    assert lifecycles == []
    assert ratio <= NOISE_LEDGER_RATIO, f"{len(notices)} notices for {FLOOD} records"


#: Issue 17's trickle: unsigned records one at a time, each its own poll.
TRICKLE = 40
TRICKLE_GAP_S = 0.25
#: The test stack's noise window (AIRLOCK_INGEST_NOISE_WINDOW_S; 600 s in production).
STACK_NOISE_WINDOW_S = 5.0


async def test_a_trickle_of_unsigned_records_costs_a_notice_per_window_and_forged_nudges_are_noise(
    stack: LocalStack,
) -> None:
    """One record per poll used to cost a notice each; now a partition's window costs one.

    Every fourth record also carries ingest's control header (``airlock-control:
    noise-flush``) without ingest's signature: it is noise like the rest, so a trickle cannot
    force a notice per record.
    """
    trickler = unique("trickler")
    await add_client(stack, trickler)
    marker = uuid.uuid4().hex[:4]
    values = [f"{marker}t{n:05d}".encode() for n in range(TRICKLE)]
    producer = AIOKafkaProducer(**stack.client_kafka_settings(trickler).client_args(), linger_ms=0)
    await producer.start()
    started = asyncio.get_running_loop().time()
    try:
        for n, value in enumerate(values):
            headers = [(h.CONTROL, b"noise-flush")] if n % 4 == 0 else []
            await producer.send_and_wait(stack.topics.requests, value, partition=0, headers=headers)
            await asyncio.sleep(TRICKLE_GAP_S)
    finally:
        await producer.stop()
    elapsed = asyncio.get_running_loop().time() - started

    opener, dead = stack.dead_letters(), []
    deadline = asyncio.get_running_loop().time() + 60
    while len(dead) < TRICKLE and asyncio.get_running_loop().time() < deadline:
        letters = await read_topic(stack.kafka_settings, stack.topics.dlq)
        dead = [r for r in letters if opener.open(r.value, r.headers).value in set(values)]
        await asyncio.sleep(0.5)
    assert len(dead) == TRICKLE, f"{len(dead)} of {TRICKLE} dead-lettered"
    assert {header(r, h.ERROR_CODE) for r in dead} == {"signature_missing"}, "a forged nudge was obeyed"
    await wait_noticed(stack, dead, timeout_s=60)
    sources = {header(r, h.DLQ_SOURCE) for r in dead}
    events = [e for r in await read_topic(stack.kafka_settings, stack.topics.audit) if (e := _ingest_event(r.value))]
    notices = [e for e in events if e.kind == "notice" and _covers(e, sources)]
    windows = elapsed / STACK_NOISE_WINDOW_S
    print(
        f"\n{TRICKLE} unsigned records over {elapsed:.1f} s, one per poll: {len(notices)} notices "
        f"({len(notices) / TRICKLE:.3f} per record; {windows:.1f} windows of {STACK_NOISE_WINDOW_S:g} s)"
    )
    assert len(notices) <= windows + 2, f"{len(notices)} notices for {windows:.1f} windows"
    assert len(notices) < TRICKLE / 4, "a notice per record (or per forged nudge)"


def _ingest_event(value: bytes) -> AuditEvent | None:
    try:
        event = AuditEvent.model_validate_json(value)
    except ValidationError:
        return None
    return event if event.stage == "ingest" else None


def _covers(event: AuditEvent, sources: set[str | None]) -> bool:
    extra = event.details.extra or {}
    if "first_offset" not in extra or not event.details.source:
        return False
    where = event.details.source.rsplit("/", 1)[0]
    first, last = int(extra["first_offset"]), int(extra["last_offset"])  # type: ignore[arg-type]
    return any(s and s.rsplit("/", 1)[0] == where and first <= int(s.rsplit("/", 1)[1]) <= last for s in sources)
