"""One record's failure stays that record's: the runtime isolates before it blames, and gives up in bounds.

Found by a security review of the running mesh: a poison record that made a processor raise
for its whole poll had the runtime retry the poll's *first* record five times and give it up
as ``internal``, then the next — innocent requests of other clients refused, one by one. And
a record whose outcome could not be committed (a reply topic that does not exist) was
retried forever: its partition answered no one again. Broker and producer are stand-ins
here (the redelivery tests' ones); ``tests/security`` runs the same attacks on the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import UnknownTopicOrPartitionError

from airlock.core.errors import ErrorCode, StageError
from airlock.core.runtime import StageRuntime
from airlock.core.settings import KafkaSettings, StageSettings
from airlock.core.stage import Incoming, Outcome, Outgoing, Result, StageContext
from airlock.core.topics import Topics
from tests.unit.test_llm_runtime_assignment import Producer
from tests.unit.test_runtime_redelivery import TP, Consumer

TOPICS = Topics("t.")
CONTEXT = StageContext("redactor", TOPICS)


class PoisonIntolerant:
    """Raises for a whole batch that holds ``b"poison"`` (as an unguarded parser would)."""

    def __init__(self) -> None:
        self.given_up: list[int] = []

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        if any(record.value == b"poison" for record in batch):
            raise RecursionError("maximum recursion depth exceeded")
        return [Outcome(records=[Outgoing(topic="t.out", value=record.value)]) for record in batch]

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        self.given_up.append(incoming.offset)
        return CONTEXT.poison(incoming, StageError(ErrorCode.INTERNAL, "kept failing"))


class RepliesTo:
    """Answers each record on the topic its value names (``b"t.missing"`` does not exist)."""

    def __init__(self) -> None:
        self.given_up: list[int] = []

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        return [Outcome(records=[Outgoing(topic=record.value.decode(), value=b"reply")]) for record in batch]

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        self.given_up.append(incoming.offset)
        reply = Outgoing(topic=incoming.value.decode(), value=b"error")  # fails again: dropped
        return Outcome(records=[reply]) + CONTEXT.poison(incoming, StageError(ErrorCode.INTERNAL, "no"))


class Broker(Producer):
    """A producer whose transaction fails, like aiokafka's, on a record to a missing topic."""

    def __init__(self, consumer: Consumer, committed: list[tuple[str, bytes]], offsets: list[int]) -> None:
        super().__init__()
        self.pending: list[tuple[str, bytes]] = []
        self.consumer, self.committed, self.committed_offsets = consumer, committed, offsets

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        self.pending = []  # what an aborted transaction wrote is never read
        return contextlib.nullcontext()

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        if topic == "t.missing":
            raise UnknownTopicOrPartitionError()
        self.pending.append((topic, value))
        return await super().send(topic, value)

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group: str) -> None:
        self.committed.extend(self.pending)
        self.committed_offsets.extend(offsets.values())
        self.consumer.committed_offset = self.committed_offsets[-1]


Written = list[tuple[str, bytes]]


def stage_with(processor: Any, consumer: Consumer, committed: Written, offsets: list[int]) -> StageRuntime:
    stage = StageRuntime(
        "redactor",
        {TP.topic: processor},
        context=CONTEXT,
        kafka=KafkaSettings(),
        settings=StageSettings(max_attempts=3, retry_backoff_ms=1, retry_backoff_max_ms=5),
    )

    async def start_producer(tp: Any) -> Any:
        return Broker(consumer, committed, offsets)

    stage._start_producer = start_producer  # type: ignore[method-assign]
    stage.subscriber.consumer = consumer  # type: ignore[assignment]
    return stage


async def consume(stage: StageRuntime, consumer: Consumer, values: list[bytes], offsets: list[int]) -> None:
    """Poll like the consumer would (from its position, after each seek) until all is committed."""
    end = len(values)
    for _ in range(2_000):
        if offsets and offsets[-1] == end:
            return
        part = stage._partitions[TP]
        if consumer.fetched_to < end and not part.recovering:
            polled = consumer.poll(*range(consumer.fetched_to, end))
            await stage._submit(TP, [r.__class__(**{**r.__dict__, "value": values[r.offset]}) for r in polled])
        await asyncio.sleep(0.005)
    raise AssertionError(f"not all committed: {offsets}")


async def test_a_poll_that_fails_as_a_whole_is_retried_record_by_record_and_only_the_poison_given_up() -> None:
    values = [b"a", b"b", b"poison", b"c", b"d"]
    processor, consumer, committed, offsets = PoisonIntolerant(), Consumer(committed=0), [], []
    stage = stage_with(processor, consumer, committed, offsets)

    await stage.assign([TP])
    await consume(stage, consumer, values, offsets)
    await stage.revoke([TP], grace_s=1.0)

    assert processor.given_up == [2], "only the poison is blamed"
    assert [value for topic, value in committed if topic == "t.out"] == [b"a", b"b", b"c", b"d"]
    assert [topic for topic, _ in committed].count(TOPICS.dlq) == 1


async def test_an_outcome_that_cannot_be_committed_is_diverted_after_bounded_attempts() -> None:
    values = [b"t.out", b"t.missing", b"t.out"]
    processor, consumer, committed, offsets = RepliesTo(), Consumer(committed=0), [], []
    stage = stage_with(processor, consumer, committed, offsets)

    await stage.assign([TP])
    await consume(stage, consumer, values, offsets)
    await stage.revoke([TP], grace_s=1.0)

    assert [topic for topic, _ in committed if topic != TOPICS.audit] == ["t.out", TOPICS.dlq, "t.out"]
    reasons = [value for topic, value in committed if topic == TOPICS.audit and b"could not be written" in value]
    assert len(reasons) == 1 and b"UnknownTopicOrPartitionError" in reasons[0]
    assert processor.given_up == [1]
