"""A partition's records are committed once per ownership, however often a poll hands them over.

Found by the fault suite (``tests/faults``, scaling the redactor 1→3→1 under load): a replica
that lost a partition in one rebalance and got it back in the next processed a poll fetched
under the earlier ownership *and* the same records fetched again from the committed offset,
and committed both — the caller got two replies. aiokafka also reads the committed offset
concurrently with the rebalance listener, before the new producer has waited for (or
aborted) the previous owner's last transaction. The runtime now rereads the committed
offset after fencing, seeks there, and refuses records below it or fetched before a seek.
Broker and producer are stand-ins; the fault suite exercises the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from airlock.core.runtime import StageRuntime
from airlock.core.settings import KafkaSettings, StageSettings
from airlock.core.stage import Incoming, StageContext
from airlock.core.topics import Topics
from tests.unit.test_llm_runtime_assignment import Echo, Producer

TP = TopicPartition("t.accepted", 0)


class Consumer:
    """What the runtime asks of aiokafka's consumer: assignment, committed offset, position, seek."""

    def __init__(self, committed: int | None) -> None:
        self.assigned = {TP}
        self.committed_offset = committed
        self.fetched_to = 0  # the position: where the next fetch starts
        self.seeks: list[int] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offset

    async def position(self, tp: TopicPartition) -> int:
        return self.fetched_to

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.fetched_to = offset

    def poll(self, *offsets: int) -> list[Incoming]:
        """Records as a poll returns them (the position moves past them)."""
        self.fetched_to = offsets[-1] + 1
        return [record(offset) for offset in offsets]


def record(offset: int) -> Incoming:
    return Incoming(topic=TP.topic, partition=TP.partition, offset=offset, value=f"r{offset}".encode())


def runtime(consumer: Consumer, producers: list[Producer], make: Callable[[], Producer] = Producer) -> StageRuntime:
    stage = StageRuntime(
        "redactor",
        {TP.topic: Echo()},
        context=StageContext("redactor", Topics("t.")),
        kafka=KafkaSettings(),
        settings=StageSettings(),
    )

    async def start_producer(tp: TopicPartition) -> Any:
        producers.append(make())
        return producers[-1]

    stage._start_producer = start_producer  # type: ignore[method-assign]
    stage.subscriber.consumer = consumer  # type: ignore[assignment]
    return stage


async def committed(stage: StageRuntime, producer: Producer, count: int) -> None:
    for _ in range(200):
        if len(producer.offsets) >= count:
            return
        await asyncio.sleep(0.01)


async def test_a_poll_from_an_earlier_ownership_is_not_processed_again() -> None:
    producers: list[Producer] = []
    consumer = Consumer(committed=5)
    stage = runtime(consumer, producers)
    stale = [record(3), record(4), record(5)]  # polled before the partition was lost, handed over late

    await stage.assign([TP])
    assert consumer.seeks == [5], "the new owner starts from the committed offset read after fencing"
    await stage._submit(TP, stale)
    await stage._submit(TP, consumer.poll(5, 6))
    await stage._submit(TP, [record(5), record(6)])  # the same records handed over again
    await committed(stage, producers[0], 1)
    await stage.revoke([TP], grace_s=1.0)

    assert producers[0].sent == [b"r5", b"r6"]
    assert producers[0].offsets == [7]


async def test_records_fetched_before_the_seek_to_the_committed_offset_wait_for_the_refetch() -> None:
    producers: list[Producer] = []
    consumer = Consumer(committed=5)
    stage = runtime(consumer, producers)
    early = consumer.poll(5, 6, 7)  # fetched while the listener was still starting the producer

    await stage.assign([TP])  # seeks back to 5
    await stage._submit(TP, early)
    assert producers[0].sent == [], "fetched before the seek: stale, the consumer fetches them again"
    await stage._submit(TP, consumer.poll(5, 6, 7))
    await committed(stage, producers[0], 1)
    await stage.revoke([TP], grace_s=1.0)

    assert producers[0].sent == [b"r5", b"r6", b"r7"] and producers[0].offsets == [8]


async def test_without_a_committed_offset_the_first_poll_is_processed() -> None:
    producers: list[Producer] = []
    consumer = Consumer(committed=None)
    stage = runtime(consumer, producers)

    await stage.assign([TP])
    await stage._submit(TP, consumer.poll(0, 1))
    await committed(stage, producers[0], 1)
    await stage.revoke([TP], grace_s=1.0)

    assert consumer.seeks == [] and producers[0].sent == [b"r0", b"r1"]


async def test_a_replica_shutting_down_takes_no_partition() -> None:
    producers: list[Producer] = []
    consumer = Consumer(committed=0)
    stage = runtime(consumer, producers)
    await stage.drain()

    await stage.assign([TP])  # a rebalance that completes while the process stops

    assert producers == [], "starting a producer now would fence the partition's real owner"
    assert stage.assigned == []


class CommitsButSaysItFailed(Producer):
    """The broker commits the transaction, then the connection drops before the answer arrives."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self.consumer = consumer

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        yield
        self.consumer.committed_offset = self.offsets[-1]
        raise KafkaConnectionError("connection closed while committing")

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:  # type: ignore[override]
        return self._transaction()


async def test_a_commit_that_failed_here_but_succeeded_at_the_broker_is_not_redone() -> None:
    producers: list[Producer] = []
    consumer = Consumer(committed=None)
    made = iter([CommitsButSaysItFailed(consumer), Producer()])
    stage = runtime(consumer, producers, make=lambda: next(made))

    await stage.assign([TP])
    await stage._submit(TP, consumer.poll(0, 1))
    for _ in range(300):
        if len(producers) == 2 and consumer.seeks[-1:] == [2]:
            break
        await asyncio.sleep(0.01)
    await stage._submit(TP, [record(0), record(1)])  # the failed batch handed over again
    await stage._submit(TP, consumer.poll(2))
    await committed(stage, producers[1], 1)
    await stage.revoke([TP], grace_s=1.0)

    assert consumer.seeks == [2], "on from what the broker had committed, not back to the failed batch"
    assert producers[0].sent == [b"r0", b"r1"] and producers[1].sent == [b"r2"]
    assert producers[1].offsets == [3]


class AbortedAfterReportingSuccess(Producer):
    """The first commit is reported done but the broker never committed it; the second one fails."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self.consumer = consumer
        self.commits = 0

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        yield
        self.commits += 1
        if self.commits == 2:
            raise KafkaConnectionError("broker restarting")

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:  # type: ignore[override]
        return self._transaction()


async def test_an_earlier_commit_the_broker_aborted_is_redone_not_skipped() -> None:
    producers: list[Producer] = []
    consumer = Consumer(committed=0)
    made = iter([AbortedAfterReportingSuccess(consumer), Producer()])
    stage = runtime(consumer, producers, make=lambda: next(made))

    await stage.assign([TP])
    await stage._submit(TP, consumer.poll(0, 1))  # "committed" (offset 2), but the broker aborted it
    await committed(stage, producers[0], 1)
    await stage._submit(TP, consumer.poll(2, 3))  # this commit fails; the committed offset is still 0
    for _ in range(300):
        if len(producers) == 2 and consumer.seeks[-1:] == [0]:
            break
        await asyncio.sleep(0.01)
    await stage._submit(TP, consumer.poll(0, 1, 2, 3))
    await committed(stage, producers[1], 1)
    await stage.revoke([TP], grace_s=1.0)

    assert consumer.seeks == [0, 0], "back to the committed offset, not on from the failed batch"
    assert producers[1].sent == [b"r0", b"r1", b"r2", b"r3"] and producers[1].offsets == [4]


class SlowToReplace(Producer):
    """Fails its commit; the replacement producer then takes a while to start (broker restarting)."""

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        yield
        raise KafkaConnectionError("broker restarting")

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:  # type: ignore[override]
        return self._transaction()


async def test_nothing_is_processed_while_a_failed_commit_is_being_recovered() -> None:
    producers: list[Producer] = []
    consumer, broker_back = Consumer(committed=0), asyncio.Event()
    made = iter([SlowToReplace(), Producer()])
    stage = runtime(consumer, producers, make=lambda: next(made))
    replacing = stage._start_producer

    async def start_producer(tp: TopicPartition) -> Any:
        if producers:
            await broker_back.wait()
        return await replacing(tp)

    stage._start_producer = start_producer  # type: ignore[method-assign]
    processed: list[int] = []
    stage._routes[TP.topic] = processor = Echo()
    original = processor.process

    async def counting(batch: Any) -> Any:
        processed.extend(r.offset for r in batch)
        return await original(batch)

    processor.process = counting  # type: ignore[method-assign]

    await stage.assign([TP])
    await stage._submit(TP, consumer.poll(0, 1))
    await asyncio.sleep(0.3)  # the commit fails; the new producer waits for the broker
    await stage._submit(TP, consumer.poll(2, 3))  # a poll arrives meanwhile
    await asyncio.sleep(0.05)
    assert processed == [0, 1], "while the outcome of the failed commit is unknown, nothing is processed"
    broker_back.set()
    for _ in range(300):
        if consumer.seeks[-1:] == [0] and len(consumer.seeks) == 2:
            break
        await asyncio.sleep(0.01)
    await stage._submit(TP, consumer.poll(0, 1, 2, 3))
    await committed(stage, producers[1], 1)
    await stage.revoke([TP], grace_s=1.0)

    assert producers[1].sent == [b"r0", b"r1", b"r2", b"r3"] and producers[1].offsets == [4]
