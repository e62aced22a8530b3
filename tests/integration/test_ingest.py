"""Ingest on the real broker: signatures, grants, replays, duplicates, budgets, secrets.

Tests add their own clients and tenants to the stack's clients file (the dev client stays
as it is) and wait until every ingest replica logs the new file version: that is the
"reloaded on change without restart" path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from airlock.client import AirlockClient, ClientCredentials, ReplyTimeout
from airlock.core import headers as h
from airlock.core.models import AuditEvent, CompletionReply, ErrorReply, Usage, UsageRecord
from airlock.core.signing import generate_secret, request_partition, signing_headers
from airlock.devstack.stack import LocalStack
from airlock.ingest.clients import ClientPolicy, ClientsFile, Limits, fingerprint, new_key
from airlock.ingest.noise import counts_by_code
from tests.integration.kafka_reading import header, read_topic
from tests.integration.leaks import assert_absent, stack_secrets
from tests.integration.markers import unmasked_marker

pytestmark = pytest.mark.integration

MODEL = "gpt-4o-mini"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_reloaded(stack: LocalStack, timeout_s: float = 60.0) -> None:
    """Until every running ingest replica has logged the clients file's current version."""
    assert stack.mesh is not None
    version = fingerprint(stack.clients_file.read_bytes())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = [replica.log_path.read_text(errors="replace") for replica in stack.mesh.replicas["ingest"]]
        if all(f"(version {version})" in text for text in logs):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"ingest did not load clients file version {version} within {timeout_s:.0f}s")


async def edit_clients(stack: LocalStack, change: Any) -> ClientsFile:
    """Apply ``change(file) -> file`` to the stack's clients file and wait for the reload."""
    updated = change(ClientsFile.load(stack.clients_file))
    updated.save(stack.clients_file)
    await wait_reloaded(stack)
    return updated


async def add_client(stack: LocalStack, client_id: str, **grants: Any) -> ClientCredentials:
    key_id, key = new_key(client_id)
    policy = ClientPolicy.model_validate(
        {
            "keys": {key_id: key},
            "tenants": ["*"],
            "models": ["*"],
            "use_cases": ["*"],
            "reply_topics": [],
            "max_prompt_chars": 10_000,
            "max_tokens": 1000,
            **grants,
        }
    )
    await edit_clients(stack, lambda file: file.with_client(client_id, policy))
    await asyncio.to_thread(stack.provision_client, client_id)  # its reply topic, Kafka user and ACLs
    return stack.credentials(client_id)


async def audit_events(stack: LocalStack, request_ids: Iterable[str]) -> dict[str, list[AuditEvent]]:
    wanted = set(request_ids)
    found: dict[str, list[AuditEvent]] = {rid: [] for rid in wanted}
    for record in await read_topic(stack.kafka_settings, stack.topics.audit):
        try:
            event = AuditEvent.model_validate_json(record.value)
        except ValidationError:
            continue  # the auditor's own control records share the topic
        if event.request_id in wanted and event.stage == "ingest":
            found[event.request_id].append(event)
    return found


async def wait_rejected(stack: LocalStack, request_ids: list[str], timeout_s: float = 60.0) -> dict[str, AuditEvent]:
    """The ingest REJECTED event of each request (waits until all are committed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = await audit_events(stack, request_ids)
        final = {rid: e[-1] for rid, e in events.items() if e and e[-1].to_state == "REJECTED"}
        if len(final) == len(request_ids) or time.monotonic() > deadline:
            missing = set(request_ids) - set(final)
            assert not missing, f"no REJECTED event for {missing}: {events}"
            return final
        await asyncio.sleep(0.5)


async def wait_dead_lettered(
    stack: LocalStack, request_ids: list[str], timeout_s: float = 60.0
) -> dict[str, ConsumerRecord]:
    """``request id → dead letter`` of these requests (waits until all are committed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        dead = {header(r, h.REQUEST_ID): r for r in await read_topic(stack.kafka_settings, stack.topics.dlq)}
        found = {rid: dead[rid] for rid in request_ids if rid in dead}
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            assert len(found) == len(request_ids), f"not dead-lettered: {set(request_ids) - set(found)}"
            return found
        await asyncio.sleep(0.5)


async def wait_noticed(stack: LocalStack, dead: list[ConsumerRecord], timeout_s: float = 60.0) -> dict[str, str]:
    """``source → error code`` of the ``unauthenticated`` notices covering these dead letters.

    Unauthenticated records have no lifecycle: each batch's are summed up in one notice that
    names its partition, offset range and codes (waits until every dead letter is covered).
    """
    wanted = {header(record, h.DLQ_SOURCE) or "" for record in dead}
    deadline = time.monotonic() + timeout_s
    while True:
        covered: dict[str, str] = {}
        for record in await read_topic(stack.kafka_settings, stack.topics.audit):
            try:
                event = AuditEvent.model_validate_json(record.value)
            except ValidationError:
                continue
            extra = event.details.extra or {}
            if event.kind != "notice" or event.stage != "ingest" or "first_offset" not in extra:
                continue
            topic, partition, _ = (event.details.source or "").rsplit("/", 2)
            for source in wanted:
                where, offset = source.rsplit("/", 1)
                if where == f"{topic}/{partition}" and int(extra["first_offset"]) <= int(offset) <= int(
                    extra["last_offset"]
                ):
                    codes = counts_by_code(event.details)
                    covered[source] = next(iter(codes)) if len(codes) == 1 else ",".join(sorted(codes))
        if set(covered) == wanted or time.monotonic() > deadline:
            assert set(covered) == wanted, f"no unauthenticated notice for {wanted - set(covered)}"
            return covered
        await asyncio.sleep(0.5)


async def replies_for(stack: LocalStack, request_ids: Iterable[str]) -> dict[str, list[CompletionReply | ErrorReply]]:
    from airlock.core.models import reply_adapter

    wanted = set(request_ids)
    found: dict[str, list[CompletionReply | ErrorReply]] = {rid: [] for rid in wanted}
    for topic in stack.reply_topics:
        for record in await read_topic(stack.kafka_settings, topic):
            rid = header(record, h.REQUEST_ID)
            if rid in wanted:
                found[rid].append(reply_adapter.validate_json(record.value))
    return found


def document(client: AirlockClient, request_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "client_id": client.client_id,
        "tenant": "acme",
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Say hello ({request_id})"}],
        "reply_to": client.reply_to,
        **changes,
    }


def signed_headers(
    credentials: ClientCredentials,
    request_id: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    secret: str | None = None,
) -> list[tuple[str, bytes]]:
    return signing_headers(
        base64.b64decode(secret) if secret else credentials.material(),
        client_id=credentials.client_id,
        key_id=credentials.key_id,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        request_id=request_id,
        body=body,
    )


async def test_badly_signed_records_are_dead_lettered_and_audited_never_answered(
    stack: LocalStack, client: AirlockClient
) -> None:
    credentials = stack.credentials()
    cases: dict[str, tuple[str, list[tuple[str, bytes]]]] = {}

    def case(code: str, build: Any) -> None:
        rid = unique(code)
        body = json.dumps(document(client, rid)).encode()
        cases[rid] = (code, build(rid, body))

    case("signature_missing", lambda rid, body: [])
    case("signature_invalid", lambda rid, body: signed_headers(credentials, rid, body, secret=generate_secret()))
    case(
        "unknown_key",
        lambda rid, body: [
            *[(k, v) for k, v in signed_headers(credentials, rid, body) if k != h.KEY_ID],
            (h.KEY_ID, b"airlock-cli-no-such-key"),
        ],
    )
    case(
        "timestamp_out_of_window",
        lambda rid, body: signed_headers(credentials, rid, body, timestamp=int(time.time()) - 3600),
    )
    case("bad_header", lambda rid, body: [*signed_headers(credentials, rid, body), (h.TIMESTAMP, b"\xff\xfe")])
    case(
        "unknown_client",
        lambda rid, body: [
            *[(k, v) for k, v in signed_headers(credentials, rid, body) if k != h.CLIENT_ID],
            (h.CLIENT_ID, b"nobody-we-know"),
        ],
    )
    bodies = {}
    for rid, (_, headers) in cases.items():
        body = json.dumps(document(client, rid)).encode()
        bodies[rid] = body
        await client.publish_raw(body, request_id=rid, reply_to=client.reply_to, headers=headers, sign=False)

    dead = await wait_dead_lettered(stack, list(cases))
    noticed = await wait_noticed(stack, list(dead.values()))
    replies = await replies_for(stack, cases)
    lifecycles = await audit_events(stack, cases)
    for rid, (code, _) in cases.items():
        assert header(dead[rid], h.ERROR_CODE) == code
        assert code in noticed[header(dead[rid], h.DLQ_SOURCE) or ""].split(","), "its batch's notice counts it"
        assert [e for e in lifecycles[rid] if e.kind == "transition"] == [], "noise has no lifecycle"
        opened = stack.dead_letters().open(dead[rid].value, dead[rid].headers)
        assert opened.value == bodies[rid], "the DLQ keeps the original bytes, sealed"
        assert replies[rid] == [], f"{code}: an unauthenticated record must not be answered"
    follow_up = client.build("Still there?", tenant="acme", model=MODEL)
    assert isinstance(await client.ask(follow_up, timeout=90), CompletionReply)


async def test_replays_and_duplicates_never_reach_the_model_twice(stack: LocalStack, client: AirlockClient) -> None:
    assert stack.fake is not None
    marker = unmasked_marker(lambda word: f"Please echo {word}")
    request = client.build(f"Please echo {marker}", tenant="acme", model=MODEL)
    body = request.to_bytes()
    headers = signed_headers(stack.credentials(), request.request_id, body)
    home = request_partition(client.client_id, request.request_id, stack.partitions)
    producer = AIOKafkaProducer(**stack.kafka_settings.client_args())
    await producer.start()
    try:
        client.expect(request.request_id)
        await producer.send_and_wait(stack.topics.requests, body, headers=headers, partition=home)
        original = await client.wait(request.request_id, timeout=90)
        # The same signed record again, once on its partition and once on another one.
        await producer.send_and_wait(stack.topics.requests, body, headers=headers, partition=home)
        await producer.send_and_wait(stack.topics.requests, body, headers=headers, partition=(home + 1) % 3)
    finally:
        await producer.stop()
    # The same request id, freshly signed: a duplicate. Signatures carry whole seconds, and the
    # same bytes signed in the same second are the same record (a replay), so sign a second later.
    await asyncio.sleep(1.1)
    await client.publish_raw(body, request_id=request.request_id)

    assert isinstance(original, CompletionReply)
    deadline = time.monotonic() + 60
    while True:
        replies = (await replies_for(stack, [request.request_id]))[request.request_id]
        errors = [r for r in replies if isinstance(r, ErrorReply)]
        if len(errors) >= 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert sorted(e.code for e in errors) == ["duplicate_request", "replayed", "replayed"]
    assert {e.duplicate_of for e in errors} == {original.airlock_id}
    assert len([r for r in replies if isinstance(r, CompletionReply)]) == 1
    calls = [body for body in stack.fake.received() if marker in json.dumps(body)]
    assert len(calls) == 1, "the model was called exactly once"
    events = (await audit_events(stack, [request.request_id]))[request.request_id]
    codes = sorted(e.details.error_code for e in events if e.to_state == "REJECTED")
    assert codes == ["duplicate_request", "replayed", "replayed"]


async def test_grants_are_enforced_and_keys_rotate_without_downtime(stack: LocalStack) -> None:
    tenant, other = unique("tenant"), unique("tenant")
    client_id = unique("restricted")
    credentials = await add_client(
        stack,
        client_id,
        tenants=[tenant],
        models=[MODEL],
        use_cases=["default"],
        max_prompt_chars=60,
        max_tokens=100,
    )
    cases = {
        "tenant_not_allowed": {"tenant": other},
        "model_not_allowed": {"model": "gpt-4o"},
        "use_case_not_allowed": {"use_case": "payroll"},
        "too_large": {"messages": [{"role": "user", "content": "x" * 61}]},
        "param_not_allowed": {"params": {"max_tokens": 101}},
    }
    async with stack.client(credentials.client_id, credentials=credentials) as restricted:
        ids = {}
        for code, changes in cases.items():
            rid = unique(code)
            ids[rid] = code
            await restricted.publish_raw(
                json.dumps(document(restricted, rid, **{"tenant": tenant, **changes})).encode()
            )
        foreign_reply = unique("reply_topic_not_allowed")
        ids[foreign_reply] = "reply_topic_not_allowed"
        await restricted.publish_raw(
            json.dumps(
                document(restricted, foreign_reply, tenant=tenant, reply_to=stack.topics.responses + ".elsewhere")
            ).encode()
        )
        # Every refusal reaches the client, on its own reply topic when the one named is not its to use.
        replies = {rid: await restricted.wait(rid, timeout=60) for rid in ids}
        allowed = restricted.build("Hello there", tenant=tenant, model=MODEL)
        answer = await restricted.ask(allowed, timeout=90)

        rejected = await wait_rejected(stack, list(ids))
        for rid, code in ids.items():
            assert rejected[rid].details.error_code == code
            assert rejected[rid].client_id == client_id
            reply = replies[rid]
            assert isinstance(reply, ErrorReply) and reply.code == code and reply.request_id == rid
        found = await replies_for(stack, [foreign_reply])
        assert len(found[foreign_reply]) == 1, "one reply, on the client's own topic, none outside the grant"
        assert isinstance(answer, CompletionReply), answer

        # Rotation: the old key keeps working during the grace period, the new one works at once.
        rotated, new_key_id = ClientsFile.load(stack.clients_file).rotated(client_id, grace=timedelta(hours=1))
        await edit_clients(stack, lambda _: rotated)
        old_key = await restricted.ask(restricted.build("old key", tenant=tenant, model=MODEL), timeout=90)
    new_credentials = stack.credentials(client_id)
    assert new_credentials.key_id == new_key_id
    async with stack.client(new_credentials.client_id, credentials=new_credentials) as rotated_client:
        new_key = await rotated_client.ask(rotated_client.build("new key", tenant=tenant, model=MODEL), timeout=90)
        assert isinstance(old_key, CompletionReply) and isinstance(new_key, CompletionReply)

        # Grace over: the old key is refused (and the refusal names the key id, not its secret).
        expired, _ = ClientsFile.load(stack.clients_file).rotated(client_id, grace=timedelta(0))
        await edit_clients(stack, lambda _: expired)
    async with stack.client(credentials.client_id, credentials=credentials) as stale:
        rid = await stale.publish_raw(json.dumps(document(stale, unique("stale"), tenant=tenant)).encode())
        assert rid is not None
        with pytest.raises(ReplyTimeout):
            await stale.wait(rid, timeout=5)
    dead = (await wait_dead_lettered(stack, [rid]))[rid]
    assert header(dead, h.ERROR_CODE) == "key_expired"
    assert credentials.key_id in (header(dead, h.DLQ_REASON) or ""), "the dead letter names the key"
    assert "key_expired" in (await wait_noticed(stack, [dead])).values()


async def test_budgets_come_from_settled_spend(stack: LocalStack, client: AirlockClient) -> None:
    tenant = unique("budget")
    await edit_clients(stack, lambda file: file.with_tenant(tenant, Limits(tokens_per_day=100, cost_per_month_usd=5)))
    # Larger than the day's budget: admitted alone (nothing else in flight), and its settlement
    # on the admission log (written by the llm-worker with the completion) closes the day.
    first = await client.ask(client.build("Before any usage. " + "x" * 400, tenant=tenant, model=MODEL), timeout=90)
    assert isinstance(first, CompletionReply) and first.usage.total_tokens > 100

    refusal = await first_refusal(client, tenant)
    assert refusal.code == "token_quota_exceeded"
    assert refusal.retry_after is not None and 0 < refusal.retry_after <= 86_400
    event = (await wait_rejected(stack, [refusal.request_id or ""]))[refusal.request_id or ""]
    assert event.details.error_code == "token_quota_exceeded"


async def publish_usage(
    stack: LocalStack, tenant: str, *, tokens: int, cost: float, client_id: str = "someone"
) -> None:
    record = UsageRecord(
        airlock_id=str(uuid.uuid4()),
        request_id=unique("usage"),
        client_id=client_id,
        tenant=tenant,
        use_case="default",
        model=MODEL,
        served_model=MODEL,
        usage=Usage(input_tokens=tokens // 2, output_tokens=tokens - tokens // 2),
        cost_usd=cost,
    )
    producer = AIOKafkaProducer(**stack.kafka_settings.client_args())
    await producer.start()
    try:
        await producer.send_and_wait(stack.topics.usage, record.to_bytes(), key=tenant.encode())
    finally:
        await producer.stop()


async def first_refusal(client: AirlockClient, tenant: str, timeout_s: float = 60.0) -> ErrorReply:
    """Send requests until one is refused (the usage record takes a moment to be read)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = await client.ask(client.build("Within budget?", tenant=tenant, model=MODEL), timeout=90)
        if isinstance(reply, ErrorReply):
            return reply
        await asyncio.sleep(0.5)
    raise AssertionError(f"tenant {tenant} was never refused")


def test_usage_command_shows_usage_against_limits(stack: LocalStack) -> None:
    import os
    import subprocess
    import sys

    tenant = unique("report")
    asyncio.run(edit_clients(stack, lambda file: file.with_tenant(tenant, Limits(tokens_per_day=1000))))
    asyncio.run(publish_usage(stack, tenant, tokens=250, cost=0.125))
    env = {
        **os.environ,
        **stack.kafka_settings.environment(),
        "AIRLOCK_INGEST_CLIENTS_FILE": str(stack.clients_file),
    }
    command = [str(Path(sys.executable).parent / "airlock"), "usage", "--tenant", tenant]
    shown = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(shown.stdout)
    [row] = report["tenants"]
    assert row["tenant"] == tenant
    assert (row["tokens_today"], row["tokens_per_day"]) == (250, 1000)
    assert row["cost_this_month_usd"] == pytest.approx(0.125)
    table = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert tenant in table and "250 / 1000 (25%)" in table


async def test_no_secret_in_service_logs_or_topics(stack: LocalStack) -> None:
    """Runs after the tests above (refusals of every kind, reloads, rotations)."""
    # A broken clients file (with a secret-looking value where it does not belong) is
    # refused and logged; the message must not repeat the file's content.
    good = stack.clients_file.read_bytes()
    leaked = base64.b64encode(b"must-never-be-logged-0123456789ab").decode()
    stack.clients_file.write_text(good.decode() + f"\nunexpected: {leaked}\n")
    try:
        await wait_logged(stack, "clients file change refused")
    finally:
        stack.clients_file.write_bytes(good)

    # Every client's signing keys (those added by the tests above too), the vault and ledger keys.
    forms = [leaked, base64.b64decode(leaked).hex(), *stack_secrets(stack)]
    assert len(forms) >= 2 * 5
    logs = sorted((stack.state / "logs").glob("*.log"))
    assert any(log.name.startswith("ingest-") for log in logs)
    assert_absent(logs, forms)
    for topic in (stack.topics.audit, stack.topics.dlq, *stack.reply_topics, stack.topics.ingest_seen):
        records = await read_topic(stack.kafka_settings, topic)
        blob = b"\n".join([r.value or b"" for r in records] + [v or b"" for r in records for _, v in (r.headers or ())])
        for form in forms:
            assert form.encode() not in blob, f"a secret leaked into {topic}"


async def wait_logged(stack: LocalStack, text: str, timeout_s: float = 30.0) -> None:
    assert stack.mesh is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(text in r.log_path.read_text(errors="replace") for r in stack.mesh.replicas["ingest"]):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"ingest never logged {text!r}")
