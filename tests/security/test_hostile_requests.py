"""One hostile request harms no one else: the attacks of issue 17 against the running mesh.

Each attack comes from an authenticated client with a valid signature, through the real
broker, the real ingest and the rest of the mesh. Contained means: the attacker's record
ends refused, with its own error and dead letter, and innocent requests — sent in the same
moment, to the same request partition — are answered as if nothing happened.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from airlock.client import AirlockClient
from airlock.core.models import CompletionReply, ErrorReply
from airlock.devstack.stack import LocalStack
from tests.integration.test_ingest import add_client, document, wait_rejected

pytestmark = pytest.mark.integration

MODEL = "gpt-4o-mini"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("poison", ["nested", "lone-surrogate"])
async def test_a_poison_request_is_refused_alone_and_the_innocent_are_answered(
    stack: LocalStack, client: AirlockClient, poison: str
) -> None:
    attacker_id = unique("attacker")
    credentials = await add_client(stack, attacker_id)
    async with AirlockClient(stack.client_kafka_settings(attacker_id), credentials=credentials) as attacker:
        rid = unique("poison")
        if poison == "nested":
            body = b"[" * 50_000
        else:
            body = json.dumps(document(attacker, rid, messages=[{"role": "user", "content": "hi \ud800"}])).encode()
        innocent = [client.build(f"What is {n} plus {n}?", tenant="acme", model=MODEL) for n in range(3)]
        await attacker.publish_raw(body, request_id=rid)
        answers = await asyncio.gather(*(client.ask(request, timeout=90) for request in innocent))
        refusal = await attacker.wait(rid, timeout=60)

    assert all(isinstance(answer, CompletionReply) for answer in answers), answers
    assert isinstance(refusal, ErrorReply) and refusal.code == "malformed"
    assert (await wait_rejected(stack, [rid]))[rid].details.error_code == "malformed"


async def test_a_reply_topic_that_does_not_exist_is_refused_and_wedges_nothing(stack: LocalStack) -> None:
    """A glob grant lets a client name any reply topic under its prefix, existing or not."""
    client_id = unique("globber")
    credentials = await add_client(stack, client_id, reply_topics=[stack.topics.responses + ".*"])
    async with AirlockClient(stack.client_kafka_settings(client_id), credentials=credentials) as globber:
        rid = unique("nowhere")
        missing = f"{stack.topics.responses}.{unique('missing')}"
        await globber.publish_raw(json.dumps(document(globber, rid, reply_to=missing)).encode())
        refusal = await globber.wait(rid, timeout=60)
        # The same client, so the same request partition as the refused one (by client and id).
        follow_up = await globber.ask(globber.build("Still there?", tenant="acme", model=MODEL), timeout=90)

    assert isinstance(refusal, ErrorReply) and refusal.code == "reply_topic_not_allowed"
    assert "does not exist" in refusal.message
    assert isinstance(follow_up, CompletionReply), follow_up
