"""Auditor wiring: ``faststream run airlock.auditor.app:app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from aiokafka import AIOKafkaProducer

from airlock.auditor.chain import LedgerRecord
from airlock.auditor.checkpointing import CheckpointPolicy, Notary, load_signing_keys
from airlock.auditor.handlers import CHECKPOINT_TICK, SealHandler
from airlock.auditor.observability import auditor_observer
from airlock.auditor.reader import read_partition_tail
from airlock.auditor.settings import AuditorSettings
from airlock.auditor.ticker import CheckpointTicker
from airlock.auditor.witness import Witness
from airlock.core import headers as h
from airlock.core import logs
from airlock.core.admin import partition_counts
from airlock.core.anomaly import AnomalySettings, AuditWatch
from airlock.core.authenticity import MeshSettings
from airlock.core.runtime import StageRuntime
from airlock.core.settings import load
from airlock.core.stage import StageContext
from airlock.core.telemetry import Telemetry
from airlock.core.topics import Topics

SERVICE = "auditor"
log = logging.getLogger("airlock.auditor")


def create_runtime(settings: AuditorSettings | None = None) -> StageRuntime:
    """Build the auditor stage: audit topic in, ledger and checkpoints out, partition for partition."""
    settings = settings or load(AuditorSettings)
    topics = Topics(settings.kafka.topic_prefix)
    context = StageContext(SERVICE, topics)
    keys = load_signing_keys(settings)
    witness = Witness(settings.witness_dir, topics.ledger) if settings.witness_dir else None
    policy = CheckpointPolicy(settings.checkpoint_every, settings.checkpoint_interval_s)

    async def read_tail(partition: int, count: int) -> list[LedgerRecord]:
        return await read_partition_tail(settings.kafka, topics.ledger, partition, count)

    # Rate floors scale with this replica's share of the audit partitions (known once assigned).
    audit_partitions: list[int] = []

    def share() -> float:
        total = audit_partitions[0] if audit_partitions else 1
        return min(1.0, max(1, len(owned())) / max(1, total))

    watch = AuditWatch(load(AnomalySettings), share=share, remember=max(settings.dedupe_window, 1))
    handler = SealHandler(
        context,
        read_tail,
        settings.dedupe_window,
        notary=Notary(keys, topics.ledger, witness),
        policy=policy,
        watch=watch,
    )
    telemetry = Telemetry.from_env(SERVICE)
    runtime = StageRuntime(
        SERVICE,
        {topics.audit: handler},
        context=context,
        kafka=settings.kafka,
        settings=settings,
        telemetry=telemetry,
        mesh=load(MeshSettings),
    )
    runtime.observe(auditor_observer(telemetry.metrics, topics))
    # Checkpoints go to the witness only once committed (a rolled-back one would read as a rewrite).
    runtime.observe(handler.committed)
    if settings.witness_dir is not None:
        directory = settings.witness_dir
        runtime.readiness_check(
            "witness", lambda: None if os.access(directory, os.W_OK) else "witness directory not writable"
        )

    async def count_audit_partitions() -> None:
        counts = await partition_counts(settings.kafka, [topics.audit])
        audit_partitions.append(max(1, counts.get(topics.audit, 1)))

    async def publish_keys() -> None:
        if witness is None:
            log.warning("AIRLOCK_AUDITOR_WITNESS_DIR is unset: checkpoints go to Kafka only")
            return
        await asyncio.to_thread(witness.publish_keys, keys.public_keys())
        log.info("signing with key %s; witness %s", keys.active, witness.directory)

    # Created on start-up: aiokafka clients bind to the running event loop.
    producers: list[AIOKafkaProducer] = []
    tasks: list[asyncio.Task[None]] = []

    async def publish_tick(partition: int) -> None:
        value = b'{"control":"checkpoint"}'
        headers = [(h.CONTROL, CHECKPOINT_TICK.encode())]
        if runtime.signer is not None:
            headers.append(runtime.signer.header(topics.audit, None, value))
        await producers[0].send_and_wait(topics.audit, value, partition=partition, headers=headers)

    def owned() -> list[int]:
        return [tp.partition for tp in runtime.assigned if tp.topic == topics.audit]

    async def start_ticker() -> None:
        producer = AIOKafkaProducer(**settings.kafka.client_args(), enable_idempotence=True, acks="all")
        await producer.start()
        producers.append(producer)
        ticker = CheckpointTicker(handler, owned, publish_tick, settings.checkpoint_interval_s)
        tasks.append(asyncio.create_task(ticker.run()))

    async def stop_ticker() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for producer in producers:
            await producer.stop()

    runtime.on_startup(publish_keys)
    runtime.on_startup(count_audit_partitions)
    runtime.app.after_startup(start_ticker)
    runtime.app.on_shutdown(stop_ticker)
    return runtime


logs.configure(SERVICE)
runtime = create_runtime()
app = runtime.app
