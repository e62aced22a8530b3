"""Reading ledger records back from Kafka (committed records only)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from airlock.auditor.chain import LedgerRecord
from airlock.core.admin import partition_counts
from airlock.core.reading import committed_reader
from airlock.core.settings import KafkaSettings


async def _consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    consumer = committed_reader(kafka, auto_offset_reset="earliest")
    await consumer.start()
    return consumer


async def _read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> list[tuple[int, bytes]]:
    consumer.seek(tp, start)
    found: list[tuple[int, bytes]] = []
    while await consumer.position(tp) < end:
        batches = await consumer.getmany(tp, timeout_ms=1000)
        for record in batches.get(tp, []):
            if record.offset < end:
                found.append((record.offset, record.value or b""))
    return found


async def read_partition_tail(kafka: KafkaSettings, topic: str, partition: int, count: int) -> list[LedgerRecord]:
    """The last ``count`` committed records of one ledger partition, oldest first.

    Unreadable records are skipped: the auditor only writes valid ones, and verification
    (not this helper) is where foreign records are reported.
    """
    consumer = await _consumer(kafka)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        begin = (await consumer.beginning_offsets([tp]))[tp]
        window = max(count * 2, 16)
        while True:
            start = max(begin, end - window)
            raw = await _read_range(consumer, tp, start, end) if end > start else []
            if len(raw) >= count or start == begin:
                break
            window *= 4
        records = []
        for _, value in raw[-count:] if count else []:
            try:
                records.append(LedgerRecord.model_validate_json(value))
            except ValidationError:
                continue
        return records
    finally:
        await consumer.stop()


async def read_ledger(kafka: KafkaSettings, topic: str) -> dict[int, list[tuple[int, bytes]]]:
    """Every committed record of every partition of ``topic``: ``partition → [(offset, bytes)]``."""
    consumer = await _consumer(kafka)
    try:
        count = (await partition_counts(kafka, [topic])).get(topic, 0)
        tps = [TopicPartition(topic, p) for p in range(count)]
        if not tps:
            return {}
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        return {tp.partition: await _read_range(consumer, tp, begins[tp], ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def read_checkpoints(kafka: KafkaSettings, topic: str) -> list[bytes]:
    """Every committed checkpoint record, partition by partition, in offset order."""
    by_partition = await read_ledger(kafka, topic)
    return [value for partition in sorted(by_partition) for _, value in by_partition[partition]]
