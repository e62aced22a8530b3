"""Ingest's shared state in Kafka: the admission log, the usage topic and the seen topic.

This is the only ingest module that talks to Kafka directly (besides the stage runtime).
Every replica runs one :class:`QuotaFeed`: a reader of the single-partition admission log
since the start of the month (intents and settlements, decided by
:class:`~airlock.ingest.quota.AdmissionArbiter`) and an idempotent producer for its own
admission intents. ``airlock usage`` reads the usage topic too
(:class:`~airlock.ingest.quota.UsageBook`). :func:`read_seen` rebuilds one request
partition's :class:`~airlock.ingest.replay.SeenBook` when the partition is (re)assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from airlock.core import headers as h
from airlock.core.admin import list_topics, partition_counts
from airlock.core.authenticity import Door, RecordRefused, Signer
from airlock.core.models import Settlement, UsageRecord
from airlock.core.reading import committed_reader
from airlock.core.settings import KafkaSettings
from airlock.core.topics import Topics
from airlock.ingest.noise import NOISE_FLUSH, NoiseTally, read_seen_entry
from airlock.ingest.quota import (
    Admission,
    AdmissionArbiter,
    AdmissionIntent,
    UsageBook,
    month_start,
    read_admission_record,
)
from airlock.ingest.replay import SeenRecord

log = logging.getLogger("airlock.ingest.feeds")

#: Who signs which admission-log record: a forged settlement could free a tenant's budget,
#: a forged intent exhaust it.
ADMISSION_SIGNERS: dict[type, str] = {AdmissionIntent: "ingest", Settlement: "llm-worker"}

#: Longest an on-demand topic lookup may hold up a batch.
LOOKUP_TIMEOUT_S = 5.0


class FeedUnavailable(RuntimeError):
    """The admission log or usage topic could not be read in time (the record is retried)."""


def _consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    return committed_reader(kafka, auto_offset_reset="earliest", fetch_max_wait_ms=100)


async def _seek_since(consumer: AIOKafkaConsumer, since_ms: dict[TopicPartition, int]) -> None:
    found = await consumer.offsets_for_times(since_ms)
    for tp in since_ms:
        hit = found.get(tp)
        if hit is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, hit.offset)


class QuotaFeed:
    """The admission log (and, for reports, the usage topic), read continuously; intents written.

    Args:
        kafka: Connection settings.
        topics: Topic names.
        door: The mesh's door check: admission records count only when signed by the stage
            that writes them (``None``: not checked, for reports).
        signer: This replica's stage signer, for its intents (``None``: unsigned).
        read_usage: Also read the usage topic into :attr:`book` (``airlock usage``).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Topics,
        *,
        door: Door | None = None,
        signer: Signer | None = None,
        read_usage: bool = False,
    ) -> None:
        self._kafka = kafka
        self._topics = topics
        self._door = door
        self._signer = signer
        self._read_usage = read_usage
        self.arbiter = AdmissionArbiter()
        self.book = UsageBook()
        self._admissions = TopicPartition(topics.ingest_admissions, 0)
        self._position = -1
        self._moved = asyncio.Condition()
        self._ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, position the readers and start following (returns before catching up)."""
        needed = [self._topics.ingest_admissions, *([self._topics.usage] if self._read_usage else [])]
        counts = await partition_counts(self._kafka, needed)
        if any(counts.get(name, 0) < 1 for name in needed):
            raise RuntimeError(f"topics {', '.join(needed)} must exist: run `airlock topics provision`")
        usage = [TopicPartition(self._topics.usage, p) for p in range(counts.get(self._topics.usage, 0))]
        self._consumer = _consumer(self._kafka)
        await self._consumer.start()
        self._consumer.assign([self._admissions, *usage])
        # Cost budgets are per calendar month: the log since its start rebuilds every decision.
        month_ms = int(month_start(datetime.now(UTC)).timestamp() * 1000)
        await _seek_since(self._consumer, {tp: month_ms for tp in [self._admissions, *usage]})
        targets = await self._consumer.end_offsets([self._admissions, *usage])
        self._producer = AIOKafkaProducer(**self._kafka.client_args(), enable_idempotence=True, acks="all", linger_ms=0)
        await self._producer.start()
        self._task = asyncio.create_task(self._follow(targets))

    async def stop(self) -> None:
        """Stop following and disconnect."""
        await _cancel(self._task)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    @property
    def caught_up(self) -> bool:
        """Whether the readers have caught up with what existed at start (readiness)."""
        return self._ready.is_set()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the readers have caught up with what existed at start.

        Raises:
            FeedUnavailable: Not caught up within ``timeout_s``.
        """
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise FeedUnavailable("the admission log is not read up yet") from None

    async def admit(self, intents: Sequence[AdmissionIntent], timeout_s: float) -> list[Admission]:
        """Append ``intents`` to the admission log and return the log's decisions on them.

        Raises:
            FeedUnavailable: The log did not come back in time.
        """
        assert self._producer is not None, "start the feed first"
        if not intents:
            return []
        signer = self._signer() if self._signer else None
        sends = []
        for intent in intents:
            value, key = intent.to_bytes(), intent.tenant.encode()
            headers = [signer.header(self._admissions.topic, key, value)] if signer else None
            sends.append(
                await self._producer.send(self._admissions.topic, value, key=key, partition=0, headers=headers)
            )
        try:
            written = await asyncio.wait_for(asyncio.gather(*sends), timeout_s)
            last = max(meta.offset for meta in written)
            async with self._moved:
                await asyncio.wait_for(self._moved.wait_for(lambda: self._position > last), timeout_s)
        except TimeoutError:
            raise FeedUnavailable(f"admission log did not answer within {timeout_s:.0f}s") from None
        decisions = [self.arbiter.decision_for(intent.airlock_id) for intent in intents]
        if any(decision is None for decision in decisions):
            raise FeedUnavailable("admission decision missing (the log moved on); retrying")
        return [decision for decision in decisions if decision is not None]

    async def _follow(self, targets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        last_prune = time.monotonic()
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(tp, record)
                position = await self._consumer.position(self._admissions)
                if not self._ready.is_set():
                    behind = [tp for tp, end in targets.items() if await self._consumer.position(tp) < end]
                    if not behind:
                        self._ready.set()
                        log.info("quota state read up (the admission log since the start of the month)")
            except KafkaError as error:
                log.warning("reading quota state failed (%s); retrying", type(error).__name__)
                await asyncio.sleep(1.0)
                continue
            async with self._moved:
                self._position = position
                self._moved.notify_all()
            if time.monotonic() - last_prune > 60:
                self.book.prune(datetime.now(UTC))
                last_prune = time.monotonic()

    def _apply(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        value = record.value or b""
        where = f"{tp.topic}/{tp.partition}@{record.offset}"
        try:
            if tp == self._admissions:
                entry = read_admission_record(value)
                if self._door is not None:
                    signer = self._door().record_signer(record)
                    if signer != ADMISSION_SIGNERS[type(entry)]:
                        raise RecordRefused(f"a {entry.kind} signed by {signer}")
                self.arbiter.apply(entry, record.timestamp)
                return
            self.book.add(UsageRecord.model_validate_json(value))
        except RecordRefused as refused:  # before ValueError, which it is
            log.warning("skipping unauthentic record at %s: %s", where, refused)
        except (ValueError, ValidationError) as error:
            log.warning("skipping unreadable record at %s: %s", where, str(error)[:200])


async def quota_snapshot(kafka: KafkaSettings, topics: Topics, timeout_s: float = 60.0) -> QuotaFeed:
    """The quota state as of now (for ``airlock usage``): a feed read up, then stopped."""
    feed = QuotaFeed(kafka, topics, read_usage=True)
    await feed.start()
    try:
        await feed.wait_ready(timeout_s)
    finally:
        await feed.stop()
    return feed


async def read_seen(
    kafka: KafkaSettings, topic: str, partition: int, since: datetime, door: Door | None = None
) -> list[SeenRecord | NoiseTally]:
    """Every committed record of one partition of ``ingest.seen`` written since ``since``.

    Seen requests, and the partition's noise tallies. With ``door``, only records ingest
    signed count: a forged one could make a genuine request look like a replay (or a
    duplicate) and be refused, or hide noise from the evidence.
    """
    consumer = _consumer(kafka)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await _seek_since(consumer, {tp: int(since.timestamp() * 1000)})
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[SeenRecord | NoiseTally] = []
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000)
            for record in batches.get(tp, []):
                try:
                    if door is not None:
                        door().record_signer(record)
                    found.append(read_seen_entry(record.value or b""))
                except RecordRefused as refused:
                    where = f"{topic}/{partition} at {record.offset}"
                    log.warning("skipping unauthentic record on %s: %s", where, refused)
                except ValidationError:
                    log.warning("skipping unreadable record on %s/%d at %d", topic, partition, record.offset)
        return found
    finally:
        await consumer.stop()


class TopicWatch:
    """The request topic's partition count and the reply topics that exist, kept fresh.

    A reply to a topic that does not exist can never be committed (stages may not create
    topics): ingest refuses such a request up front instead of letting its outcome fail the
    partition's transaction. Names not seen yet are looked up again on demand (see
    :meth:`look_up`), so a client provisioned a moment ago is not refused.

    Args:
        kafka: Connection settings.
        topics: Topic names (the request topic and the reply topic prefix).
        interval_s: Seconds between background refreshes.
    """

    def __init__(self, kafka: KafkaSettings, topics: Topics, interval_s: float = 30.0) -> None:
        self._kafka = kafka
        self._topics = topics
        self._interval_s = interval_s
        self.count: int | None = None
        self._reply_topics: frozenset[str] | None = None
        #: When the last refresh started (monotonic).
        self._refreshed_at = 0.0
        self._refreshing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the topics once, then keep them fresh."""
        await self.refresh()
        self._task = asyncio.create_task(self._loop())

    def exists(self, topic: str) -> bool:
        """Whether ``topic`` is a reply topic known to exist (``True`` while none was read yet)."""
        return self._reply_topics is None or topic in self._reply_topics

    async def look_up(self, names: Sequence[str]) -> None:
        """Read the topics again if one of ``names`` is not known yet.

        Callers that wait meanwhile share the refresh that starts after they asked: a topic
        created a moment before its request was sent is always seen, and a batch naming
        missing topics costs one metadata read, never a wait for a timer.
        """
        if all(self.exists(name) for name in names):
            return
        asked = time.monotonic()
        async with self._refreshing:
            if self._refreshed_at >= asked:
                return  # refreshed by another caller after this one asked
            # Bounded: a broker that does not answer must not hold up the batch for long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh(), LOOKUP_TIMEOUT_S)

    async def refresh(self) -> None:
        """Read the partition count and the reply topics now (keeps the last known on failure)."""
        self._refreshed_at = time.monotonic()
        requests = self._topics.requests
        try:
            names = await list_topics(self._kafka)
            count = (await partition_counts(self._kafka, [requests])).get(requests, 0)
        except KafkaError as error:
            log.warning("cannot read the topics (%s)", type(error).__name__)
            return
        self._reply_topics = frozenset(name for name in names if self._topics.is_reply_topic(name))
        if count and count != self.count:
            if self.count is not None:
                log.warning("%s now has %d partitions (was %d)", requests, count, self.count)
            self.count = count

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.refresh()

    async def stop(self) -> None:
        """Stop refreshing."""
        await _cancel(self._task)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def nudge_quiet_partitions(
    kafka: KafkaSettings,
    topic: str,
    owned: Callable[[], Sequence[int]],
    due: Callable[[int], bool],
    signer: Signer,
    period_s: float,
) -> None:
    """Nudge quiet request partitions whose noise notice is due, until cancelled.

    Each owned partition whose notice is due gets a :data:`~airlock.ingest.noise.NOISE_FLUSH`
    control record signed by ingest, at most once per ``period_s``.

    A partition whose unauthenticated traffic stopped has no batch to seal its last window
    in; the control record comes back through the stage runtime like any request, and the
    handler seals the notice in that record's transaction (fenced, offsets and all).
    """
    producer = AIOKafkaProducer(**kafka.client_args(), enable_idempotence=True, acks="all", linger_ms=0)
    await producer.start()
    nudged: dict[int, float] = {}
    try:
        while True:
            await asyncio.sleep(period_s)
            for partition in owned():
                if not due(partition) or time.monotonic() - nudged.get(partition, -period_s) < period_s:
                    continue
                value, headers = b'{"control":"noise-flush"}', [(h.CONTROL, NOISE_FLUSH.encode())]
                stage_signer = signer()
                if stage_signer is not None:
                    headers.append(stage_signer.header(topic, None, value))
                try:
                    await producer.send_and_wait(topic, value, partition=partition, headers=headers)
                    nudged[partition] = time.monotonic()
                except KafkaError as error:  # the next round tries again; nothing is lost meanwhile
                    log.warning("could not nudge %s/%d: %s", topic, partition, type(error).__name__)
    finally:
        await producer.stop()
