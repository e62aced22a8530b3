"""Idempotent topic provisioning and small admin queries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from airlock.core.access import Acl
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


async def list_topics(kafka: KafkaSettings) -> list[str]:
    """The names of the topics this principal may see (Describe)."""
    admin = await connect_admin(kafka)
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def partition_counts(kafka: KafkaSettings, names: list[str]) -> dict[str, int]:
    """Number of partitions of each named topic (0 when it does not exist)."""
    admin = await connect_admin(kafka)
    try:
        described = await admin.describe_topics(names)
        return {t["topic"]: (len(t["partitions"]) if t["error_code"] == 0 else 0) for t in described}
    finally:
        await admin.close()


#: SCRAM iterations for new users (Kafka's minimum is 4096).
SCRAM_ITERATIONS = 8192


class AccessError(RuntimeError):
    """The broker refused to create a user or an ACL (the message says which and why)."""


def _failures(what: str, futures: Mapping[Any, Any]) -> list[str]:
    """``what <item>: <reason>`` for each of librdkafka's futures that failed (it raises KafkaException)."""
    failed = []
    for item, future in futures.items():
        try:
            future.result()
        except Exception as error:  # each failure is reported; none hides another
            failed.append(f"{what} {item}: {error}")
    return failed


def _apply_access_blocking(kafka: KafkaSettings, users: Mapping[str, str], acls: Sequence[Acl]) -> None:
    # aiokafka has neither the SCRAM nor the ACL admin APIs; librdkafka has both.
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    client = AdminClient(kafka.librdkafka_config())
    timeout = kafka.request_timeout_ms / 1000
    failures: list[str] = []
    if users:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(name, info, password.encode()) for name, password in users.items()
        ]
        failures += _failures("user", client.alter_user_scram_credentials(upserts, request_timeout=timeout))
    if acls:
        bindings = [
            AclBinding(
                getattr(ResourceType, acl.resource),
                acl.name,
                getattr(ResourcePatternType, acl.pattern),
                f"User:{acl.principal}",
                "*",
                getattr(AclOperation, acl.operation),
                AclPermissionType.ALLOW,
            )
            for acl in sorted(set(acls))
        ]
        failures += _failures("acl", client.create_acls(bindings, request_timeout=timeout))
    if failures:
        raise AccessError("; ".join(failures))


async def apply_access(kafka: KafkaSettings, users: Mapping[str, str], acls: Sequence[Acl]) -> None:
    """Create or update SCRAM-SHA-512 users and add ALLOW ACLs (idempotent; needs the admin).

    Args:
        kafka: The admin principal's connection.
        users: ``name → password`` to create or update.
        acls: Bindings to add (existing ones stay; nothing is removed).

    Raises:
        AccessError: When the broker refused any of them.
    """
    await asyncio.to_thread(_apply_access_blocking, kafka, dict(users), list(acls))


def provision_blocking(
    kafka: KafkaSettings,
    specs: Sequence[TopicSpec],
    *,
    users: Mapping[str, str] | None = None,
    acls: Sequence[Acl] = (),
    timeout_s: float = 30.0,
) -> None:
    """:func:`provision` and :func:`apply_access` for callers without an event loop.

    Creates the missing topics of ``specs`` (existing ones are left alone), the users and the
    ACLs, and returns once every partition has a leader.

    Raises:
        AccessError: When the broker refused a topic, a user or an ACL.
    """
    from confluent_kafka import KafkaError as RdKafkaError
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin import NewTopic as RdNewTopic

    client = AdminClient(kafka.librdkafka_config())
    if specs:
        futures = client.create_topics(
            [RdNewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.configs)) for s in specs],
            request_timeout=kafka.request_timeout_ms / 1000,
        )
        for name, future in futures.items():
            try:
                future.result()
            except Exception as error:
                code = error.args[0].code() if error.args and hasattr(error.args[0], "code") else None
                if code != RdKafkaError.TOPIC_ALREADY_EXISTS:
                    raise AccessError(f"topic {name}: {error}") from error
    _apply_access_blocking(kafka, dict(users or {}), list(acls))
    deadline = time.monotonic() + timeout_s
    names = [s.name for s in specs]
    while names and time.monotonic() < deadline:
        metadata = client.list_topics(timeout=5).topics
        if all(
            n in metadata and metadata[n].partitions and all(p.leader >= 0 for p in metadata[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
