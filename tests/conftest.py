"""Shared fixtures: a real local stack for integration tests, builders for unit tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from airlock.client import AirlockClient
from airlock.devstack.stack import LocalStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Kafka (real, KRaft), the fake OpenAI server, topics and the four services as processes.

    One per test session, on free ports, under a unique topic prefix.
    """
    state: Path = tmp_path_factory.mktemp("stack")
    local = LocalStack(state=state, topic_prefix=f"it{uuid.uuid4().hex[:6]}.", partitions=3)
    try:
        local.start_broker()
        local.start_fake()
        asyncio.run(local.provision())
        asyncio.run(local.start_services())
        yield local
    finally:
        local.stop()


@pytest.fixture
async def client(stack: LocalStack) -> AsyncIterator[AirlockClient]:
    """A connected SDK client with a unique client id."""
    async with AirlockClient(stack.kafka_settings, f"test-{uuid.uuid4().hex[:6]}") as connected:
        yield connected
