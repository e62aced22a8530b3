"""The llm-worker alone, through Kafka: real broker, real ``openai`` client, the fake server's faults.

A lab under its own topic prefix on the session's broker: two llm-worker processes (the
production entry point, ``faststream run``) with a routing table of independent fake targets,
fed redacted envelopes directly, read back from the completions, reply, usage, audit and
DLQ topics. Each test uses its own targets, so breaker and pacing state do not leak between
tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer, ConsumerRecord

from airlock.core import access
from airlock.core import headers as h
from airlock.core.admin import apply_access, provision
from airlock.core.authenticity import StageSigner
from airlock.core.deadletters import DeadLetterOpener
from airlock.core.lifecycle import State
from airlock.core.models import (
    AuditEvent,
    ChatMessage,
    Envelope,
    ErrorReply,
    LLMRequest,
    RedactionSummary,
    SealedVault,
    UsageRecord,
    utcnow,
)
from airlock.core.settings import KafkaSettings, TopicSettings
from airlock.core.topics import Topics
from airlock.core.topology import stage
from airlock.devstack.kafka import free_port
from airlock.devstack.mesh import FakeOpenAIProcess, Mesh, wait_ready
from airlock.devstack.stack import LocalStack
from tests.integration.kafka_reading import header, read_topic

pytestmark = pytest.mark.integration

PROVIDER_KEY = "sk-lab-" + uuid.uuid4().hex
PARTITIONS = 2


def routes(fake: FakeOpenAIProcess, closed_port: int) -> dict[str, Any]:
    def openai(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai-compatible",
            "model": "gpt-4o-mini",
            "endpoint": fake.target_base_url(name),
            "api_key_env": "LAB_PROVIDER_KEY",
            **extra,
        }

    def chain(*targets: dict[str, Any]) -> dict[str, Any]:
        return {"targets": list(targets)}

    gone = openai("gone")
    gone["endpoint"] = f"http://127.0.0.1:{closed_port}/v1"
    return {
        "models": {
            "it-basic": chain(openai("basic")),
            "it-500": chain(openai("t500")),
            "it-429": chain(openai("t429")),
            "it-timeout": chain(openai("slow"), openai("fast")),
            "it-down": chain(openai("down"), gone),
            "it-breaker": chain(openai("brk"), openai("brk-backup")),
            "it-azure": chain(
                {
                    "name": "azure-eu",
                    "provider": "azure",
                    "endpoint": fake.azure_endpoint("azure-eu"),
                    "deployment": "mini-eu",
                    "api_version": "2024-10-21",
                    "api_key_env": "LAB_PROVIDER_KEY",
                    "price_as": "gpt-4o-mini",
                }
            ),
            "it-cache": chain(openai("cached")),
            "it-paced": chain(openai("paced", rpm=60)),
            "it-storm": chain(openai("storm")),
            "it-crash": chain(openai("crash")),
        },
        "cache": [{"tenant": "cachers", "use_case": "faq", "ttl_s": 600}],
    }


@dataclass
class Lab:
    kafka: KafkaSettings
    topics: Topics
    fake: FakeOpenAIProcess
    mesh: Mesh
    producer: AIOKafkaProducer
    redactor: StageSigner
    dead_letters: DeadLetterOpener

    async def send(
        self,
        model: str,
        content: str = "hello <PERSON_1>",
        *,
        partition: int = 0,
        tenant: str = "acme",
        use_case: str = "default",
        deadline_s: float = 120.0,
    ) -> Envelope:
        now = utcnow()
        airlock_id = str(uuid.uuid4())
        envelope = Envelope(
            airlock_id=airlock_id,
            state=State.REDACTED,
            request=LLMRequest(
                request_id=f"lab-{airlock_id[:8]}",
                client_id="lab",
                tenant=tenant,
                use_case=use_case,
                model=model,
                messages=[ChatMessage(role="user", content=content)],
                reply_to=self.topics.reply_topic("lab"),
            ),
            received_at=now,
            deadline=now + timedelta(seconds=deadline_s),
            vault=SealedVault(key_id="lab", nonce="bm9uY2U=", ciphertext="c2VhbGVk"),
            redaction=RedactionSummary(policy_version="lab", entity_counts={"PERSON": 1}),
        )
        value, key = envelope.to_bytes(), airlock_id.encode()
        await self.producer.send_and_wait(
            self.topics.redacted,
            value,
            key=key,
            partition=partition,
            headers=[
                (h.AIRLOCK_ID, airlock_id.encode()),
                (h.REQUEST_ID, envelope.request.request_id.encode()),
                # The lab plays the redactor: the worker takes only what the redactor signed.
                self.redactor.header(self.topics.redacted, key, value),
            ],
        )
        return envelope

    async def records(self, topic: str, airlock_id: str) -> list[ConsumerRecord]:
        found = await read_topic(self.kafka, topic)
        if topic == self.topics.usage:
            return [r for r in found if UsageRecord.model_validate_json(r.value).airlock_id == airlock_id]
        if topic == self.topics.audit:
            return [r for r in found if AuditEvent.model_validate_json(r.value).airlock_id == airlock_id]
        return [r for r in found if header(r, h.AIRLOCK_ID) == airlock_id]

    async def completed(self, envelope: Envelope, timeout_s: float = 60.0) -> Envelope:
        [record] = await self._wait(self.topics.completions, envelope.airlock_id, timeout_s)
        completed = Envelope.model_validate_json(record.value)
        assert completed.completion is not None
        return completed

    async def failed(self, envelope: Envelope, timeout_s: float = 60.0) -> ErrorReply:
        [record] = await self._wait(self.topics.reply_topic("lab"), envelope.airlock_id, timeout_s)
        return ErrorReply.model_validate_json(record.value)

    async def event(self, envelope: Envelope, to_state: State) -> AuditEvent:
        for _ in range(60):
            events = [
                AuditEvent.model_validate_json(r.value)
                for r in await self.records(self.topics.audit, envelope.airlock_id)
            ]
            matching = [e for e in events if e.to_state is to_state]
            if matching:
                assert len(matching) == 1, matching
                return matching[0]
            await asyncio.sleep(0.5)
        raise AssertionError(f"no {to_state} event for {envelope.airlock_id}")

    async def _wait(self, topic: str, airlock_id: str, timeout_s: float) -> list[ConsumerRecord]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = await self.records(topic, airlock_id)
            if found:
                return found
            await asyncio.sleep(0.3)
        raise AssertionError(f"nothing for {airlock_id} on {topic} within {timeout_s}s")

    def owner_of(self, partition: int) -> int:
        """The replica number that owns ``partition`` of the input topic."""
        from airlock.devstack.mesh import readiness

        wanted = f"{self.topics.redacted}/{partition}"
        for replica in self.mesh.replicas["llm-worker"]:
            answer = readiness(replica)
            if answer and wanted in answer["assigned"]:
                return replica.replica
        raise AssertionError(f"nobody owns {wanted}")


@pytest.fixture(scope="module")
def lab_processes(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Topics, FakeOpenAIProcess, Mesh]]:
    state: Path = tmp_path_factory.mktemp("llm-lab")
    prefix = f"lw{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    assert stack.kafka is not None
    kafka = stack.kafka.admin_settings(prefix)
    settings = TopicSettings(partitions=PARTITIONS)
    asyncio.run(provision(kafka, [*topics.specs(settings), topics.reply_spec("lab", settings)]))
    # The stack's llm-worker principal, granted this prefix's topics as well.
    asyncio.run(apply_access(kafka, {}, access.stage_acls(stage("llm-worker"), topics)))
    fake = FakeOpenAIProcess(free_port(), state / "fake.log").start()
    routes_file = state / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(routes(fake, free_port())))
    env = {
        **kafka.environment(),
        **stack.stage_env("llm-worker"),
        "AIRLOCK_MESH_TRUST_FILE": stack.service_env()["AIRLOCK_MESH_TRUST_FILE"],
        "AIRLOCK_LLM_WORKER_ROUTES_FILE": str(routes_file),
        "AIRLOCK_LLM_WORKER_CALL_TIMEOUT_S": "1.0",
        "AIRLOCK_LLM_WORKER_ATTEMPTS_PER_TARGET": "2",
        "AIRLOCK_LLM_WORKER_BACKOFF_BASE_S": "0.1",
        "AIRLOCK_LLM_WORKER_BREAKER_FAILURES": "3",
        "AIRLOCK_LLM_WORKER_BREAKER_COOLDOWN_S": "3",
        "AIRLOCK_LLM_WORKER_OPENAI_API_KEY": "",
        "OPENAI_API_KEY": "",
        "LAB_PROVIDER_KEY": PROVIDER_KEY,
    }
    mesh = Mesh(env, state)
    try:
        mesh.start("llm-worker", 2)
        asyncio.run(wait_ready(kafka, mesh, 180))
        yield topics, fake, mesh
    finally:
        mesh.stop()
        fake.stop()


@pytest.fixture
async def lab(stack: LocalStack, lab_processes: tuple[Topics, FakeOpenAIProcess, Mesh]) -> AsyncIterator[Lab]:
    topics, fake, mesh = lab_processes
    assert stack.kafka is not None
    kafka = stack.kafka.admin_settings(topics.prefix)
    producer = AIOKafkaProducer(**kafka.client_args(), enable_idempotence=True, acks="all")
    await producer.start()
    try:
        yield Lab(kafka, topics, fake, mesh, producer, stack.stage_signer("redactor"), stack.dead_letters())
    finally:
        await producer.stop()


def trail(event: AuditEvent) -> str:
    assert event.details.extra is not None
    return str(event.details.extra.get("trail"))


async def test_completion_usage_and_audit_are_committed_together(lab: Lab) -> None:
    envelope = await lab.send("it-basic")
    completed = await lab.completed(envelope)

    assert completed.state is State.COMPLETED and completed.completion is not None
    assert completed.completion.content == 'You said: "hello <PERSON_1>"'
    assert completed.completion.target == "basic" and completed.completion.complete
    [usage_record] = await lab.records(lab.topics.usage, envelope.airlock_id)
    usage = UsageRecord.model_validate_json(usage_record.value)
    assert usage_record.key == b"acme" and usage.usage.input_tokens > 0 and usage.cost_usd > 0
    event = await lab.event(envelope, State.COMPLETED)
    assert event.details.cost_usd == usage.cost_usd and event.details.target == "basic"


async def test_429_with_retry_after_is_honoured_before_the_retry(lab: Lab) -> None:
    lab.fake.configure_target("t429", fault="429", fault_count=1, retry_after_s=1.5)
    envelope = await lab.send("it-429")
    completed = await lab.completed(envelope)

    assert completed.completion is not None and completed.completion.attempts == 2
    limited, served = lab.fake.calls("t429")
    assert (limited["status"], served["status"]) == (429, 200)
    assert served["at"] - limited["at"] >= 1.5
    assert trail(await lab.event(envelope, State.COMPLETED)) == "t429:429,t429:ok"


async def test_500_then_success_on_the_same_target(lab: Lab) -> None:
    lab.fake.configure_target("t500", fault="500", fault_count=1)
    envelope = await lab.send("it-500")
    completed = await lab.completed(envelope)

    assert completed.completion is not None and completed.completion.target == "t500"
    assert [c["status"] for c in lab.fake.calls("t500")] == [500, 200]
    event = await lab.event(envelope, State.COMPLETED)
    assert event.details.attempts == 2 and trail(event) == "t500:500,t500:ok"


async def test_timeouts_then_fallback_to_the_next_target(lab: Lab) -> None:
    lab.fake.configure_target("slow", fault="timeout", timeout_s=30)
    envelope = await lab.send("it-timeout")
    completed = await lab.completed(envelope)

    assert completed.completion is not None and completed.completion.target == "fast"
    event = await lab.event(envelope, State.COMPLETED)
    assert (event.details.target, event.details.attempts) == ("fast", 3)
    assert trail(event) == "slow:timeout,slow:timeout,fast:ok"


async def test_all_targets_down_ends_failed_with_error_reply_dlq_and_audit(lab: Lab) -> None:
    lab.fake.configure_target("down", fault="500")
    envelope = await lab.send("it-down")
    reply = await lab.failed(envelope)

    assert reply.code == "model_unavailable" and reply.stage == "llm-worker"
    assert reply.request_id == envelope.request.request_id
    assert "down:500,down:500,gone:connection,gone:connection" in reply.message
    [dead] = await lab.records(lab.topics.dlq, envelope.airlock_id)
    assert header(dead, h.ERROR_CODE) == "model_unavailable"
    assert Envelope.model_validate_json(lab.dead_letters.open(dead.value, dead.headers).value) == envelope
    event = await lab.event(envelope, State.FAILED)
    assert event.details.error_code == "model_unavailable" and event.details.attempts == 4
    assert await lab.records(lab.topics.completions, envelope.airlock_id) == []
    assert await lab.records(lab.topics.usage, envelope.airlock_id) == []


async def test_request_fault_4xx_is_not_retried_nor_sent_to_another_target(lab: Lab) -> None:
    envelope = await lab.send("it-timeout", f"bad request {uuid.uuid4().hex} [[fake:400]]")
    reply = await lab.failed(envelope)
    assert reply.code == "model_rejected"
    event = await lab.event(envelope, State.FAILED)
    assert event.details.attempts == 1 and trail(event) == "slow:400"
    assert not [c for c in lab.fake.calls("fast") if c["at"] >= envelope.received_at.timestamp()]


async def test_breaker_opens_on_repeated_failures_and_recovers_after_a_probe(lab: Lab) -> None:
    lab.fake.configure_target("brk", fault="500")
    # Same partition → same replica → same breaker.
    first = await lab.completed(await lab.send("it-breaker", partition=1))
    second_sent = await lab.send("it-breaker", partition=1)
    second = await lab.completed(second_sent)
    third_sent = await lab.send("it-breaker", partition=1)
    third = await lab.completed(third_sent)
    assert all(c.completion is not None and c.completion.target == "brk-backup" for c in (first, second, third))
    assert trail(await lab.event(second_sent, State.COMPLETED)) == "brk:500,brk:open,brk-backup:ok"
    assert trail(await lab.event(third_sent, State.COMPLETED)) == "brk:open,brk-backup:ok"
    assert len(lab.fake.calls("brk")) == 3  # the open circuit kept calls away

    lab.fake.configure_target("brk", fault=None)
    await asyncio.sleep(3.5)  # the cool-down
    recovered_sent = await lab.send("it-breaker", partition=1)
    recovered = await lab.completed(recovered_sent)
    assert recovered.completion is not None and recovered.completion.target == "brk"
    assert trail(await lab.event(recovered_sent, State.COMPLETED)) == "brk:ok"


async def test_length_and_content_filter_reach_the_audit_as_incomplete(lab: Lab) -> None:
    for reason in ("length", "content_filter"):
        envelope = await lab.send("it-basic", f"write a long story [[fake:{reason}]]")
        completed = await lab.completed(envelope)
        assert completed.completion is not None
        assert completed.completion.finish_reason == reason and completed.completion.complete is False
        event = await lab.event(envelope, State.COMPLETED)
        assert event.details.finish_reason == reason and event.details.complete is False


async def test_azure_target_is_called_as_azure_openai(lab: Lab) -> None:
    envelope = await lab.send("it-azure")
    completed = await lab.completed(envelope)
    assert completed.completion is not None and completed.completion.target == "azure-eu"
    assert [(c["api"], c["model"]) for c in lab.fake.calls("azure-eu")] == [("azure", "mini-eu")]
    [usage_record] = await lab.records(lab.topics.usage, envelope.airlock_id)
    assert UsageRecord.model_validate_json(usage_record.value).cost_usd > 0  # priced as gpt-4o-mini


async def test_unapproved_model_is_refused(lab: Lab) -> None:
    envelope = await lab.send("gpt-unapproved")
    reply = await lab.failed(envelope)
    assert reply.code == "model_not_allowed"
    assert (await lab.event(envelope, State.FAILED)).details.error_code == "model_not_allowed"


async def test_cache_hit_for_the_same_tenant_costs_nothing_and_other_tenants_miss(lab: Lab) -> None:
    prompt = f"what are your opening hours? {uuid.uuid4().hex}"
    first = await lab.completed(await lab.send("it-cache", prompt, tenant="cachers", use_case="faq", partition=0))
    await asyncio.sleep(1.0)  # the entry travels through the cache topic to every replica
    # Partition 1: the other replica answers from the shared cache.
    hit_sent = await lab.send("it-cache", prompt, tenant="cachers", use_case="faq", partition=1)
    hit = await lab.completed(hit_sent)
    other_sent = await lab.send("it-cache", prompt, tenant="others", use_case="faq", partition=1)
    other = await lab.completed(other_sent)

    assert first.completion is not None and hit.completion is not None and other.completion is not None
    assert hit.completion.cached and hit.completion.content == first.completion.content
    assert not other.completion.cached
    assert len([c for c in lab.fake.calls("cached")]) == 2  # first and the other tenant's
    event = await lab.event(hit_sent, State.COMPLETED)
    assert event.details.cached is True and event.details.cost_usd == 0.0
    [usage_record] = await lab.records(lab.topics.usage, hit_sent.airlock_id)
    usage = UsageRecord.model_validate_json(usage_record.value)
    assert usage.cached and usage.usage.total_tokens == 0 and usage.cost_usd == 0.0


async def test_fleet_shares_a_targets_requests_per_minute(lab: Lab) -> None:
    # 60 rpm for the fleet; two replicas own one partition each, so each paces at 30 rpm.
    sent = [await lab.send("it-paced", f"n{i}", partition=i % PARTITIONS) for i in range(16)]
    for envelope in sent:
        await lab.completed(envelope, timeout_s=90)
    arrivals = sorted(c["at"] for c in lab.fake.calls("paced"))
    assert len(arrivals) == 16
    # Unshared, two replicas at 60 rpm each would finish in about 6 s; shared takes about 13 s.
    assert arrivals[-1] - arrivals[0] >= 10.0
    # In any 10 s window a replica pacing at 30 rpm with a 1 s burst tolerance sends at most 6
    # (slots 0, 1, 3, 5, 7, 9), plus one a stalled event loop sent late onto the next slot:
    # 14 for the fleet. Two replicas pacing at 60 rpm each would send all 16.
    for start in arrivals:
        assert sum(1 for t in arrivals if start <= t < start + 10.0) <= 2 * (6 + 1)


async def test_a_429_on_one_replica_pauses_the_target_for_the_whole_fleet(lab: Lab) -> None:
    lab.fake.configure_target("storm", fault="429", fault_count=1, retry_after_s=4)
    first = await lab.send("it-storm", partition=0)
    limited_at = await _first_429(lab, "storm")
    await asyncio.sleep(1.0)  # the 429's pacing signal reaches the other replica
    others = [await lab.send("it-storm", f"n{i}", partition=1) for i in range(3)]
    for envelope in (first, *others):
        await lab.completed(envelope)
    later = [c["at"] for c in lab.fake.calls("storm") if c["at"] > limited_at]
    assert len(later) == 4
    # The replica that never saw a 429 waited for the pause too (unshared, it would call ~1 s in).
    assert min(later) >= limited_at + 4.0 - 0.3


async def _first_429(lab: Lab, target: str) -> float:
    for _ in range(100):
        limited = [c["at"] for c in lab.fake.calls(target) if c.get("status") == 429]
        if limited:
            return float(limited[0])
        await asyncio.sleep(0.1)
    raise AssertionError("no 429 seen")


async def test_sigkill_during_a_call_completes_once_after_restart_with_one_usage_record(lab: Lab) -> None:
    lab.fake.configure_target("crash", latency_ms=4000)
    envelope = await lab.send("it-crash", partition=0)
    await _until(lambda: len(lab.fake.calls("crash")) == 1, "the call to start")
    lab.mesh.kill("llm-worker", lab.owner_of(0))  # mid-call: nothing of it is committed
    lab.fake.configure_target("crash", latency_ms=200)
    lab.mesh.start("llm-worker")
    await wait_ready(lab.kafka, lab.mesh, 180)

    completed = await lab.completed(envelope, timeout_s=120)
    assert completed.completion is not None
    await asyncio.sleep(2.0)  # anything duplicated would be committed by now
    assert len(await lab.records(lab.topics.completions, envelope.airlock_id)) == 1
    assert len(await lab.records(lab.topics.usage, envelope.airlock_id)) == 1
    events = [AuditEvent.model_validate_json(r.value) for r in await lab.records(lab.topics.audit, envelope.airlock_id)]
    assert [e.to_state for e in events] == [State.COMPLETED]
    assert len(lab.fake.calls("crash")) == 2  # the interrupted call, and exactly one more


async def test_provider_key_never_appears_in_worker_logs(lab: Lab) -> None:
    await lab.completed(await lab.send("it-basic"))
    logs = [p.read_text(errors="replace") for p in lab.mesh.log_dir.glob("llm-worker-*.log")]
    assert logs and all(PROVIDER_KEY not in text for text in logs)


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
