"""Shared fixtures: a real local stack for integration tests, builders for unit tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from airlock.client import AirlockClient
from airlock.devstack.stack import LocalStack, ensure_credentials_file


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Kafka (real, KRaft), the fake OpenAI server, topics and the four services as processes.

    One per test session, on free ports, under a unique topic prefix.
    """
    state: Path = tmp_path_factory.mktemp("stack")
    local = LocalStack(state=state, topic_prefix=f"it{uuid.uuid4().hex[:6]}.", partitions=3)
    # Ingest refuses unsigned requests: any AirlockClient built in a test signs as the stack's
    # dev client unless given other credentials.
    credentials_variable = "AIRLOCK_CLIENT_CREDENTIALS_FILE"
    previous = os.environ.get(credentials_variable)
    os.environ[credentials_variable] = str(ensure_credentials_file(state))
    try:
        local.start_broker()
        local.start_fake()
        asyncio.run(local.provision())
        asyncio.run(local.start_services())
        yield local
    finally:
        local.stop()
        if previous is None:
            os.environ.pop(credentials_variable, None)
        else:
            os.environ[credentials_variable] = previous


@pytest.fixture
async def client(stack: LocalStack) -> AsyncIterator[AirlockClient]:
    """A connected SDK client that signs as the stack's provisioned dev client."""
    async with stack.client() as connected:
        yield connected
