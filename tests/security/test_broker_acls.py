"""Attacks on the mesh from inside the Kafka network, refused by the broker itself.

Each test is a hostile but authenticated Kafka client (a registered client's own principal,
or a stage's) trying what the security review did with an unauthenticated one: writing a
stage's input to skip redaction, reading another client's restored answers, forging audit
events, usage or ledger records. The broker the test session starts requires SCRAM logins
and authorizes with KRaft's StandardAuthorizer, so each attempt must fail on the broker's
ACLs (``airlock.core.access``) before any stage sees a byte. Every test also does one thing
the same principal *may* do, so a refusal cannot come from a broken connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from airlock.core import access
from airlock.core.admin import partition_counts
from airlock.core.settings import KafkaSettings
from airlock.devstack.stack import LocalStack
from airlock.ingest.clients import ClientPolicy, new_key

pytestmark = pytest.mark.integration

RAW_PII = "Jane Roe, SSN 078-05-1120, jane.roe@example.com"


def register(stack: LocalStack, client_id: str) -> KafkaSettings:
    """A client in the clients file, with its reply topic, Kafka user and ACLs."""
    from airlock.ingest.clients import ClientsFile

    key_id, key = new_key(client_id)
    policy = ClientPolicy(
        keys={key_id: key},
        tenants=["*"],
        models=["*"],
        use_cases=["*"],
        max_prompt_chars=10_000,
        max_tokens=1000,
    )
    ClientsFile.load(stack.clients_file).with_client(client_id, policy).save(stack.clients_file)
    return stack.client_kafka_settings(client_id)


async def produce(kafka: KafkaSettings, topic: str, value: bytes) -> None:
    """One record, acknowledged by every replica (raises what the broker answered)."""
    producer = AIOKafkaProducer(**kafka.client_args(), acks="all")
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, value), 30)
    finally:
        await producer.stop()


async def readable(stack: LocalStack, kafka: KafkaSettings, topic: str) -> bool:
    """Whether ``kafka``'s principal reads a marker the admin just wrote to ``topic``.

    A denied fetch does not raise in aiokafka (it logs the topic as unauthorized and
    returns nothing), so the marker is what tells a refusal from an empty topic.
    """
    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(**stack.kafka_settings.client_args(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, marker, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**kafka.client_args(), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(consumer.seek_to_beginning(tp), 10)
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            try:
                batch = await consumer.getmany(tp, timeout_ms=500)
            except TopicAuthorizationFailedError:
                return False
            if any(record.value == marker for record in batch.get(tp, [])):
                return True
        return False
    finally:
        await consumer.stop()


async def visible(kafka: KafkaSettings, topic: str) -> bool:
    """Whether ``kafka``'s principal may even describe ``topic`` (READ implies DESCRIBE in Kafka)."""
    return (await partition_counts(kafka, [topic]))[topic] > 0


async def join_group(kafka: KafkaSettings, topic: str, group: str) -> None:
    """Consume ``topic`` in ``group`` (raises what the broker refuses)."""
    consumer = AIOKafkaConsumer(topic, **kafka.client_args(), group_id=group, enable_auto_commit=False)
    try:
        await consumer.start()
        await asyncio.wait_for(consumer.getmany(timeout_ms=3000), 30)
    finally:
        await consumer.stop()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def test_a_client_may_not_write_any_stage_input_or_evidence(stack: LocalStack) -> None:
    mallory = register(stack, unique("mallory"))
    topics = stack.topics
    await produce(mallory, topics.requests, b"{}")  # allowed: that is what a client does
    for topic in (
        topics.accepted,  # skip authentication
        topics.redacted,  # skip redaction: the model would see the raw prompt
        topics.completions,  # have an answer restored for a stolen vault
        topics.audit,  # forge a lifecycle
        topics.ledger,
        topics.checkpoints,
        topics.usage,  # reset a tenant's budget
        topics.ingest_admissions,
        topics.ingest_seen,
        topics.dlq,
        topics.llm_cache,
        topics.llm_pacing,
    ):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(mallory, topic, RAW_PII.encode())


async def test_a_client_reads_its_own_replies_and_no_one_elses(stack: LocalStack) -> None:
    alice_id, mallory_id = unique("alice"), unique("mallory")
    register(stack, alice_id)
    mallory = register(stack, mallory_id)
    topics = stack.topics
    assert await readable(stack, mallory, topics.reply_topic(mallory_id)), "its own replies"
    assert not await readable(stack, mallory, topics.reply_topic(alice_id)), "mallory read alice's answers"
    # Without DESCRIBE there is no READ: the stages' topics are invisible to a client. (No
    # marker here: a stage would consume it.)
    assert await visible(mallory, topics.requests)
    for topic in (topics.accepted, topics.redacted, topics.completions, topics.dlq, topics.audit, topics.ledger):
        assert not await visible(mallory, topic), f"mallory may describe {topic}"


async def test_a_client_may_not_join_a_stage_group_or_use_its_transactions(stack: LocalStack) -> None:
    mallory = register(stack, unique("mallory"))
    with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
        await join_group(mallory, stack.topics.requests, "airlock-ingest")
    producer = AIOKafkaProducer(**mallory.client_args(), transactional_id="airlock-redactor.hijack")
    with pytest.raises(TransactionalIdAuthorizationFailed):
        await producer.start()
    await producer.stop()


async def test_each_stage_writes_only_what_the_topology_gives_it(stack: LocalStack) -> None:
    topics = stack.topics
    redactor = stack.principal_settings(access.stage_principal("redactor"))
    llm_worker = stack.principal_settings(access.stage_principal("llm-worker"))
    ingest = stack.principal_settings(access.stage_principal("ingest"))
    # Only the auditor writes the evidence.
    for stage in (redactor, llm_worker, ingest):
        for topic in (topics.ledger, topics.checkpoints):
            with pytest.raises(TopicAuthorizationFailedError):
                await produce(stage, topic, b"{}")
    # Ingest cannot skip the redactor; the llm-worker never reads raw prompts.
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(ingest, topics.redacted, RAW_PII.encode())
    assert await visible(llm_worker, topics.redacted)
    assert not await visible(llm_worker, topics.accepted)
    # Only the llm-worker meters usage.
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(redactor, topics.usage, b'{"input_tokens": -10000000}')
    # The audit reader reads the evidence and writes nothing.
    reader = stack.principal_settings(access.AUDIT_READER)
    assert await visible(reader, topics.checkpoints)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(reader, topics.audit, b"{}")


async def test_no_login_no_wrong_password_no_plaintext(stack: LocalStack) -> None:
    admin = stack.kafka_settings
    wrong = admin.as_principal("airlock-redactor", "not-the-password")
    anonymous = KafkaSettings(bootstrap=admin.bootstrap, topic_prefix=admin.topic_prefix, request_timeout_ms=5000)
    for settings in (wrong, anonymous):
        producer = AIOKafkaProducer(**settings.client_args())
        with pytest.raises((KafkaConnectionError, KafkaError)):
            await asyncio.wait_for(producer.start(), 30)
        await producer.stop()
