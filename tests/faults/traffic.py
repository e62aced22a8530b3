"""A steady stream of signed requests, and waiting for it to settle."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from airlock.client import AirlockClient
from airlock.core.settings import KafkaSettings
from airlock.core.topics import Topics
from airlock.devstack.cli.ops import read_lags
from airlock.devstack.mesh import service_inputs
from tests.faults.books import Books, balance, settled

PROMPTS = (
    "Hi, I am Jane Roe, mail me at jane.roe@example.com about order {n}.",
    "Summarise ticket {n} for John Smith (call +1 415 555 0134).",
    "What is the capital of France? ({n})",
    "Translate 'good morning' into German, please. ({n})",
)


@dataclass
class Stream:
    """Publishes ``rate`` requests per second until stopped; remembers every request id.

    A publish that fails (the broker is down) is counted, not retried: whether it reached
    the topic anyway is read back from the topic, which is what the books count.
    """

    client: AirlockClient
    phase: str
    rate: float = 5.0
    publish_timeout_s: float = 20.0
    max_pending: int = 64
    request_ids: set[str] = field(default_factory=set)
    errors: int = 0
    skipped: int = 0
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def _publish(self, n: int) -> None:
        request = self.client.build(
            PROMPTS[n % len(PROMPTS)].format(n=n),
            tenant=f"tenant-{n % 3}",
            model="gpt-4o-mini",
            request_id=f"{self.phase}-{n}-{uuid.uuid4().hex[:6]}",
        )
        self.request_ids.add(request.request_id)
        try:
            await asyncio.wait_for(self.client.publish(request), self.publish_timeout_s)
        except Exception:
            self.errors += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Publish on a fixed schedule (not after each answer), so faults meet a steady load."""
        started, n = time.monotonic(), 0
        while not stop.is_set():
            if len(self._pending) < self.max_pending:
                task = asyncio.create_task(self._publish(n))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            else:
                self.skipped += 1
            n += 1
            delay = started + n / self.rate - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(delay, 0))
        if self._pending:
            await asyncio.wait(self._pending)


@contextlib.asynccontextmanager
async def streaming(client: AirlockClient, phase: str, rate: float = 5.0) -> AsyncIterator[Stream]:
    """Run a :class:`Stream` for the duration of the ``async with`` block."""
    stream = Stream(client, phase, rate)
    stop = asyncio.Event()
    runner = asyncio.create_task(stream.run(stop))
    try:
        yield stream
    finally:
        stop.set()
        await runner


async def for_seconds(seconds: float, check: Callable[[], Awaitable[None]] | None = None) -> None:
    """Let the stream flow; ``check`` (if any) is called every second to fail fast."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check is not None:
            await check()
        await asyncio.sleep(1.0)


async def lag_report(kafka: KafkaSettings) -> str:
    """Each stage's uncommitted input per partition (where a stuck phase is stuck)."""
    lags, _ = await read_lags(kafka, service_inputs(Topics(kafka.topic_prefix)))
    return "; ".join(
        f"{stage} " + ", ".join(f"{lag.topic.rsplit('.', 1)[-1]}/{lag.partition}:{lag.lag}" for lag in partitions)
        for stage, partitions in lags.items()
    )


async def settle_and_balance(
    kafka: KafkaSettings,
    witness_root: Path,
    stream: Stream,
    *,
    started: float,
    timeout_s: float = 240.0,
) -> Books:
    """Wait until every published request of the stream is terminal and answered; draw up the books."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        published, terminal, answered = await settled(kafka, witness_root, stream.request_ids)
        if published and terminal >= published and answered >= published:
            break
        await asyncio.sleep(2.0)
    else:
        print(f"\n{stream.phase}: not settled after {timeout_s:.0f}s; {await lag_report(kafka)}")
    # A last look a little later: anything doubled by a late commit would show now.
    await asyncio.sleep(3.0)
    books = await balance(
        kafka,
        witness_root,
        stream.phase,
        stream.request_ids,
        sent=len(stream.request_ids),
        publish_errors=stream.errors,
    )
    books.seconds = time.monotonic() - started
    return books
