"""The same attacks with the broker's ACLs out of the way: the stages refuse them themselves.

Each forgery here is written as the admin principal, a super user, which is what an ACL set
that is too wide (or a stolen admin login) amounts to. What must then stop it is the mesh's
own authenticity (``airlock.core.authenticity``): every internal record is signed by the
stage that wrote it, and each stage checks the signature at its door. A refused record is
dead-lettered with ``unauthentic_record`` and audited, and nothing downstream happens: no
model call, no restored answer, nothing sealed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer

from airlock.client import AirlockClient
from airlock.core import headers as h
from airlock.core.authenticity import DoorCheck, Trust, writers_of
from airlock.core.lifecycle import State
from airlock.core.models import (
    AuditDetails,
    AuditEvent,
    ChatMessage,
    Completion,
    CompletionReply,
    Envelope,
    LLMRequest,
    RedactionSummary,
    SealedVault,
    Usage,
    utcnow,
)
from airlock.devstack.stack import DEV_CLIENT_ID, LocalStack, ensure_mesh_keys
from airlock.ingest.feeds import read_seen
from airlock.ingest.replay import SeenRecord
from airlock.llm_worker.cache import CacheEntry, ResponseCache
from airlock.llm_worker.feeds import CacheFeed, PacingFeed
from airlock.llm_worker.pacing import Pacer, PacingSignal
from tests.integration.kafka_reading import header, read_topic
from tests.integration.markers import unmasked_marker

pytestmark = pytest.mark.integration

MODEL = "gpt-4o-mini"


async def forge(stack: LocalStack, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
    """Write a record as the admin (a super user: no ACL stands in the way)."""
    producer = AIOKafkaProducer(**stack.kafka_settings.client_args(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def dead_letter(stack: LocalStack, airlock_id: str, timeout_s: float = 60.0) -> dict[str, str | None]:
    """The DLQ record of ``airlock_id`` (its stage and code), once committed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in await read_topic(stack.kafka_settings, stack.topics.dlq):
            if header(record, h.AIRLOCK_ID) == airlock_id:
                return {"stage": header(record, h.DLQ_STAGE), "code": header(record, h.ERROR_CODE)}
        await asyncio.sleep(0.5)
    raise AssertionError(f"no dead letter for {airlock_id}")


async def ledger_mentions(stack: LocalStack, text: str) -> list[bytes]:
    return [r.value for r in await read_topic(stack.kafka_settings, stack.topics.ledger) if text.encode() in r.value]


def redacted_envelope(stack: LocalStack, content: str, reply_to: str) -> Envelope:
    now = utcnow()
    airlock_id = str(uuid.uuid4())
    return Envelope(
        airlock_id=airlock_id,
        state=State.REDACTED,
        request=LLMRequest(
            request_id=f"forged-{airlock_id[:8]}",
            client_id="nobody",
            tenant="acme",
            model=MODEL,
            messages=[ChatMessage(role="user", content=content)],
            reply_to=reply_to,
        ),
        received_at=now,
        deadline=now + timedelta(seconds=120),
        vault=SealedVault(key_id="dev-1", nonce="bm9uY2U=", ciphertext="c2VhbGVk"),
        redaction=RedactionSummary(policy_version="forged", entity_counts={}),
    )


async def test_an_envelope_forged_onto_redacted_never_reaches_the_model(stack: LocalStack) -> None:
    assert stack.fake is not None
    marker = unmasked_marker()
    envelope = redacted_envelope(
        stack, f"Jane Roe, SSN 078-05-1120, jane.roe@example.com {marker}", stack.topics.reply_topic(DEV_CLIENT_ID)
    )
    key = envelope.airlock_id.encode()
    await forge(stack, stack.topics.redacted, envelope.to_bytes(), key, [(h.AIRLOCK_ID, key)])
    letter = await dead_letter(stack, envelope.airlock_id)
    assert letter == {"stage": "llm-worker", "code": "unauthentic_record"}
    assert not [body for body in stack.fake.received() if marker in str(body)], "the model saw the forged prompt"


async def test_a_genuine_envelope_moved_and_readdressed_is_not_restored(
    stack: LocalStack, client: AirlockClient
) -> None:
    # A victim's real request: its masked envelope on `redacted` carries the redactor's signature.
    victim = await client.ask(client.build("Hi, I am Jane Roe, mail jane@example.com", tenant="acme", model=MODEL))
    assert isinstance(victim, CompletionReply)
    [genuine] = [
        r
        for r in await read_topic(stack.kafka_settings, stack.topics.redacted)
        if header(r, h.AIRLOCK_ID) == victim.airlock_id
    ]
    stolen = Envelope.model_validate_json(genuine.value)
    attacker = f"mallory-{uuid.uuid4().hex[:6]}"
    attacker_topic = stack.topics.reply_topic(attacker)
    stack.provision_client(attacker)
    forged = stolen.model_copy(
        update={
            "state": State.COMPLETED,
            "request": stolen.request.model_copy(update={"reply_to": attacker_topic}),
            "completion": Completion(content="dump: <PERSON_1> | <EMAIL_ADDRESS_1>", finish_reason="stop", model=MODEL),
        }
    )
    # The victim's headers, its stage signature included, copied onto the forgery.
    await forge(stack, stack.topics.completions, forged.to_bytes(), genuine.key, list(genuine.headers))
    letter = await dead_letter(stack, victim.airlock_id)
    assert letter == {"stage": "redactor", "code": "unauthentic_record"}
    await asyncio.sleep(2)
    assert await read_topic(stack.kafka_settings, attacker_topic) == [], "a restored answer reached the attacker"


async def test_forged_audit_events_are_not_sealed(stack: LocalStack) -> None:
    airlock_id = str(uuid.uuid4())
    path = [(None, State.RECEIVED), (State.RECEIVED, State.ACCEPTED), (State.ACCEPTED, State.REDACTED)]
    path += [(State.REDACTED, State.COMPLETED), (State.COMPLETED, State.DELIVERED)]
    for source, target in path:
        event = AuditEvent(
            event_id=str(uuid.uuid4()),
            airlock_id=airlock_id,
            request_id="never-sent",
            client_id="nobody",
            tenant="acme",
            stage="ingest",
            kind="transition",
            from_state=source,
            to_state=target,
            details=AuditDetails(),
        )
        await forge(
            stack, stack.topics.audit, event.to_bytes(), airlock_id.encode(), [(h.AIRLOCK_ID, airlock_id.encode())]
        )
    assert (await dead_letter(stack, airlock_id))["code"] == "unauthentic_record"
    await asyncio.sleep(2)
    sealed = [v for v in await ledger_mentions(stack, airlock_id) if b'"kind":"transition"' in v]
    assert sealed == [], "a forged lifecycle was sealed"


async def test_a_stage_cannot_write_evidence_in_another_stages_name(stack: LocalStack) -> None:
    # Ingest's genuine key, but an event that claims the redactor redacted a request.
    airlock_id = str(uuid.uuid4())
    event = AuditEvent(
        event_id=str(uuid.uuid4()),
        airlock_id=airlock_id,
        request_id="impersonated",
        stage="redactor",
        kind="transition",
        from_state=State.ACCEPTED,
        to_state=State.REDACTED,
        details=AuditDetails(),
    )
    key, value = airlock_id.encode(), event.to_bytes()
    signature = stack.stage_signer("ingest").header(stack.topics.audit, key, value)
    await forge(stack, stack.topics.audit, value, key, [(h.AIRLOCK_ID, key), signature])
    assert await dead_letter(stack, airlock_id) == {"stage": "auditor", "code": "unauthentic_record"}
    await asyncio.sleep(2)
    assert not [v for v in await ledger_mentions(stack, airlock_id) if b'"kind":"transition"' in v]


# -- side channels: read outside the stages' doors, checked by their readers ------------------


def mesh_door(stack: LocalStack) -> DoorCheck:
    """The door check a stage builds from the mesh's trust file."""
    return DoorCheck(Trust.from_json(ensure_mesh_keys(stack.state).read_text()), writers_of(stack.topics))


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_forged_cache_entries_are_never_served(stack: LocalStack) -> None:
    door = mesh_door(stack)
    topic = stack.topics.llm_cache
    now = utcnow()

    def entry(content: str) -> CacheEntry:
        return CacheEntry(
            key=uuid.uuid4().hex,
            tenant="acme",
            use_case="default",
            model=MODEL,
            content=content,
            finish_reason="stop",
            served_model=MODEL,
            created_at=now,
            expires_at=now + timedelta(hours=1),
        )

    genuine, unsigned, wrong_stage = entry("genuine"), entry("PAYMENT APPROVED"), entry("PAYMENT APPROVED")
    cache = ResponseCache()
    feed = CacheFeed(stack.kafka_settings, topic, cache, door=lambda: door)
    await feed.start()
    try:
        for forged, signer in ((unsigned, None), (wrong_stage, "ingest"), (genuine, "llm-worker")):
            key, value = forged.key.encode(), forged.model_dump_json().encode()
            headers = [stack.stage_signer(signer).header(topic, key, value)] if signer else []
            await forge(stack, topic, value, key, headers)
        await eventually(lambda: cache.get(genuine.key, "acme", utcnow()) is not None, "the genuine entry")
        assert cache.get(unsigned.key, "acme", utcnow()) is None, "an unsigned cache entry was taken"
        assert cache.get(wrong_stage.key, "acme", utcnow()) is None, "ingest may not write the llm-worker's cache"
    finally:
        await feed.stop()


async def test_forged_pacing_signals_pause_nothing(stack: LocalStack) -> None:
    door = mesh_door(stack)
    topic = stack.topics.llm_pacing
    targets = {"paced-by-a-peer": (None, None), "paced-by-a-forger": (None, None)}
    listener = Pacer(dict(targets), share=lambda: 1.0, origin=f"listener-{uuid.uuid4().hex[:6]}")
    peer = Pacer(dict(targets), share=lambda: 1.0, origin=f"peer-{uuid.uuid4().hex[:6]}")
    listening = PacingFeed(stack.kafka_settings, topic, listener, door=lambda: door)
    signing = PacingFeed(stack.kafka_settings, topic, peer, signer=lambda: stack.stage_signer("llm-worker"))
    await listening.start()
    await signing.start()
    try:
        forged = PacingSignal(target="paced-by-a-forger", pause_until=time.time() + 600, factor=0.1, origin="mallory")
        await forge(stack, topic, forged.model_dump_json().encode(), forged.target.encode(), [])
        signal = peer.rate_limited("paced-by-a-peer", retry_after=600, now=time.time())
        assert signal is not None
        signing.publish(signal)  # signed as the llm-worker, as every replica's signals are
        await eventually(lambda: listener.paused_for("paced-by-a-peer", time.time()) > 0, "the peer's pause")
        assert listener.paused_for("paced-by-a-forger", time.time()) == 0, "a forged signal paused a target"
    finally:
        await signing.stop()
        await listening.stop()


async def test_forged_seen_records_cannot_make_a_request_look_replayed(stack: LocalStack) -> None:
    door = mesh_door(stack)
    topic = stack.topics.ingest_seen
    since = utcnow() - timedelta(seconds=5)

    def seen(request_id: str) -> SeenRecord:
        return SeenRecord(
            client_id=DEV_CLIENT_ID,
            request_id=request_id,
            signature=uuid.uuid4().hex,
            airlock_id=str(uuid.uuid4()),
            accepted=True,
            at=utcnow(),
            signed_at=int(time.time()),
        )

    forged, genuine = seen(f"forged-{uuid.uuid4().hex[:6]}"), seen(f"genuine-{uuid.uuid4().hex[:6]}")
    producer = AIOKafkaProducer(**stack.kafka_settings.client_args(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, forged.to_bytes(), key=forged.request_id.encode(), partition=0)
        key, value = genuine.request_id.encode(), genuine.to_bytes()
        signature = stack.stage_signer("ingest").header(topic, key, value)
        await producer.send_and_wait(topic, value, key=key, partition=0, headers=[signature])
    finally:
        await producer.stop()
    found = {record.request_id for record in await read_seen(stack.kafka_settings, topic, 0, since, door=lambda: door)}
    assert genuine.request_id in found, "a genuine seen record was dropped"
    assert forged.request_id not in found, "an unsigned seen record was taken"


async def test_the_sdk_takes_only_replies_airlock_signed_for_its_own_client(
    stack: LocalStack, client: AirlockClient
) -> None:
    request = client.build("Hello, who is there?", tenant="acme", model=MODEL)
    rid, topic = request.request_id, client.reply_to
    client.expect(rid)

    def injected(client_id: str) -> CompletionReply:
        return CompletionReply(
            request_id=rid,
            airlock_id=str(uuid.uuid4()),
            client_id=client_id,
            model=MODEL,
            content="PAYMENT APPROVED",
            finish_reason="stop",
            usage=Usage(input_tokens=1, output_tokens=1),
        )

    # Written before the request, keyed like the genuine reply: the SDK reads them first.
    for reply, signer in (
        (injected(client.client_id), None),  # anyone on the network, ACLs opened
        (injected(client.client_id), "auditor"),  # a genuine stage key, but no stage that answers
        (injected("mallory"), "ingest"),  # a genuine reply, but for another client's same request id
    ):
        key, value = rid.encode(), reply.to_bytes()
        headers = [stack.stage_signer(signer).header(topic, key, value)] if signer else []
        await forge(stack, topic, value, key, headers)
    await client.publish(request)
    answer = await client.wait(rid, timeout=90)
    assert isinstance(answer, CompletionReply), answer
    assert answer.content != "PAYMENT APPROVED", "an injected reply was taken for the client's own"
    assert answer.client_id == client.client_id
