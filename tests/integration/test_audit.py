"""The auditor on the real broker: sealing, checkpoints, the witness, replay, export, verify."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from airlock.auditor.reader import read_checkpoints, read_ledger
from airlock.auditor.verify import Evidence, Report, verify
from airlock.auditor.witness import read_witness
from airlock.client import AirlockClient
from airlock.core.access import AUDIT_READER
from airlock.core.admin import connect_admin
from airlock.core.crypto import KeyRing, b64
from airlock.core.models import CompletionReply, ErrorReply
from airlock.devstack.cli import app
from airlock.devstack.ledger import wait_for_timeline
from airlock.devstack.stack import LocalStack, ensure_signing_keys, witness_dir

pytestmark = pytest.mark.integration

DELIVERED = ["RECEIVED", "ACCEPTED", "REDACTED", "COMPLETED", "DELIVERED"]
FAILED_AT_MODEL = ["RECEIVED", "ACCEPTED", "REDACTED", "FAILED"]
REJECTED = ["RECEIVED", "REJECTED"]


def cli_env(stack: LocalStack) -> dict[str, str]:
    # Replay and export need nothing but the audit reader's rights.
    return stack.principal_settings(AUDIT_READER).environment()


async def airlock(stack: LocalStack, *args: str) -> Any:
    """Run an ``airlock`` command in-process (in a thread: the command runs its own event loop)."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), env=cli_env(stack))


async def read_evidence(stack: LocalStack) -> Evidence:
    ledger = await read_ledger(stack.kafka_settings, stack.topics.ledger)
    checkpoints = await read_checkpoints(stack.kafka_settings, stack.topics.checkpoints)
    witness = read_witness(witness_dir(stack.state) / stack.topics.ledger)
    return Evidence(
        ledger=stack.topics.ledger,
        partitions={p: [v for _, v in records] for p, records in ledger.items()},
        checkpoints=checkpoints,
        witness=witness,
        keys=witness.keys,
    )


async def wait_until_vouched_for(stack: LocalStack, request_ids: set[str], timeout_s: float = 90.0) -> Report:
    """Wait until a signed, witnessed checkpoint covers every event of these requests."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = verify(await read_evidence(stack))
        mine = [t for t in report.timelines.values() if t.request_id in request_ids]
        newest = {}
        for timeline in mine:
            for partition, seq in timeline.locations:
                newest[partition] = max(newest.get(partition, 0), seq)
        if len(mine) == len(request_ids) and all(report.partitions[p].anchored_seq >= seq for p, seq in newest.items()):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"no checkpoint covers {request_ids} after {timeout_s}s: {report.partitions}")
        await asyncio.sleep(1.0)


async def mixed_requests(client: AirlockClient, tenant: str) -> dict[str, list[str]]:
    """One delivered, one failed at the model, one rejected at ingest; request id → expected states."""
    delivered = client.build("What is the capital of France?", tenant=tenant, model="gpt-4o-mini")
    failed = client.build("Please answer [[fake:500]]", tenant=tenant, model="gpt-4o-mini")
    rejected = f"audit-bad-{uuid.uuid4().hex[:8]}"
    await client.publish(delivered)
    await client.publish(failed)
    await client.publish_raw(b"\xff\xfe not json", request_id=rejected, reply_to=client.reply_to)
    replies = await asyncio.gather(
        client.wait(delivered.request_id, timeout=120),
        client.wait(failed.request_id, timeout=180),
        client.wait(rejected, timeout=120),
    )
    assert isinstance(replies[0], CompletionReply), replies[0]
    assert isinstance(replies[1], ErrorReply) and isinstance(replies[2], ErrorReply), replies
    return {delivered.request_id: DELIVERED, failed.request_id: FAILED_AT_MODEL, rejected: REJECTED}


async def test_replay_over_the_broker_reports_every_lifecycle_complete_and_the_export_verifies_offline(
    stack: LocalStack, client: AirlockClient, tmp_path: Path
) -> None:
    tenant = f"audit-{uuid.uuid4().hex[:6]}"
    expected = await mixed_requests(client, tenant)
    for request_id in expected:
        await wait_for_timeline(stack.kafka_settings, request_id, timeout_s=60)
    await wait_until_vouched_for(stack, set(expected))
    witness = str(witness_dir(stack.state))
    selection = [arg for request_id in expected for arg in ("--request-id", request_id)]

    replayed = await airlock(stack, "audit", "replay", *selection, "--format", "json", "--witness", witness)

    assert replayed.exit_code == 0, replayed.output
    document = json.loads(replayed.output)
    assert document["ok"] and document["integrity_ok"] and document["findings"] == []
    assert document["valid"] == document["records"] > 0
    assert document["checkpoints_valid"] == document["checkpoints"] > 0
    lifecycles = {r["request_id"]: [e["to_state"] for e in r["events"]] for r in document["requests"]}
    assert lifecycles == expected
    outcomes = {r["request_id"]: r["outcome"] for r in document["requests"]}
    assert sorted(outcomes.values()) == ["DELIVERED", "FAILED", "REJECTED"]

    table = await airlock(stack, "audit", "replay", "--tenant", tenant, "--witness", witness)
    assert table.exit_code == 0, table.output
    assert "2 request(s): 1 DELIVERED, 1 FAILED" in table.output  # the rejected one has no readable tenant
    page = tmp_path / "report.html"
    as_html = ["--format", "html", "--out", str(page), "--witness", witness]
    html = await airlock(stack, "audit", "replay", *selection, *as_html)
    assert html.exit_code == 0, html.output
    assert all(request_id in page.read_text() for request_id in expected)

    bundle = tmp_path / "bundle"
    exported = await airlock(stack, "audit", "export", "--out", str(bundle), *selection, "--witness", witness)
    assert exported.exit_code == 0, exported.output
    offline = CliRunner().invoke(
        app,
        ["audit", "verify", str(bundle), "--format", "json", "--trust-bundled-keys"],
        env={"AIRLOCK_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
    )
    assert offline.exit_code == 0, offline.output
    verified = json.loads(offline.output)
    assert {r["request_id"]: [e["to_state"] for e in r["events"]] for r in verified["requests"]} == expected
    assert verified["witnessed"] > 0

    ledger_file = next(p for p in (bundle / "ledger").glob("*.jsonl") if p.stat().st_size)
    records = ledger_file.read_bytes().splitlines()
    records[0] = records[0].replace(b'"stage":"ingest"', b'"stage":"ingesT"', 1)
    ledger_file.write_bytes(b"\n".join(records) + b"\n")
    tampered = CliRunner().invoke(app, ["audit", "verify", str(bundle), "--trust-bundled-keys"])
    assert tampered.exit_code == 1 and "modified" in tampered.output


PII = {
    "name": "Jonathan Quixley",
    "email": "j.quixley@contoso-mail.com",
    "phone": "+1 415 555 0199",
    "card": "4111 1111 1111 1111",
    "ssn": "078-05-1120",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ip": "203.0.113.77",
}


async def test_no_personal_data_or_secret_in_the_ledger_checkpoints_or_witness(
    stack: LocalStack, client: AirlockClient
) -> None:
    text = (
        f"I am {PII['name']}, mail {PII['email']}, phone {PII['phone']}, card {PII['card']}, "
        f"SSN {PII['ssn']}, IBAN {PII['iban']}, from {PII['ip']}. Summarise my account."
    )
    requests = [client.build(text, tenant="acme", model="gpt-4o-mini") for _ in range(2)]
    for request in requests:
        await client.publish(request)
    # A request that fails validation with personal data in the offending fields.
    invalid = f"audit-pii-{uuid.uuid4().hex[:8]}"
    document = {"request_id": invalid, "reply_to": client.reply_to, "tenant": PII["email"], "messages": text}
    await client.publish_raw(json.dumps(document).encode(), request_id=invalid)
    for request_id in [r.request_id for r in requests] + [invalid]:
        await client.wait(request_id, timeout=120)
    await wait_until_vouched_for(stack, {r.request_id for r in requests} | {invalid})

    ledger = await read_ledger(stack.kafka_settings, stack.topics.ledger)
    blob = b"\n".join(v for records in ledger.values() for _, v in records)
    blob += b"\n".join(await read_checkpoints(stack.kafka_settings, stack.topics.checkpoints))
    blob += b"\n".join(path.read_bytes() for path in witness_dir(stack.state).rglob("*.json"))
    assert blob.count(b'"request_id"') >= 3
    searchable = blob.decode()
    for kind, value in PII.items():
        variants = {value, value.replace(" ", ""), value.replace("-", "")} | ({"Quixley"} if kind == "name" else set())
        for variant in variants:
            assert variant not in searchable, f"{kind} ({variant!r}) leaked into the ledger evidence"

    ring = KeyRing.from_json(ensure_signing_keys(stack.state).read_text())
    material = [b64(seed) for seed in ring.keys.values()] + [seed.hex() for seed in ring.keys.values()]
    assert stack.mesh is not None
    auditor_logs = "".join(p.log_path.read_text(errors="replace") for p in stack.mesh.replicas["auditor"])
    for secret in material:
        assert secret not in searchable and secret not in auditor_logs


async def test_evidence_topics_are_provisioned_with_unlimited_retention(stack: LocalStack) -> None:
    admin = await connect_admin(stack.kafka_settings)
    try:
        names = [stack.topics.ledger, stack.topics.checkpoints, stack.topics.audit, stack.topics.accepted]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, None) for name in names]
        )
    finally:
        await admin.close()
    retention: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            retention[name] = next(entry[1] for entry in entries if entry[0] == "retention.ms")
    assert (
        retention[stack.topics.ledger] == retention[stack.topics.checkpoints] == retention[stack.topics.audit] == "-1"
    )
    assert 0 < int(retention[stack.topics.accepted]) <= 7 * 24 * 3600 * 1000
