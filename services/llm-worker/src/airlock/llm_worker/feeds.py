"""The llm-worker's Kafka side channels, outside the stage's transactions.

* :class:`CacheFeed` keeps this replica's :class:`~airlock.llm_worker.cache.ResponseCache`
  in step with the compacted cache topic (entries are *written* transactionally, with the
  completion they come from, by the handler's outcome).
* :class:`PacingFeed` shares 429 pacing signals: it publishes this replica's and applies
  everyone else's to the :class:`~airlock.llm_worker.pacing.Pacer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from airlock.core.authenticity import Door, RecordRefused, Signer
from airlock.core.models import utcnow
from airlock.core.reading import OnBatch, TopicReader, from_beginning
from airlock.core.settings import KafkaSettings
from airlock.llm_worker.cache import CacheEntry, ResponseCache
from airlock.llm_worker.pacing import Pacer, PacingSignal

log = logging.getLogger("airlock.llm_worker.feeds")

#: On start, pacing signals this far back (per partition) are read: a pause may still be on.
PACING_LOOKBACK = 200


def _applying(topic: str, apply: Callable[[ConsumerRecord], None], door: Door | None) -> OnBatch:
    """Hands each record to ``apply``; an unreadable one is logged and skipped (the feed goes on).

    With ``door``, only records signed by the stage that writes ``topic`` (the llm-worker)
    are applied: a forged cache entry would be served as a tenant's answer, a forged pacing
    signal would pause the fleet.
    """

    def on_batch(_: TopicPartition, records: list[ConsumerRecord]) -> None:
        for record in records:
            try:
                if door is not None:
                    door().record_signer(record)
                apply(record)
            except RecordRefused as refused:  # before ValueError, which it is
                log.warning("ignoring unauthentic record on %s at %d: %s", topic, record.offset, refused)
            except (ValidationError, ValueError) as error:
                log.warning("ignoring unreadable record on %s: %s", topic, type(error).__name__)

    return on_batch


class CacheFeed:
    """Loads the cache topic into a :class:`ResponseCache` and follows it.

    Args:
        kafka: Connection settings.
        topic: The cache topic.
        cache: Filled with live entries; tombstones remove theirs.
        door: The mesh's door check (``None``: records are not checked, for benchmarks).
    """

    def __init__(self, kafka: KafkaSettings, topic: str, cache: ResponseCache, *, door: Door | None = None) -> None:
        self._cache = cache
        self._reader = TopicReader(kafka, [topic], _applying(topic, self._apply, door))

    def _apply(self, record: ConsumerRecord) -> None:
        if record.value is None:
            if record.key is not None:
                self._cache.discard(record.key.decode("utf-8", "replace"))
            return
        self._cache.put(CacheEntry.model_validate_json(record.value), utcnow())

    async def start(self) -> None:
        """Read the topic from the beginning, then keep following it."""
        await self._reader.start(from_beginning)

    async def stop(self) -> None:
        """Stop following the topic."""
        await self._reader.stop()


class PacingFeed:
    """Publishes this replica's pacing signals and applies the fleet's.

    Args:
        kafka: Connection settings.
        topic: The pacing topic.
        pacer: Receives other replicas' signals.
        door: The mesh's door check for the fleet's signals (``None``: not checked).
        signer: Signs this replica's signals (``None``: sent unsigned).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        pacer: Pacer,
        *,
        door: Door | None = None,
        signer: Signer | None = None,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._pacer = pacer
        self._signer = signer
        self._producer: AIOKafkaProducer | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._reader = TopicReader(kafka, [topic], _applying(topic, self._apply, door))

    def _apply(self, record: ConsumerRecord) -> None:
        if record.value is not None:
            self._pacer.apply(PacingSignal.model_validate_json(record.value), time.time())

    async def start(self) -> None:
        """Connect the producer; read recent signals (a pause may be on), then follow."""
        self._producer = AIOKafkaProducer(**self._kafka.client_args(), acks=1, linger_ms=0)
        await self._producer.start()

        async def recent(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - PACING_LOOKBACK))

        await self._reader.start(recent)

    def publish(self, signal: PacingSignal) -> None:
        """Send ``signal`` to the fleet without waiting (pacing must never block a call)."""
        if self._producer is None:
            return
        task = asyncio.create_task(self._send(self._producer, signal))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, producer: AIOKafkaProducer, signal: PacingSignal) -> None:
        value, key = signal.model_dump_json().encode(), signal.target.encode()
        signer = self._signer() if self._signer is not None else None
        headers = [signer.header(self._topic, key, value)] if signer is not None else None
        try:
            await producer.send_and_wait(self._topic, value, key=key, headers=headers)
        except KafkaError as error:
            log.warning("could not share pacing signal for %s: %s", signal.target, error)

    async def stop(self) -> None:
        """Stop following; flush signals being sent."""
        await self._reader.stop()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
