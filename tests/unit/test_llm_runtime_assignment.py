"""Records fetched while a partition's producer is still starting are not lost (stage runtime).

aiokafka applies a new assignment, and may fetch for it, before it awaits the rebalance
listener that starts the partition's transactional producer. Found by the llm-worker's
SIGKILL test: the restarted worker dropped the re-delivered request and sat on it. Broker and
producer are stand-ins here; the SIGKILL integration test exercises the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition

from airlock.core.runtime import StageRuntime
from airlock.core.settings import KafkaSettings, StageSettings
from airlock.core.stage import Incoming, Outcome, Outgoing, Result, StageContext
from airlock.core.topics import Topics

TP = TopicPartition("t.redacted", 0)


class Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.offsets: list[int] = []

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.sent.append(value)
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)  # what aiokafka's send returns: the delivery, awaited before the commit
        return delivered

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self.offsets.extend(offsets.values())

    async def stop(self) -> None:
        return None


class Echo:
    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        return [Outcome(records=[Outgoing(topic="t.out", value=r.value)]) for r in batch]

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        raise AssertionError("not expected")


class Consumer:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def committed(self, tp: TopicPartition) -> int | None:
        return None  # nothing committed yet: the runtime does not move the position

    async def position(self, tp: TopicPartition) -> int:
        return 2  # past the poll the test hands over (records 0 and 1)


def runtime(producer: Producer, consumer: Consumer, starting: asyncio.Event) -> StageRuntime:
    topics = Topics("t.")
    stage = StageRuntime(
        "llm-worker",
        {TP.topic: Echo()},
        context=StageContext("llm-worker", topics),
        kafka=KafkaSettings(),
        settings=StageSettings(),
    )

    async def slow_producer(tp: TopicPartition) -> Any:
        await starting.wait()  # the transactional producer's start (fencing) takes a while
        return producer

    stage._start_producer = slow_producer  # type: ignore[method-assign]
    stage.subscriber.consumer = consumer  # type: ignore[assignment]
    return stage


def record(offset: int) -> Incoming:
    return Incoming(topic=TP.topic, partition=TP.partition, offset=offset, value=f"r{offset}".encode())


async def test_records_fetched_before_the_listener_finished_are_processed_not_dropped() -> None:
    producer, consumer, starting = Producer(), Consumer(), asyncio.Event()
    stage = runtime(producer, consumer, starting)
    consumer.assigned = {TP}  # aiokafka has applied the assignment…
    assigning = asyncio.create_task(stage.assign([TP]))  # …and awaits the listener
    submitting = asyncio.create_task(stage._submit(TP, [record(0), record(1)]))  # a poll arrives meanwhile
    await asyncio.sleep(0.05)
    starting.set()
    await asyncio.gather(assigning, submitting)
    for _ in range(100):
        if producer.offsets:
            break
        await asyncio.sleep(0.01)
    await stage.revoke([TP], grace_s=1.0)
    assert producer.sent == [b"r0", b"r1"] and producer.offsets == [2]
    assert consumer.seeks == []


async def test_records_of_a_partition_not_assigned_to_this_consumer_are_left_alone() -> None:
    producer, consumer, starting = Producer(), Consumer(), asyncio.Event()
    stage = runtime(producer, consumer, starting)
    await stage._submit(TP, [record(0)])
    assert producer.sent == [] and consumer.seeks == []
