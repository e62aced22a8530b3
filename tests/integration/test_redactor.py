"""The redactor service on the real broker, under per-use-case policies and the egress guard.

For this module the stack's redactor is replaced by one started with test policies, small
chunks (so a long prompt is really split), a redactor-side prompt limit below ingest's, and
the egress guard: every other service and the SDK client stay as the session started them.
At the end the guard's log must show the redactor process and no refused connection.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.client import AirlockClient
from airlock.core import headers as h
from airlock.core.crypto import KeyRing
from airlock.core.lifecycle import State
from airlock.core.models import ChatMessage, CompletionReply, Envelope, ErrorReply
from airlock.devstack.egress import guarded_env, read_log
from airlock.devstack.ledger import wait_for_timeline
from airlock.devstack.mesh import Mesh, wait_ready
from airlock.devstack.stack import LocalStack, write_secret
from tests.integration.kafka_reading import header, read_topic
from tests.integration.markers import unmasked_marker

pytestmark = pytest.mark.integration

TENANT, MODEL = "acme", "gpt-4o-mini"
CHUNK, OVERLAP, REDACTOR_LIMIT = 2_000, 300, 30_000

BLOCKING_POLICY = """
schema_version: 1
name: it-payroll
version: "4"
applies_to: [{tenant: "*", use_case: it-payroll}]
entities: {PERSON: mask, EMAIL_ADDRESS: mask, US_SSN: block, CREDIT_CARD: block}
"""


@pytest.fixture(scope="module")
def guard_log(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Swap the stack's redactor for a guarded one with test policies; swap back afterwards."""
    assert stack.mesh is not None
    state = tmp_path_factory.mktemp("guarded-redactor")
    policies = state / "policies"
    policies.mkdir()
    (policies / "it-payroll.yaml").write_text(BLOCKING_POLICY)
    log = state / "egress.log"
    env = {
        **stack.service_env(),
        **guarded_env(state / "site", log),
        "AIRLOCK_REDACTOR_POLICY_DIR": str(policies),
        "AIRLOCK_REDACTOR_CHUNK_CHARS": str(CHUNK),
        "AIRLOCK_REDACTOR_CHUNK_OVERLAP_CHARS": str(OVERLAP),
        "AIRLOCK_REDACTOR_MAX_PROMPT_CHARS": str(REDACTOR_LIMIT),
    }
    stack.mesh.stop("redactor")
    guarded = Mesh(env, state, {"redactor": stack.stage_env("redactor")})
    try:
        guarded.start("redactor")
        asyncio.run(wait_ready(stack.kafka_settings, guarded, 240))
        yield log
    finally:
        guarded.stop()
        stack.mesh.start("redactor")
        asyncio.run(wait_ready(stack.kafka_settings, stack.mesh, 240))


def seen_by_model(stack: LocalStack, tag: str) -> list[str]:
    assert stack.fake is not None
    return [json.dumps(body) for body in stack.fake.received() if tag in json.dumps(body)]


def events_of(timeline: Any, stage: str) -> list[dict[str, Any]]:
    return [event for event in timeline.events if event["stage"] == stage]


async def test_every_occurrence_is_masked_and_the_answer_restored(
    stack: LocalStack, client: AirlockClient, guard_log: Path
) -> None:
    def ask(tag: str) -> str:
        return f"Ref {tag}. I am Jane Roe; write to jane.roe@example.com. Thanks, Jane Roe"

    tag = unmasked_marker(ask)
    messages = [
        {"role": "system", "content": "You help Jane Roe (jane.roe@example.com) with her tickets."},
        {"role": "user", "content": ask(tag)},
    ]
    request = client.build([ChatMessage.model_validate(m) for m in messages], tenant=TENANT, model=MODEL)

    reply = await client.ask(request, timeout=90)

    assert isinstance(reply, CompletionReply), reply
    assert reply.content.count("Jane Roe") == 2 and "jane.roe@example.com" in reply.content
    (sent,) = seen_by_model(stack, tag)
    assert "Jane" not in sent and "Roe" not in sent and "jane.roe@" not in sent
    assert sent.count("<PERSON_1>") == 3 and sent.count("<EMAIL_ADDRESS_1>") == 2
    (timeline,) = await wait_for_timeline(stack.kafka_settings, request.request_id, timeout_s=60)
    assert timeline.states == [State.RECEIVED, State.ACCEPTED, State.REDACTED, State.COMPLETED, State.DELIVERED]
    redactor_events = events_of(timeline, "redactor")
    assert [e["details"]["policy_version"] for e in redactor_events] == ["default@2", "default@2"]
    delivered = redactor_events[-1]["details"]["extra"]
    assert delivered["placeholders_sent"] == 2 and delivered["placeholder_survival_rate"] == 1.0
    assert delivered["output_pii_found"] == 0


async def test_policy_block_is_a_structured_error_naming_the_type(
    stack: LocalStack, client: AirlockClient, guard_log: Path
) -> None:
    def ask(tag: str) -> str:
        return f"Ref {tag}: update payroll for Jane Roe, SSN 536-90-4372."

    tag = unmasked_marker(ask)
    request = client.build(ask(tag), tenant=TENANT, model=MODEL, use_case="it-payroll")

    reply = await client.ask(request, timeout=90)

    assert isinstance(reply, ErrorReply), reply
    assert reply.code == "policy_blocked" and reply.stage == "redactor"
    assert "US_SSN" in reply.message and "536-90-4372" not in reply.message
    assert seen_by_model(stack, tag) == []
    (timeline,) = await wait_for_timeline(stack.kafka_settings, request.request_id, timeout_s=60)
    assert timeline.states == [State.RECEIVED, State.ACCEPTED, State.BLOCKED]
    blocked = timeline.events[-1]["details"]
    assert blocked["policy_version"] == "it-payroll@4" and blocked["entity_counts"] == {"US_SSN": 1}
    assert "536-90-4372" not in json.dumps(timeline.events)


async def test_long_prompt_with_entities_on_chunk_boundaries_leaks_nothing(
    stack: LocalStack, client: AirlockClient, guard_log: Path
) -> None:
    tag = unmasked_marker()
    filler = "Quarterly figures were reviewed line by line with the finance team. "
    pieces, values = [f"Ref {tag}."], []
    for n in range(8):
        # Each contact lands across a multiple of the chunk size, a little earlier each time.
        body = " ".join(pieces)
        target = (n + 1) * (CHUNK - OVERLAP) - 12 - 3 * n
        while len(body) < target:
            body += " " + filler
        body = body[:target]
        email = f"owner{n}.lastname@example.com"
        pieces = [body, f"Contact {email} now."]
        values.append(email)
    prompt = " ".join(pieces) + " " + filler * 20
    assert CHUNK * 4 < len(prompt) < REDACTOR_LIMIT
    request = client.build(prompt, tenant=TENANT, model=MODEL)

    reply = await client.ask(request, timeout=120)

    assert isinstance(reply, CompletionReply), reply
    (sent,) = seen_by_model(stack, tag)
    for email in values:
        assert email not in sent
        assert email in reply.content  # restored for the caller


async def test_prompt_over_the_redactors_own_limit_fails_cleanly(
    stack: LocalStack, client: AirlockClient, guard_log: Path
) -> None:
    tag = unmasked_marker()
    request = client.build(f"Ref {tag}. " + "lorem ipsum " * (REDACTOR_LIMIT // 12 + 100), tenant=TENANT, model=MODEL)

    reply = await client.ask(request, timeout=90)

    assert isinstance(reply, ErrorReply), reply
    assert reply.code == "too_large" and reply.stage == "redactor"
    assert str(REDACTOR_LIMIT) in reply.message
    assert seen_by_model(stack, tag) == []
    (timeline,) = await wait_for_timeline(stack.kafka_settings, request.request_id, timeout_s=60)
    assert timeline.states == [State.RECEIVED, State.ACCEPTED, State.FAILED]


async def test_a_rotated_vault_key_seals_from_the_next_request_without_a_restart(
    stack: LocalStack, client: AirlockClient, guard_log: Path
) -> None:
    ring_file = Path(stack.service_env()["AIRLOCK_REDACTOR_VAULT_KEYS_FILE"])
    new_key = f"rotated-{uuid.uuid4().hex[:6]}"

    def rotate() -> None:  # what `airlock vault-keys rotate` does
        write_secret(ring_file, KeyRing.from_json(ring_file.read_text()).rotated(new_key).to_json())

    await asyncio.to_thread(rotate)

    sealed_with: list[str] = []
    for _ in range(40):
        reply = await client.ask(client.build("I am Jane Roe.", tenant=TENANT, model=MODEL), timeout=90)
        assert isinstance(reply, CompletionReply) and "Jane Roe" in reply.content, reply
        redacted = [
            Envelope.model_validate_json(r.value)
            for r in await read_topic(stack.kafka_settings, stack.topics.redacted)
            if header(r, h.AIRLOCK_ID) == reply.airlock_id
        ]
        sealed_with.extend(e.vault.key_id for e in redacted if e.vault is not None)
        if sealed_with[-1:] == [new_key]:
            break
        await asyncio.sleep(0.5)
    assert sealed_with[-1:] == [new_key], f"still sealing with {sealed_with[-1:]}"


def test_zz_the_redactor_never_tried_the_network(guard_log: Path) -> None:
    # Runs after the tests above (file order) in the same guarded process.
    installed, refusals = read_log(guard_log)
    assert any("airlock.redactor.app:app" in line for line in installed), installed
    assert refusals == [], refusals
