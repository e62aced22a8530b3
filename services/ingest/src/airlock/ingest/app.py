"""Ingest wiring: ``faststream run airlock.ingest.app:app``."""

from __future__ import annotations

import logging
from datetime import datetime

from airlock.core import logs
from airlock.core.admin import partition_counts
from airlock.core.authenticity import MeshSettings
from airlock.core.models import utcnow
from airlock.core.pricing import PriceTable
from airlock.core.runtime import StageRuntime
from airlock.core.settings import SettingsError, load
from airlock.core.stage import Incoming, StageContext
from airlock.core.telemetry import Telemetry
from airlock.core.topics import Topics
from airlock.ingest.clients import ClientRegistry
from airlock.ingest.contract import contract
from airlock.ingest.feeds import QuotaFeed, TopicWatch, nudge_quiet_partitions, read_seen
from airlock.ingest.handlers import IngestHandler
from airlock.ingest.noise import NoiseTally
from airlock.ingest.observability import clients_file_gauge, ingest_observer
from airlock.ingest.replay import SeenRecord
from airlock.ingest.settings import IngestSettings

SERVICE = "ingest"

log = logging.getLogger("airlock.ingest")


def create_runtime(settings: IngestSettings | None = None) -> StageRuntime:
    """Build the ingest stage from settings (the environment by default).

    The clients file, the quota state and the topics (partition count, reply topics) are read at
    start-up (not here), so building the app (e.g. for ``faststream docs gen``) needs no
    file and no broker.
    """
    settings = settings or load(IngestSettings)
    topics = Topics(settings.kafka.topic_prefix)
    context = StageContext(SERVICE, topics)
    registry = ClientRegistry(settings.clients_file)
    # Admission records count only when signed by their stage (the runtime loads the keys on start).
    feed = QuotaFeed(settings.kafka, topics, door=lambda: runtime.door(), signer=lambda: runtime.signer)
    watch = TopicWatch(settings.kafka, topics)

    async def load_seen(partition: int, since: datetime) -> list[SeenRecord | NoiseTally]:
        return await read_seen(settings.kafka, topics.ingest_seen, partition, since, door=runtime.door)

    def is_control(incoming: Incoming) -> bool:
        """Ingest's own nudges count only when ingest signed them (a client's would be noise)."""
        return runtime.door().signed_by("ingest", incoming.topic, incoming.key, incoming.value, incoming.headers)

    handler = IngestHandler(
        context,
        settings,
        registry,
        load_seen=load_seen,
        quota=feed,
        reply_topics=watch,
        partitions=lambda: watch.count,
        prices=PriceTable.configured(settings.prices_file, variable="AIRLOCK_INGEST_PRICES_FILE"),
        is_control=is_control,
    )
    telemetry = Telemetry.from_env(SERVICE)
    runtime = StageRuntime(
        SERVICE,
        {topics.requests: handler},
        context=context,
        kafka=settings.kafka,
        settings=settings,
        telemetry=telemetry,
        mesh=load(MeshSettings),
    )
    runtime.observe(ingest_observer(telemetry.metrics))
    # Not ready while an edit of the clients file is refused: a revocation that did not take is
    # an incident (ingest has no inbound traffic to lose; rollouts stop and the pods show it).
    runtime.readiness_check("clients", lambda: registry.refused or (None if registry.version else "not loaded"))
    clients_file_gauge(telemetry.metrics, lambda: registry.refused is not None)
    runtime.readiness_check("quota", lambda: None if feed.caught_up else "the admission log is not read up yet")

    async def start() -> None:
        registry.load()
        log.info("clients file loaded: %s", registry.summary())
        counts = await partition_counts(settings.kafka, [topics.requests, topics.ingest_seen])
        if counts.get(topics.ingest_seen, 0) < counts.get(topics.requests, 0):
            raise SettingsError(
                f"{topics.ingest_seen} needs at least as many partitions as {topics.requests} "
                f"({counts.get(topics.ingest_seen, 0)} < {counts.get(topics.requests, 0)}): "
                "run `airlock topics provision`"
            )
        await watch.start()
        await feed.start()

    async def stop() -> None:
        await watch.stop()
        await feed.stop()

    runtime.on_startup(start)
    runtime.run_alongside("clients file", lambda: registry.follow(settings.clients_reload_s))
    runtime.run_alongside(
        "noise nudges",
        lambda: nudge_quiet_partitions(
            settings.kafka,
            topics.requests,
            owned=lambda: [tp.partition for tp in runtime.assigned if tp.topic == topics.requests],
            due=lambda partition: handler.noise_due(partition, utcnow()),
            signer=lambda: runtime.signer,
            period_s=min(30.0, settings.noise_window_s / 4),
        ),
    )
    # Registered after the runtime's drain, so in-flight batches can still reach the feed.
    runtime.app.on_shutdown(stop)
    # The runtime's raw batch subscriber says nothing about payloads: publish the contract.
    runtime.app.schema = contract()
    return runtime


logs.configure(SERVICE)
runtime = create_runtime()
app = runtime.app
