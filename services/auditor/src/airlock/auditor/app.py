"""Auditor wiring: ``faststream run airlock.auditor.app:app``."""

from __future__ import annotations

from airlock.auditor.chain import LedgerRecord
from airlock.auditor.handlers import SealHandler
from airlock.auditor.reader import read_partition_tail
from airlock.auditor.settings import AuditorSettings
from airlock.core import logs
from airlock.core.runtime import StageRuntime
from airlock.core.settings import load
from airlock.core.stage import StageContext
from airlock.core.topics import Topics

SERVICE = "auditor"


def create_runtime(settings: AuditorSettings | None = None) -> StageRuntime:
    """Build the auditor stage: audit topic in, ledger out, partition for partition."""
    settings = settings or load(AuditorSettings)
    topics = Topics(settings.kafka.topic_prefix)
    context = StageContext(SERVICE, topics)

    async def read_tail(partition: int, count: int) -> list[LedgerRecord]:
        return await read_partition_tail(settings.kafka, topics.ledger, partition, count)

    handler = SealHandler(context, read_tail, settings.dedupe_window)
    return StageRuntime(
        SERVICE,
        {topics.audit: handler},
        context=context,
        kafka=settings.kafka,
        settings=settings,
    )


logs.configure(SERVICE)
runtime = create_runtime()
app = runtime.app
