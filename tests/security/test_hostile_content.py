"""Hostile content through the running mesh: secrets in prompts, poison in the evidence (issue 17).

* **Secrets never leave** (item 7): a prompt carrying credentials — cloud and AI-provider key
  prefixes, JWTs, ``password=`` fields, private-key blocks, random tokens behind key names —
  is answered, but the model never sees one of them.
* **Evidence that input cannot break** (item 2): records on ``airlock.audit`` that a stage
  signed but that no parser can take (nested 50,000 deep, a lone surrogate) are dead-lettered
  on their own; every genuine event is sealed and the ledger verifies clean.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from airlock.auditor.reader import read_ledger
from airlock.auditor.replay import replay
from airlock.client import AirlockClient
from airlock.core import headers as h
from airlock.core.lifecycle import State
from airlock.core.models import CompletionReply
from airlock.devstack.ledger import wait_for_timeline
from airlock.devstack.stack import LocalStack
from tests.integration.kafka_reading import header, read_topic
from tests.security.test_stage_checks import forge
from tests.unit.test_redactor_credentials import SECRETS

pytestmark = pytest.mark.integration

MODEL = "gpt-4o-mini"


@pytest.mark.parametrize("name", sorted(SECRETS))
async def test_a_credential_in_a_prompt_never_reaches_the_model(
    stack: LocalStack, client: AirlockClient, name: str
) -> None:
    assert stack.fake is not None
    template, secret = SECRETS[name]
    tag = uuid.uuid4().hex[:8]
    request = client.build(f"[{tag}] " + template.format(secret), tenant="acme", model=MODEL)
    reply = await client.ask(request, timeout=90)
    assert isinstance(reply, CompletionReply), reply
    [body] = [b for b in stack.fake.received() if tag in json.dumps(b)]
    sent = json.dumps(body)
    assert secret not in sent and json.dumps(secret)[1:-1] not in sent, f"the model saw the {name}"


POISON = {"nested": b"[" * 50_000, "lone-surrogate": b'{"event_id": "\\ud800"}'}


async def test_poison_on_the_audit_topic_is_refused_alone_and_the_ledger_verifies(
    stack: LocalStack, client: AirlockClient
) -> None:
    poisons = []
    for kind, value in POISON.items():
        key = f"poison-{kind}-{uuid.uuid4().hex[:6]}".encode()
        # Signed by a genuine stage key: past the door, into the sealer's parsing.
        signature = stack.stage_signer("ingest").header(stack.topics.audit, key, value)
        await forge(stack, stack.topics.audit, value, key, [(h.AIRLOCK_ID, key), signature])
        poisons.append(key.decode())
    genuine = [client.build(f"What is {n} times {n}?", tenant="acme", model=MODEL) for n in range(3)]
    replies = await asyncio.gather(*(client.ask(request, timeout=90) for request in genuine))
    assert all(isinstance(reply, CompletionReply) for reply in replies), replies
    for request in genuine:  # every genuine event sealed: each lifecycle complete in the ledger
        [timeline] = await wait_for_timeline(stack.kafka_settings, request.request_id)
        assert timeline.states[-1] == State.DELIVERED, timeline.states

    deadline = asyncio.get_running_loop().time() + 60
    while True:
        letters = await read_topic(stack.kafka_settings, stack.topics.dlq)
        dead = {header(r, h.AIRLOCK_ID): header(r, h.DLQ_STAGE) for r in letters}
        if all(p in dead for p in poisons) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert {p: dead.get(p) for p in poisons} == dict.fromkeys(poisons, "auditor"), "poison not dead-lettered alone"
    ledger = await read_ledger(stack.kafka_settings, stack.topics.ledger)
    report = replay({p: [v for _, v in records] for p, records in ledger.items()})
    assert report.ok and report.valid == report.records, report.findings
