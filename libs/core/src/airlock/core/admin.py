"""Idempotent topic provisioning and small admin queries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from airlock.core.settings import KafkaSettings
from airlock.core.topics import TopicSpec

log = logging.getLogger(__name__)


async def connect_admin(kafka: KafkaSettings, *, timeout_s: float = 60.0) -> AIOKafkaAdminClient:
    """Start an admin client, retrying while the broker is not reachable yet.

    Raises:
        KafkaConnectionError: When the broker stays unreachable for ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.2
    while True:
        admin = AIOKafkaAdminClient(**kafka.client_args())
        try:
            await admin.start()
            return admin
        except KafkaError as error:
            await admin.close()
            if loop.time() + delay > deadline:
                raise KafkaConnectionError(
                    f"Kafka at {kafka.bootstrap} not reachable after {timeout_s:.0f}s: {error}"
                ) from error
            log.warning("Kafka at %s not reachable yet (%s); retrying", kafka.bootstrap, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def probe_kafka(kafka: KafkaSettings) -> str | None:
    """``None`` when Kafka answers a metadata request, else a short reason."""
    admin = AIOKafkaAdminClient(**kafka.client_args())
    try:
        await admin.start()
        await admin.list_topics()
        return None
    except KafkaError as error:
        return f"{type(error).__name__}: {error}"
    finally:
        await admin.close()


async def provision(kafka: KafkaSettings, specs: Iterable[TopicSpec]) -> list[str]:
    """Create missing topics and grow partition counts that are too small.

    Safe to run any number of times, concurrently with running services: existing topics
    keep their data and configs; partitions are never reduced.

    Returns:
        Names of the topics created by this call.
    """
    specs = list(specs)
    admin = await connect_admin(kafka)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []
        if missing:
            new_topics = [
                NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs) for s in missing
            ]
            try:
                await admin.create_topics(new_topics)
                created = [spec.name for spec in missing]
            except TopicAlreadyExistsError:
                # Another provisioner won the race; the topics exist, which is all we need.
                pass
        present = [spec for spec in specs if spec.name in existing]
        if present:
            described = await admin.describe_topics([spec.name for spec in present])
            counts = {t["topic"]: len(t["partitions"]) for t in described}
            grow = {
                spec.name: NewPartitions(spec.partitions)
                for spec in present
                if counts.get(spec.name, spec.partitions) < spec.partitions
            }
            if grow:
                await admin.create_partitions(grow)
        await _wait_for_metadata(admin, [spec.name for spec in specs])
        return created
    finally:
        await admin.close()


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Wait until every topic has a leader for each partition (new topics take a moment)."""
    for _ in range(100):
        described = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
            return
        await asyncio.sleep(0.1)


async def partition_counts(kafka: KafkaSettings, names: list[str]) -> dict[str, int]:
    """Number of partitions of each named topic (0 when it does not exist)."""
    admin = await connect_admin(kafka)
    try:
        described = await admin.describe_topics(names)
        return {t["topic"]: (len(t["partitions"]) if t["error_code"] == 0 else 0) for t in described}
    finally:
        await admin.close()
