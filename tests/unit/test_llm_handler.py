"""The llm-worker handler's outcomes: completion, usage record, audit, cache, failures (no network)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airlock.core import headers as h
from airlock.core.lifecycle import State
from airlock.core.models import (
    AuditEvent,
    ChatMessage,
    Envelope,
    ErrorReply,
    LLMRequest,
    RedactionSummary,
    SealedVault,
    Settlement,
    Usage,
    UsageRecord,
)
from airlock.core.pricing import DEFAULT_PRICES
from airlock.core.stage import Incoming, Outcome, StageContext
from airlock.core.topics import Topics
from airlock.llm_worker.cache import CacheEntry, ResponseCache
from airlock.llm_worker.calls import Answer, AttemptFailure
from airlock.llm_worker.handlers import CompletionHandler
from airlock.llm_worker.pacing import Pacer
from airlock.llm_worker.resilience import Backoff
from airlock.llm_worker.router import Router, RouterPolicy
from airlock.llm_worker.routing import RoutingTable, TargetSpec

TOPICS = Topics("t.")
CONTEXT = StageContext("llm-worker", TOPICS)
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TABLE = RoutingTable.model_validate(
    {
        "models": {
            "gpt-4o-mini": {
                "targets": [
                    {
                        "name": "primary",
                        "provider": "openai-compatible",
                        "model": "gpt-4o-mini",
                        "endpoint": "http://p",
                    },
                    {"name": "backup", "provider": "openai-compatible", "model": "gpt-4o", "endpoint": "http://b"},
                ]
            },
            "unpriced-model": {
                "targets": [
                    {"name": "local", "provider": "openai-compatible", "model": "llama", "endpoint": "http://l"}
                ]
            },
        },
        "limits": {"tenants": {"acme": {"max_tokens": 64}}},
        "cache": [{"tenant": "acme", "use_case": "faq", "ttl_s": 60}],
    }
)


class Provider:
    def __init__(self, script: dict[str, list[Any]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(
        self, target: TargetSpec, *, messages: Sequence[ChatMessage], params: dict[str, Any], timeout_s: float
    ) -> Answer:
        self.calls.append((target.name, dict(params)))
        steps = self.script.get(target.name, [])
        step = steps.pop(0) if steps else "stop"
        if isinstance(step, Exception):
            raise step
        return Answer(
            f'You said: "{messages[-1].content}"',
            step,
            target.served_model,
            Usage(input_tokens=1000, output_tokens=2000),
            300.0,
        )


def handler(provider: Provider, *, cache: ResponseCache | None = None) -> CompletionHandler:
    async def no_sleep(_: float) -> None:
        return None

    router = Router(
        provider,
        Pacer({}, share=lambda: 1.0, origin="me"),
        policy=RouterPolicy(attempts_per_target=2, backoff=Backoff(0.0, 0.0)),
        clock=lambda: NOW.timestamp(),
        sleep=no_sleep,
        rng=random.Random(0),
    )
    return CompletionHandler(CONTEXT, router, TABLE, DEFAULT_PRICES, cache=cache, clock=lambda: NOW)


def incoming(
    *,
    model: str = "gpt-4o-mini",
    tenant: str = "acme",
    use_case: str = "default",
    content: str = "hi <PERSON_1>",
    offset: int = 3,
    airlock_id: str = "a-1",
    deadline: datetime | None = None,
    **params: Any,
) -> Incoming:
    envelope = Envelope(
        airlock_id=airlock_id,
        state=State.REDACTED,
        request=LLMRequest(
            request_id=f"r-{airlock_id}",
            client_id="billing",
            tenant=tenant,
            use_case=use_case,
            model=model,
            messages=[ChatMessage(role="user", content=content)],
            params=params,
            reply_to="t.responses.billing",
        ),
        received_at=NOW - timedelta(seconds=1),
        deadline=deadline or NOW + timedelta(seconds=60),
        vault=SealedVault(key_id="k", nonce="bm9uY2U=", ciphertext="Y2lwaGVy"),
        redaction=RedactionSummary(policy_version="p1", entity_counts={"PERSON": 1}),
    )
    return Incoming(topic="t.redacted", partition=0, offset=offset, value=envelope.to_bytes(), timestamp_ms=1)


def by_topic(outcome: Outcome) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for record in outcome.records:
        found.setdefault(record.topic, []).append(record.value)
    return found


def only_event(outcome: Outcome) -> AuditEvent:
    [event] = outcome.events
    return event


async def test_completion_usage_record_and_audit_event_form_one_outcome() -> None:
    provider = Provider()
    outcome = await handler(provider).handle(incoming())

    records = by_topic(outcome)
    assert set(records) == {"t.completions", "t.usage", "t.ingest.admissions"}
    completed = Envelope.model_validate_json(records["t.completions"][0])
    assert completed.state is State.COMPLETED and completed.completion is not None
    assert completed.completion.target == "primary" and completed.completion.attempts == 1
    assert completed.completion.complete
    [usage_bytes] = records["t.usage"]
    usage = UsageRecord.model_validate_json(usage_bytes)
    assert (usage.tenant, usage.model, usage.target, usage.cached) == ("acme", "gpt-4o-mini", "primary", False)
    assert usage.usage == Usage(input_tokens=1000, output_tokens=2000)
    assert usage.cost_usd == pytest.approx(0.00015 + 0.0012)  # gpt-4o-mini list price: 1k in, 2k out
    [usage_record] = [r for r in outcome.records if r.topic == "t.usage"]
    assert usage_record.key == b"acme"
    event = only_event(outcome)
    assert (event.from_state, event.to_state) == (State.REDACTED, State.COMPLETED)
    details = event.details
    assert (details.target, details.attempts, details.cached, details.complete) == ("primary", 1, False, True)
    assert details.cost_usd == usage.cost_usd and details.usage == usage.usage
    assert details.extra is not None and details.extra["trail"] == "primary:ok"
    assert details.extra["params"] == "max_tokens set to 64"  # acme's ceiling
    assert provider.calls == [("primary", {"max_tokens": 64})]
    [settlement_record] = [r for r in outcome.records if r.topic == "t.ingest.admissions"]
    settlement = Settlement.model_validate_json(settlement_record.value)
    assert (settlement.airlock_id, settlement.tenant, settlement.outcome) == (completed.airlock_id, "acme", "completed")
    assert (settlement.total_tokens, settlement.cost_usd) == (3000, usage.cost_usd)
    assert settlement_record.partition == 0, "the admission log has one partition, read in order"


async def test_fallback_is_recorded_with_the_serving_target_and_priced_by_its_model() -> None:
    provider = Provider({"primary": [AttemptFailure("server", "500", status=500)] * 2})
    outcome = await handler(provider).handle(incoming())
    details = only_event(outcome).details
    assert (details.target, details.attempts) == ("backup", 3)
    assert details.extra is not None and details.extra["trail"] == "primary:500,primary:500,backup:ok"
    usage = UsageRecord.model_validate_json(by_topic(outcome)["t.usage"][0])
    assert usage.target == "backup" and usage.served_model == "gpt-4o"
    assert usage.cost_usd == pytest.approx(0.0025 + 0.02)  # priced as gpt-4o, the model that served


async def test_length_and_content_filter_are_flagged_incomplete_never_plain_success() -> None:
    for reason in ("length", "content_filter"):
        outcome = await handler(Provider({"primary": [reason]})).handle(incoming(airlock_id=f"a-{reason}"))
        completion = Envelope.model_validate_json(by_topic(outcome)["t.completions"][0]).completion
        assert completion is not None and completion.finish_reason == reason and completion.complete is False
        details = only_event(outcome).details
        assert details.finish_reason == reason and details.complete is False


async def test_every_target_failing_ends_failed_with_reply_dlq_and_audit() -> None:
    down = AttemptFailure("server", "503", status=503)
    provider = Provider({"primary": [down] * 2, "backup": [down] * 2})
    record = incoming()
    outcome = await handler(provider).handle(record)

    records = by_topic(outcome)
    assert set(records) == {"t.responses.billing", "t.dlq", "t.ingest.admissions"}
    reply = ErrorReply.model_validate_json(records["t.responses.billing"][0])
    assert reply.code == "model_unavailable" and reply.stage == "llm-worker"
    [released] = [Settlement.model_validate_json(v) for v in records["t.ingest.admissions"]]
    assert (released.outcome, released.total_tokens, released.cost_usd) == ("failed", 0, 0.0)
    assert "primary:503,primary:503,backup:503,backup:503" in reply.message
    [dead] = [r for r in outcome.records if r.topic == "t.dlq"]
    assert dead.value == record.value and dict(dead.headers)[h.ERROR_CODE] == b"model_unavailable"
    event = only_event(outcome)
    assert event.to_state is State.FAILED and event.details.attempts == 4
    assert "t.usage" not in records


async def test_unapproved_model_is_refused_without_a_call() -> None:
    provider = Provider()
    outcome = await handler(provider).handle(incoming(model="gpt-9-preview"))
    reply = ErrorReply.model_validate_json(by_topic(outcome)["t.responses.billing"][0])
    assert reply.code == "model_not_allowed" and "gpt-9-preview" in reply.message
    assert provider.calls == []
    assert only_event(outcome).details.error_code == "model_not_allowed"


async def test_passed_deadline_fails_without_a_call() -> None:
    provider = Provider()
    outcome = await handler(provider).handle(incoming(deadline=NOW - timedelta(seconds=1)))
    assert ErrorReply.model_validate_json(by_topic(outcome)["t.responses.billing"][0]).code == "deadline_exceeded"
    assert provider.calls == []


async def test_unpriced_model_costs_zero_and_says_so() -> None:
    outcome = await handler(Provider()).handle(incoming(model="unpriced-model"))
    details = only_event(outcome).details
    assert details.cost_usd == 0.0 and details.extra is not None and details.extra["priced"] is False


async def test_redelivered_record_is_answered_from_memory_not_called_again() -> None:
    provider = Provider()
    subject = handler(provider)
    first = await subject.handle(incoming())
    again = await subject.handle(incoming())
    assert len(provider.calls) == 1
    assert [r.value for r in again.records] == [r.value for r in first.records]


async def test_envelope_without_redaction_record_is_poison_and_never_sent() -> None:
    provider = Provider()
    record = incoming()
    envelope = Envelope.model_validate_json(record.value).model_copy(update={"vault": None})
    bad = Incoming(topic=record.topic, partition=0, offset=4, value=envelope.to_bytes())
    outcome = await handler(provider).handle(bad)
    assert [r.topic for r in outcome.records] == ["t.dlq"]
    assert outcome.events[0].kind == "notice" and provider.calls == []


async def test_batch_results_stay_in_offset_order_and_never_raise_for_provider_trouble() -> None:
    down = AttemptFailure("connection", "refused")
    provider = Provider({"primary": [down, down], "backup": [down, down]})
    batch = [incoming(offset=i, airlock_id=f"a-{i}", content=f"m{i}") for i in range(4)]
    results = await handler(provider).process(batch)
    assert all(isinstance(r, Outcome) for r in results)
    ids = [r.events[0].airlock_id for r in results if isinstance(r, Outcome)]
    assert ids == ["a-0", "a-1", "a-2", "a-3"]


async def test_opted_in_answer_is_cached_and_a_hit_is_audited_and_costs_nothing() -> None:
    cache = ResponseCache()
    provider = Provider()
    subject = handler(provider, cache=cache)
    first = await subject.handle(incoming(use_case="faq", airlock_id="a-1"))
    [entry_bytes] = by_topic(first)["t.llm.cache"]
    entry = CacheEntry.model_validate_json(entry_bytes)
    assert entry.tenant == "acme" and entry.expires_at == NOW + timedelta(seconds=60)
    assert "Jane" not in entry.content  # the redacted answer, placeholders only
    cache.put(entry, NOW)  # what the cache feed does once the transaction commits

    hit = await subject.handle(incoming(use_case="faq", airlock_id="a-2"))
    assert len(provider.calls) == 1
    completion = Envelope.model_validate_json(by_topic(hit)["t.completions"][0]).completion
    assert completion is not None and completion.cached and completion.content == entry.content
    details = only_event(hit).details
    assert details.cached is True and details.cost_usd == 0.0 and details.attempts == 0
    usage = UsageRecord.model_validate_json(by_topic(hit)["t.usage"][0])
    assert usage.cached and usage.usage.total_tokens == 0 and usage.cost_usd == 0.0
    assert "t.llm.cache" not in by_topic(hit)


async def test_cache_is_never_shared_across_tenants_or_used_without_opt_in() -> None:
    cache = ResponseCache()
    provider = Provider()
    subject = handler(provider, cache=cache)
    first = await subject.handle(incoming(use_case="faq", airlock_id="a-1"))
    cache.put(CacheEntry.model_validate_json(by_topic(first)["t.llm.cache"][0]), NOW)

    other_tenant = await subject.handle(incoming(tenant="globex", use_case="faq", airlock_id="a-2"))
    other_use_case = await subject.handle(incoming(use_case="default", airlock_id="a-3"))
    assert len(provider.calls) == 3
    assert "t.llm.cache" not in by_topic(other_tenant) and "t.llm.cache" not in by_topic(other_use_case)


async def test_cut_short_answers_are_not_cached() -> None:
    outcome = await handler(Provider({"primary": ["length"]}), cache=ResponseCache()).handle(incoming(use_case="faq"))
    assert "t.llm.cache" not in by_topic(outcome)


def test_completeness_follows_finish_reason_in_completion_and_reply() -> None:
    from airlock.core.models import Completion, CompletionReply

    assert Completion(content="x", finish_reason="stop", model="m").complete
    assert not Completion(content="x", finish_reason="length", model="m").complete
    forged = b'{"content": "x", "finish_reason": "content_filter", "model": "m", "complete": true}'
    assert not Completion.model_validate_json(forged).complete  # cannot be set against the reason
    reply = CompletionReply(
        request_id="r", airlock_id="a", model="m", content="x", finish_reason="length", usage=Usage()
    )
    assert not reply.complete and b'"complete":false' in reply.to_bytes()
