"""No personal data in clear at rest: a refused prompt's dead letter is sealed.

A refused request is dead-lettered whole — often with the very data that got it refused. On
the topic, only the reason and the ids stay readable; the original opens only with the
operators' dead-letter ring (``airlock dlq read --keys``), which no stage holds.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiokafka import ConsumerRecord
from typer.testing import CliRunner

from airlock.core import headers as h
from airlock.core.authenticity import DEAD_LETTER_RING
from airlock.core.models import ErrorReply
from airlock.devstack.cli import app
from airlock.devstack.stack import LocalStack, mesh_keys_dir
from tests.integration.kafka_reading import header, read_topic
from tests.integration.test_ingest import add_client
from tests.security.test_hostile_requests import unique

pytestmark = pytest.mark.integration

MODEL = "gpt-4o-mini"


async def dead_letters_of(stack: LocalStack, airlock_id: str, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    deadline = time.monotonic() + timeout_s
    while True:
        letters = [
            r for r in await read_topic(stack.kafka_settings, stack.topics.dlq) if header(r, h.AIRLOCK_ID) == airlock_id
        ]
        if letters or time.monotonic() > deadline:
            return letters
        await asyncio.sleep(0.5)


async def test_a_refused_prompt_rests_sealed_in_the_dlq(stack: LocalStack) -> None:
    client_id = unique("short-prompts")
    credentials = await add_client(stack, client_id, max_prompt_chars=40)
    marker = f"zq{uuid.uuid4().hex}"
    prompt = f"Jane Roe, SSN 078-05-1120, card 4111 1111 1111 1111, {marker}"
    async with stack.client(client_id, credentials=credentials) as client:
        refusal = await client.ask(client.build(prompt, tenant="acme", model=MODEL), timeout=60)
    assert isinstance(refusal, ErrorReply) and refusal.code == "too_large"

    [letter] = await dead_letters_of(stack, refusal.airlock_id)
    at_rest = letter.value + b"".join((v or b"") for _, v in letter.headers)
    for secret in (marker, "078-05-1120", "4111 1111", "Jane Roe"):
        assert secret.encode() not in at_rest, f"{secret!r} rests in clear in the DLQ"
    assert header(letter, h.ERROR_CODE) == "too_large" and header(letter, h.DLQ_STAGE) == "ingest"
    assert marker in stack.dead_letters().open(letter.value, letter.headers).value.decode()

    env = stack.kafka_settings.environment()
    ring = mesh_keys_dir(stack.state) / DEAD_LETTER_RING
    runner = CliRunner()
    sealed = await asyncio.to_thread(
        runner.invoke, app, ["dlq", "read", "--airlock-id", refusal.airlock_id, "--json"], env=env
    )
    assert sealed.exit_code == 0, sealed.output
    [shown] = [json.loads(line) for line in sealed.output.splitlines() if line.startswith("{")]
    assert shown["code"] == "too_large" and "body" not in shown and marker not in sealed.output
    opened = await asyncio.to_thread(
        runner.invoke, app, ["dlq", "read", "--keys", str(ring), "--airlock-id", refusal.airlock_id, "--json"], env=env
    )
    assert opened.exit_code == 0, opened.output
    [shown] = [json.loads(line) for line in opened.output.splitlines() if line.startswith("{")]
    assert marker in shown["body"]
