"""`airlock ops status`'s lag reading against the real broker (Kafka 4.4): committed offsets
from list_consumer_group_offsets, last stable offsets from a read_committed consumer."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from airlock.core.admin import provision
from airlock.core.topics import TopicSpec
from airlock.devstack.cli.ops import consumer_group, read_lags, stage_inputs
from airlock.devstack.stack import LocalStack

pytestmark = pytest.mark.integration


async def test_lag_per_partition_from_committed_and_stable_offsets(stack: LocalStack) -> None:
    kafka = stack.kafka_settings
    stage = f"opslag-{uuid.uuid4().hex[:6]}"
    topic = f"{stack.topic_prefix}{stage}"
    await provision(kafka, [TopicSpec(topic, 3, 1)])

    plain = AIOKafkaProducer(**kafka.client_args())
    await plain.start()
    try:
        for partition, count in ((0, 5), (1, 3)):
            for n in range(count):
                await plain.send_and_wait(topic, f"{n}".encode(), partition=partition)
    finally:
        await plain.stop()
    # Partition 2 holds two records written in a committed transaction (plus its commit marker).
    transactional = AIOKafkaProducer(**kafka.client_args(), transactional_id=f"{stage}-tx")
    await transactional.start()
    try:
        async with transactional.transaction():
            for n in range(2):
                await transactional.send(topic, f"tx{n}".encode(), partition=2)
    finally:
        await transactional.stop()

    group = AIOKafkaConsumer(**kafka.client_args(), group_id=consumer_group(stage), enable_auto_commit=False)
    await group.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        group.assign(partitions)
        await group.commit({partitions[0]: OffsetAndMetadata(2, ""), partitions[2]: OffsetAndMetadata(2, "")})
    finally:
        await group.stop()

    lags, counts = await read_lags(kafka, {stage: (topic,)}, timeout_s=30)
    assert counts == {topic: 3}
    by_partition = {lag.partition: lag for lag in lags[stage]}
    assert by_partition[0].committed == 2 and by_partition[0].lag == 3
    assert by_partition[1].committed is None and by_partition[1].lag == 3, "no offset yet: all of it"
    # All data consumed, yet 1 behind: the transaction's commit marker takes an offset.
    assert by_partition[2].committed == 2 and by_partition[2].end == 3 and by_partition[2].lag == 1


async def test_lag_of_the_running_stages_covers_every_input_partition(stack: LocalStack) -> None:
    inputs = stage_inputs(stack.topics)
    lags, counts = await read_lags(stack.kafka_settings, inputs, timeout_s=30)
    for stage, topics in inputs.items():
        assert {(lag.topic, lag.partition) for lag in lags[stage]} == {
            (topic, p) for topic in topics for p in range(stack.partitions)
        }
        assert all(lag.lag >= 0 and lag.end >= lag.start for lag in lags[stage])
    assert set(counts.values()) == {stack.partitions}
