"""Start-up waits for Kafka with backoff; shutdown commits in-flight work or leaves it uncommitted.

Broker and producer are stand-ins here (pure runtime logic); the fault suite
(``tests/faults/test_books_under_faults.py``) starts a service before its broker and
SIGTERMs one mid-stream against the real ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from airlock.core.runtime import StageRuntime, wait_for_kafka
from airlock.core.settings import KafkaSettings, StageSettings
from airlock.core.stage import Incoming, Outcome, Outgoing, Result, StageContext
from airlock.core.topics import Topics
from tests.unit.test_llm_runtime_assignment import Producer
from tests.unit.test_runtime_redelivery import TP, Consumer


class Slow:
    """A processor whose work takes ``seconds`` (a model call in flight)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        self.started.set()
        await asyncio.sleep(self.seconds)
        return [Outcome(records=[Outgoing(topic="t.out", value=r.value)]) for r in batch]

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        raise AssertionError("not expected")


def stage_with(processor: Slow, grace_s: float, producers: list[Producer], consumer: Consumer) -> StageRuntime:
    stage = StageRuntime(
        "llm-worker",
        {TP.topic: processor},
        context=StageContext("llm-worker", Topics("t.")),
        kafka=KafkaSettings(),
        settings=StageSettings(shutdown_grace_s=grace_s),
    )

    async def start_producer(tp: Any) -> Any:
        producers.append(Producer())
        return producers[-1]

    stage._start_producer = start_producer  # type: ignore[method-assign]
    stage.subscriber.consumer = consumer  # type: ignore[assignment]
    return stage


async def test_shutdown_commits_in_flight_work_that_finishes_within_the_grace_period() -> None:
    producers: list[Producer] = []
    consumer, work = Consumer(committed=None), Slow(0.2)
    stage = stage_with(work, grace_s=5.0, producers=producers, consumer=consumer)
    await stage.assign([TP])
    await stage._submit(TP, consumer.poll(0, 1))
    await work.started.wait()

    await stage.drain()

    assert producers[0].sent == [b"r0", b"r1"], "the work in flight at SIGTERM is committed"
    assert producers[0].offsets == [2], "with its input offsets, in the same transaction"
    assert stage.assigned == []


async def test_shutdown_leaves_work_beyond_the_grace_period_wholly_uncommitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producers: list[Producer] = []
    consumer, work = Consumer(committed=None), Slow(60.0)
    stage = stage_with(work, grace_s=0.2, producers=producers, consumer=consumer)
    await stage.assign([TP])
    await stage._submit(TP, consumer.poll(0, 1))
    await work.started.wait()

    with caplog.at_level(logging.WARNING, logger="airlock.runtime"):
        await asyncio.wait_for(stage.drain(), 10)

    assert producers[0].sent == [] and producers[0].offsets == [], (
        "nothing half-committed: no output and no offset, so the next owner processes it again"
    )
    assert "left uncommitted" in caplog.text
    assert stage._budget._used == 0, "abandoned work gives its in-flight budget back (or the poll loop stalls)"


async def test_revocations_that_time_out_do_not_exhaust_the_in_flight_budget() -> None:
    producers: list[Producer] = []
    consumer, work = Consumer(committed=None), Slow(60.0)
    stage = stage_with(work, grace_s=0.05, producers=producers, consumer=consumer)
    stage._budget._limit = 4

    for round_ in range(3):
        await stage.assign([TP])
        await stage._submit(TP, consumer.poll(4 * round_, 4 * round_ + 1, 4 * round_ + 2))
        await asyncio.wait_for(stage.revoke([TP], grace_s=0.05), 10)

    await stage.assign([TP])
    await asyncio.wait_for(stage._submit(TP, consumer.poll(12, 13, 14)), 5)
    assert stage._budget._used == 3, "after three abandoned rounds the budget still takes a new poll"
    await stage.revoke([TP], grace_s=0.05)


async def test_start_up_retries_an_unreachable_broker_with_growing_delays_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    answers = iter(["KafkaConnectionError: connection refused"] * 3 + [None])

    async def probe(kafka: KafkaSettings) -> str | None:
        return next(answers)

    monkeypatch.setattr("airlock.core.admin.probe_kafka", probe)
    with caplog.at_level(logging.INFO, logger="airlock.runtime"):
        await asyncio.wait_for(wait_for_kafka(KafkaSettings(bootstrap="127.0.0.1:1"), "redactor"), 30)

    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert retries == [
        f"redactor: Kafka at 127.0.0.1:1 not reachable (KafkaConnectionError: connection refused); retry {n} in {s}"
        for n, s in ((1, "0.5s"), (2, "1.0s"), (3, "2.0s"))
    ], "one clear line per try, with the delay growing"
    assert any("is reachable" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
