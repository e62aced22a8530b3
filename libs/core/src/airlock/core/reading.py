"""Reading topics outside a stage's transactions: side channels, caches, benchmarks, tools.

Stages consume through :class:`~airlock.core.runtime.StageRuntime` (a consumer group, offsets
committed in their transactions). Everything else that reads Kafka — the llm-worker's cache
and pacing feeds, the benchmarks' watchers, the CLI — reads outside any group, sees only
committed records, and positions itself: :func:`committed_reader` builds that consumer and
:class:`TopicReader` follows whole topics with it in a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from airlock.core.admin import partition_counts
from airlock.core.settings import KafkaSettings

log = logging.getLogger("airlock.core.reading")

Position = Callable[[AIOKafkaConsumer, list[TopicPartition]], Awaitable[None]]
"""Puts a started consumer's assigned partitions where reading should begin."""

OnBatch = Callable[[TopicPartition, list[ConsumerRecord]], None]
"""Receives the records of one partition from one poll, in offset order."""


def committed_reader(kafka: KafkaSettings, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group that sees only committed records and commits nothing.

    Args:
        kafka: Connection settings.
        **options: Further ``AIOKafkaConsumer`` options (``fetch_max_wait_ms``…).
    """
    return AIOKafkaConsumer(
        **kafka.client_args(), enable_auto_commit=False, isolation_level="read_committed", **options
    )


async def from_beginning(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
    """:data:`Position`: everything the partitions hold."""
    await consumer.seek_to_beginning(*tps)


async def from_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
    """:data:`Position`: only what is written from now on (resolved now, so nothing is missed)."""
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)


class TopicReader:
    """Reads every partition of some topics in a background task and hands the records on.

    A failed poll is logged and retried (the broker may be restarting); ``on_batch`` runs in
    the reader's task, so it must not block.

    Args:
        kafka: Connection settings.
        topics: The topics to read; each must exist.
        on_batch: Called with each partition's records of each poll.
        fetch_max_wait_ms: How long the broker may hold a fetch with nothing new (latency of a reader).
        poll_timeout_ms: How long one poll waits for records.
        max_records: At most this many records per poll (``None``: no limit).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Iterable[str],
        on_batch: OnBatch,
        *,
        fetch_max_wait_ms: int = 100,
        poll_timeout_ms: int = 500,
        max_records: int | None = None,
    ) -> None:
        self._kafka = kafka
        self.topics = list(topics)
        self._on_batch = on_batch
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._poll_timeout_ms = poll_timeout_ms
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, position: Position = from_beginning) -> None:
        """Assign every partition of the topics, position them, and start reading.

        Raises:
            RuntimeError: A topic does not exist.
        """
        counts = await partition_counts(self._kafka, self.topics)
        missing = [topic for topic in self.topics if counts.get(topic, 0) < 1]
        if missing:
            raise RuntimeError(f"topics {', '.join(missing)} do not exist: run `airlock topics provision`")
        consumer = committed_reader(self._kafka, fetch_max_wait_ms=self._fetch_max_wait_ms)
        await consumer.start()
        tps = [TopicPartition(topic, p) for topic in self.topics for p in range(counts[topic])]
        consumer.assign(tps)
        await position(consumer, tps)
        self._consumer = consumer
        self.task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_records)
            except KafkaError as error:
                log.warning("reading %s failed (%s); retrying", ", ".join(self.topics), error)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                self._on_batch(tp, records)

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self._consumer is not None:
            await self._consumer.stop()
