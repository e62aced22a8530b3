"""Ingest wiring: ``faststream run airlock.ingest.app:app``."""

from __future__ import annotations

from airlock.core import logs
from airlock.core.runtime import StageRuntime
from airlock.core.settings import load
from airlock.core.stage import RecordProcessor, StageContext
from airlock.core.topics import Topics
from airlock.ingest.handlers import IngestHandler
from airlock.ingest.settings import IngestSettings

SERVICE = "ingest"


def create_runtime(settings: IngestSettings | None = None) -> StageRuntime:
    """Build the ingest stage from settings (the environment by default)."""
    settings = settings or load(IngestSettings)
    topics = Topics(settings.kafka.topic_prefix)
    context = StageContext(SERVICE, topics)
    handler = IngestHandler(context, settings)
    return StageRuntime(
        SERVICE,
        {topics.requests: RecordProcessor(handler.handle, handler.give_up)},
        context=context,
        kafka=settings.kafka,
        settings=settings,
    )


logs.configure(SERVICE)
runtime = create_runtime()
app = runtime.app
