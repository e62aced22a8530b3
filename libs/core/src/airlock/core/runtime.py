"""The stage runtime: consume → handler → outputs + audit events + offsets, in one transaction.

Every service is one :class:`StageRuntime`: a FastStream batch subscriber in the service's
consumer group (``airlock-<service>``, ``read_committed``, manual acknowledgement) feeding
the stage's processors, and one transactional producer per assigned input partition.

Why per partition: aiokafka's ``send_offsets_to_transaction`` does not carry the consumer
group generation (KIP-447), so a transactional id must be bound to an input partition for a
new owner's ``init_transactions`` to fence the old one. A partition's producer is created and
initialised on assignment — before its committed offset is fetched — and closed on
revocation, after its in-flight work has been committed or dropped.

Each poll's records are processed as soon as they arrive, concurrently with earlier
batches (the llm-worker needs many model calls in flight), but each partition commits its
outcomes strictly in offset order: a committer task per partition waits for the oldest
batch, then commits every finished batch behind it in one transaction. A record whose
processing raised is retried: outcomes before it are committed, the partition is rewound to
it, work queued behind it is discarded, and after ``max_attempts`` the processor's
``give_up`` turns it into an audited terminal failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.response import JSONResponse
from faststream.asgi.types import Scope
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from airlock.core import logs
from airlock.core.errors import ErrorCode, StageError
from airlock.core.settings import KafkaSettings, StageSettings
from airlock.core.stage import Incoming, Outcome, Processor, Result, StageContext

log = logging.getLogger("airlock.runtime")


@dataclass
class _Batch:
    generation: int
    records: list[Incoming]
    task: asyncio.Task[Sequence[Result]]


@dataclass
class _Partition:
    tp: TopicPartition
    producer: AIOKafkaProducer
    processor: Processor
    pending: deque[_Batch] = field(default_factory=deque)
    generation: int = 0
    #: After a rewind to offset N, batches not starting at N were fetched before it: stale.
    expect_first: int | None = None
    attempts: dict[int, int] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    committer: asyncio.Task[None] | None = None
    closing: bool = False


class _RecordBudget:
    """Bounds the records in flight in one process (back-pressure on the poll loop)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._changed = asyncio.Condition()

    async def acquire(self, count: int) -> None:
        async with self._changed:
            # A batch larger than the whole budget still runs, alone.
            await self._changed.wait_for(lambda: self._used == 0 or self._used + count <= self._limit)
            self._used += count

    async def release(self, count: int) -> None:
        async with self._changed:
            self._used -= count
            self._changed.notify_all()


async def _keep_raw_headers(records: Any, default: Callable[[Any], Awaitable[Any]]) -> Any:
    """Parse a poll without losing it to a header that is not UTF-8.

    FastStream's batch parser decodes every header as UTF-8 and drops the whole poll on one
    that is not; the stages read raw records, so parse a lenient copy and keep the originals.
    """
    try:
        return await default(records)
    except UnicodeDecodeError:
        lenient = tuple(
            dataclasses.replace(
                record, headers=[(k, (v or b"").decode("utf-8", "replace").encode()) for k, v in record.headers or ()]
            )
            for record in records
        )
        message = await default(lenient)
        message.raw_message = records
        return message


async def _raw_values(message: Any) -> list[bytes]:
    """The poll's values as bytes: the stage decodes records itself (and headers not at all)."""
    return [record.value or b"" for record in message.raw_message]


def _incoming(record: Any) -> Incoming:
    return Incoming(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value if record.value is not None else b"",
        headers=tuple((k, v if v is not None else b"") for k, v in (record.headers or ())),
        timestamp_ms=record.timestamp,
    )


class StageRuntime:
    """Runs a service's processors under Kafka transactions.

    Args:
        service: Service name; the consumer group is ``airlock-<service>``.
        routes: Input topic → processor for records from that topic.
        context: Audit and record builders (stage name, topics).
        kafka: Connection settings.
        settings: Batch, retry and size knobs.
        max_in_flight: Records being processed at once in this process.
    """

    def __init__(
        self,
        service: str,
        routes: Mapping[str, Processor],
        *,
        context: StageContext,
        kafka: KafkaSettings,
        settings: StageSettings,
        max_in_flight: int = 1024,
    ) -> None:
        self.service = service
        self.group_id = f"airlock-{service}"
        self.context = context
        self._routes = dict(routes)
        self._kafka = kafka
        self._settings = settings
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._budget = _RecordBudget(max_in_flight)
        self._closing = False
        self._startup_hooks: list[Callable[[], Awaitable[None]]] = []
        self._registered = asyncio.Condition()

        self.broker = KafkaBroker(
            kafka.bootstrap,
            security=kafka.faststream_security(),
            request_timeout_ms=kafka.request_timeout_ms,
            client_id=self.group_id,
            logger=logging.getLogger("airlock.broker"),
            # Per-message "Received/Processed" lines only at DEBUG: ids, never payloads.
            log_level=logging.DEBUG,
        )
        self.subscriber = self.broker.subscriber(
            *self._routes,
            group_id=self.group_id,
            batch=True,
            max_records=settings.max_batch,
            batch_timeout_ms=settings.poll_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(settings.max_message_bytes * 2, 1_048_576),
            fetch_max_bytes=max(settings.max_message_bytes * 4, 52_428_800),
            listener=_Rebalance(self),
            parser=_keep_raw_headers,
            decoder=_raw_values,
            title=f"{self.group_id}",
            description=f"The {service} stage's input.",
        )
        self.subscriber(self._on_batch)
        self._started = False
        self.app = _StageApp(
            self.broker,
            asgi_routes=[("/healthz", get(self._healthz)), ("/readyz", get(self._readyz))],
            logger=logging.getLogger("airlock.app"),
        )
        self.app.on_startup(self._run_startup_hooks)
        self.app.after_startup(self._mark_started)
        self.app.on_shutdown(self.drain)

    # -- wiring -----------------------------------------------------------------------------

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` before the broker connects (load models, keys…)."""
        self._startup_hooks.append(hook)

    async def _run_startup_hooks(self) -> None:
        # uvicorn installs its own log handlers when it starts; route them to ours again.
        logs.configure(self.service)
        await wait_for_kafka(self._kafka, self.service)
        await check_transactions(self._kafka, self.group_id)
        for hook in self._startup_hooks:
            await hook()

    async def _mark_started(self) -> None:
        self._started = True

    async def _healthz(self, scope: Scope) -> AsgiResponse:
        """Liveness: the process serves requests."""
        return JSONResponse({"service": self.service, "alive": True})

    async def _readyz(self, scope: Scope) -> AsgiResponse:
        """Readiness: connected and consuming (with partitions, or waiting for some)."""
        ready = self._started and not self._closing and self.subscriber.consumer is not None
        body = {
            "service": self.service,
            "ready": ready,
            "assigned": [f"{tp.topic}/{tp.partition}" for tp in self.assigned],
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @property
    def assigned(self) -> list[TopicPartition]:
        """Input partitions this process currently owns."""
        return sorted(self._partitions, key=lambda tp: (tp.topic, tp.partition))

    # -- consuming ----------------------------------------------------------------------------

    async def _on_batch(self, message: KafkaMessage) -> None:
        """FastStream handler: hand each partition's records to its processor."""
        raw = message.raw_message
        records = raw if isinstance(raw, tuple) else (raw,)
        by_partition: dict[TopicPartition, list[Incoming]] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            by_partition.setdefault(tp, []).append(_incoming(record))
        for tp, incoming in by_partition.items():
            await self._submit(tp, incoming)

    async def _submit(self, tp: TopicPartition, records: list[Incoming]) -> None:
        part = self._partitions.get(tp)
        if part is None and not self._closing:
            part = await self._being_assigned(tp, records[0].offset)
        if part is None or part.closing or self._closing:
            return  # not ours (any more): the owner reprocesses from the committed offset
        if part.expect_first is not None:
            if records[0].offset != part.expect_first:
                return  # fetched before the rewind; the re-fetch follows
            part.expect_first = None
        await self._budget.acquire(len(records))
        if self._partitions.get(tp) is not part or part.closing:
            await self._budget.release(len(records))
            return
        task = asyncio.create_task(part.processor.process(records))
        part.pending.append(_Batch(part.generation, records, task))
        part.wakeup.set()

    async def _being_assigned(self, tp: TopicPartition, first: int) -> _Partition | None:
        """The partition once :meth:`assign` has set it up, if the consumer already owns it.

        aiokafka applies a new assignment, and may fetch for it, *before* it awaits the
        rebalance listener that starts the partition's producer. Records of such a partition
        must not be dropped (the position would move past them and a later commit would skip
        them): wait for the set-up, or rewind so that they are fetched again.
        """
        consumer = self.subscriber.consumer
        if consumer is None or tp not in consumer.assignment():
            return None
        async with self._registered:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._registered.wait_for(lambda: tp in self._partitions), 30.0)
        part = self._partitions.get(tp)
        if part is None and tp in consumer.assignment():
            consumer.seek(tp, first)
        return part

    # -- committing ---------------------------------------------------------------------------

    async def _committer(self, part: _Partition) -> None:
        """Commit a partition's outcomes in offset order, one transaction per run of batches."""
        while True:
            if not part.pending:
                if part.closing:
                    return
                part.wakeup.clear()
                await part.wakeup.wait()
                continue
            await asyncio.wait([part.pending[0].task])
            batches: list[_Batch] = []
            while part.pending and part.pending[0].task.done():
                batches.append(part.pending.popleft())
            try:
                await self._settle(part, batches)
            finally:
                await self._budget.release(sum(len(b.records) for b in batches))

    async def _settle(self, part: _Partition, batches: list[_Batch]) -> None:
        outcomes: list[Outcome] = []
        first: int | None = None
        next_offset: int | None = None
        retry: tuple[Incoming, int, BaseException] | None = None
        for batch in batches:
            if batch.generation != part.generation or retry is not None:
                continue  # queued behind a record that is being retried
            results = _results_of(batch)
            for record, result in zip(batch.records, results, strict=True):
                if isinstance(result, BaseException):
                    attempt = part.attempts.get(record.offset, 0) + 1
                    if attempt < self._settings.max_attempts:
                        part.attempts[record.offset] = attempt
                        retry = (record, attempt, result)
                        break
                    result = self._give_up(part, record, result)
                if first is None:
                    first = record.offset
                outcomes.append(result)
                next_offset = record.offset + 1
        if outcomes and next_offset is not None and first is not None:
            try:
                await self._commit(part, outcomes, next_offset)
            except ProducerFenced:
                log.warning("producer for %s fenced: another replica owns it now", part.tp)
                self._discard(part, rewind_to=None)
                part.closing = True
                return
            except KafkaError as error:
                log.warning("commit on %s failed (%s); rewinding to %d", part.tp, error, first)
                self._discard(part, rewind_to=first)
                await self._renew_producer(part)
                await asyncio.sleep(self._backoff(1))
                return
            for offset in range(first, next_offset):
                part.attempts.pop(offset, None)
        if retry is not None:
            record, attempt, failure = retry
            log.warning(
                "%s at %s failed (attempt %d/%d): %s",
                self.service,
                record.source,
                attempt,
                self._settings.max_attempts,
                _describe(failure),
            )
            self._discard(part, rewind_to=record.offset)
            await asyncio.sleep(self._backoff(attempt))

    def _give_up(self, part: _Partition, record: Incoming, error: BaseException) -> Outcome:
        part.attempts.pop(record.offset, None)
        log.error(
            "%s gives up on %s after %d attempts: %s",
            self.service,
            record.source,
            self._settings.max_attempts,
            _describe(error),
        )
        try:
            return part.processor.give_up(record, error)
        except Exception as failure:  # a bug in give_up must not wedge the partition
            log.exception("give_up failed on %s", record.source)
            return self.context.poison(record, StageError(ErrorCode.INTERNAL, f"unrecoverable: {_describe(failure)}"))

    def _discard(self, part: _Partition, *, rewind_to: int | None) -> None:
        """Drop queued work for the partition and, if asked, rewind the consumer."""
        part.generation += 1
        for batch in part.pending:
            batch.task.cancel()
        self._reset(part)
        consumer = self.subscriber.consumer
        if rewind_to is not None and consumer is not None and not part.closing:
            part.expect_first = rewind_to
            consumer.seek(part.tp, rewind_to)

    async def _commit(self, part: _Partition, outcomes: list[Outcome], next_offset: int) -> None:
        producer = part.producer
        audit_topic = self.context.topics.audit
        async with producer.transaction():
            for outcome in outcomes:
                for record in outcome.records:
                    await producer.send(
                        record.topic,
                        record.value,
                        key=record.key,
                        headers=list(record.headers),
                        partition=record.partition,
                    )
                for event in outcome.events:
                    await producer.send(audit_topic, event.to_bytes(), key=event.airlock_id.encode())
            await producer.send_offsets_to_transaction({part.tp: next_offset}, self.group_id)

    @staticmethod
    def _reset(part: _Partition) -> None:
        reset = getattr(part.processor, "on_reset", None)
        if reset is not None:
            reset(part.tp.partition)

    def _backoff(self, attempt: int) -> float:
        base = self._settings.retry_backoff_ms / 1000
        cap = self._settings.retry_backoff_max_ms / 1000
        return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))

    # -- partitions -----------------------------------------------------------------------------

    async def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Take ownership: start (and thereby fence) a transactional producer per partition."""
        new = [tp for tp in partitions if tp not in self._partitions and tp.topic in self._routes]
        producers = await asyncio.gather(*(self._start_producer(tp) for tp in new))
        for tp, producer in zip(new, producers, strict=True):
            part = _Partition(tp, producer, self._routes[tp.topic])
            self._reset(part)
            part.committer = asyncio.create_task(self._committer(part))
            self._partitions[tp] = part
        async with self._registered:
            self._registered.notify_all()
        if new:
            log.info("%s assigned %s", self.service, _names(new))

    async def revoke(self, partitions: Sequence[TopicPartition], *, grace_s: float) -> None:
        """Give up ownership: finish (or drop) in-flight work, then close the producers."""
        parts = [self._partitions.pop(tp) for tp in partitions if tp in self._partitions]
        await asyncio.gather(*(self._close(part, grace_s) for part in parts))
        if parts:
            log.info("%s revoked %s", self.service, _names([p.tp for p in parts]))

    async def _close(self, part: _Partition, grace_s: float) -> None:
        part.closing = True
        part.wakeup.set()
        if part.committer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(part.committer), grace_s)
            except TimeoutError:
                log.warning("%s: in-flight work on %s left uncommitted", self.service, part.tp)
                self._discard(part, rewind_to=None)
                part.committer.cancel()
                await asyncio.gather(part.committer, return_exceptions=True)
        self._reset(part)
        await part.producer.stop()

    async def _renew_producer(self, part: _Partition) -> None:
        """Replace a producer after a failed commit.

        A transaction that could not be committed or aborted (broker restart, network) can
        leave the producer in an error state; a fresh one with the same transactional id
        aborts whatever the old one left open and fences it.
        """
        try:
            await part.producer.stop()
        except Exception as error:  # the old producer is being discarded either way
            log.debug("stopping the failed producer for %s: %s", part.tp, error)
        part.producer = await self._start_producer(part.tp)

    async def _start_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        transactional_id = f"{self.group_id}.{tp.topic}.{tp.partition}"
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                **self._kafka.client_args(),
                transactional_id=transactional_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=0,
                max_request_size=max(self._settings.max_message_bytes * 2, 1_048_576),
            )
            try:
                await producer.start()
                return producer
            except KafkaError as error:
                await producer.stop()
                log.warning("cannot start producer %s (%s); retrying", transactional_id, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def drain(self) -> None:
        """Shutdown: stop taking records, let in-flight work commit within the grace period."""
        self._closing = True
        await self.revoke(list(self._partitions), grace_s=self._settings.shutdown_grace_s)


class _StageApp(AsgiFastStream):
    """The ASGI app of a stage: a failed start-up ends the process (so it is restarted)."""

    async def run(self, log_level: int = logging.INFO, run_extra_options: dict[str, Any] | None = None) -> None:
        """Run under uvicorn with ``lifespan=on`` unless told otherwise.

        uvicorn's default (``auto``) logs a failed start-up and keeps serving a dead app.
        """
        options = dict(run_extra_options or {})
        options.setdefault("lifespan", "on")
        await super().run(log_level, options)


class TransactionsUnsupported(RuntimeError):
    """The Kafka cluster refuses transactional producers, which every stage requires."""


async def wait_for_kafka(kafka: KafkaSettings, service: str) -> None:
    """Block start-up until Kafka answers, retrying with capped backoff and one log line per try."""
    from airlock.core.admin import probe_kafka

    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        error = await probe_kafka(kafka)
        if error is None:
            if attempt > 1:
                log.info("%s: Kafka at %s is reachable", service, kafka.bootstrap)
            return
        log.warning(
            "%s: Kafka at %s not reachable (%s); retry %d in %.1fs",
            service,
            kafka.bootstrap,
            error,
            attempt,
            delay,
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def check_transactions(kafka: KafkaSettings, group_id: str) -> None:
    """Fail start-up with a plain message if the cluster cannot run transactional producers.

    Raises:
        TransactionsUnsupported: The broker refused ``InitProducerId`` for a transactional id.
    """
    producer = AIOKafkaProducer(**kafka.client_args(), transactional_id=f"{group_id}.startup-check")
    try:
        await producer.start()
    except KafkaError as error:
        raise TransactionsUnsupported(
            f"Kafka at {kafka.bootstrap} refuses transactional producers ({type(error).__name__}: {error}); "
            "Airlock commits every stage's output, audit event and offsets in one transaction and "
            "cannot run without them (check the broker version, transaction.state.log settings and "
            "the TransactionalId ACLs of this service's principal)"
        ) from None
    finally:
        await producer.stop()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: StageRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._runtime.revoke(list(revoked), grace_s=self._runtime._settings.shutdown_grace_s)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._runtime.assign(list(assigned))


def _results_of(batch: _Batch) -> Sequence[Result]:
    if batch.task.cancelled():
        error: BaseException = asyncio.CancelledError()
        return [error] * len(batch.records)
    failure = batch.task.exception()
    if failure is not None:
        return [failure] * len(batch.records)
    results = batch.task.result()
    if len(results) != len(batch.records):
        mismatch = RuntimeError(f"processor returned {len(results)} results for {len(batch.records)}")
        return [mismatch] * len(batch.records)
    return results


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _names(tps: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in tps)
