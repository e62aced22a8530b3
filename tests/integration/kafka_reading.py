"""Reading whole topics back in tests (committed records only)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from airlock.core.admin import partition_counts
from airlock.core.settings import KafkaSettings


async def read_topic(kafka: KafkaSettings, topic: str) -> list[ConsumerRecord]:
    """Every committed record of ``topic`` as of now, partition by partition."""
    count = (await partition_counts(kafka, [topic]))[topic]
    if not count:
        return []  # no such topic (yet)
    consumer = AIOKafkaConsumer(**kafka.client_args(), isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records.extend(batch.get(tp, []))
        return records
    finally:
        await consumer.stop()


def header(record: ConsumerRecord, name: str) -> str | None:
    """A header of a consumed record, as text."""
    for key, value in record.headers or ():
        if key == name:
            return value.decode("utf-8", "replace")
    return None
