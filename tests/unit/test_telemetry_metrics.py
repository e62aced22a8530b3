"""Metric names and bounded labels, the services' metrics from committed events, the GenAI call span."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from airlock.auditor.observability import auditor_observer
from airlock.core.errors import ErrorCode
from airlock.core.lifecycle import State
from airlock.core.models import AuditDetails, ChatMessage, Usage
from airlock.core.stage import Incoming, Outcome, Outgoing, StageContext
from airlock.core.telemetry import Telemetry
from airlock.core.telemetry.instruments import StageInstruments
from airlock.core.telemetry.metrics import OVERFLOW, UNKNOWN, BoundedLabel, Metrics, metric_name
from airlock.core.topics import Topics
from airlock.ingest.observability import ingest_observer
from airlock.llm_worker.calls import Answer, AttemptFailure
from airlock.llm_worker.observability import BreakerCollector, traced_call, worker_observer
from airlock.llm_worker.resilience import CircuitBreaker
from airlock.llm_worker.router import Router
from airlock.llm_worker.routing import TargetSpec
from airlock.redactor.observability import redactor_observer

TOPICS = Topics("t.")
RECORD = Incoming(topic="t.x", partition=0, offset=0, value=b"")
PROMPT = "Summarise the complaint of Jane Roe (jane@example.com) about invoice 4411"


def test_names_follow_airlock_service_what_unit() -> None:
    assert metric_name("llm-worker", "cost", "usd") == "airlock_llm_worker_cost_usd"
    assert metric_name("ingest", "stage_latency", "seconds") == "airlock_ingest_stage_latency_seconds"
    with pytest.raises(ValueError, match="not a valid metric name"):
        metric_name("ingest", "bad name")


def test_a_bounded_label_keeps_its_first_values_and_folds_the_rest() -> None:
    tenant = BoundedLabel(2)
    assert [tenant(v) for v in ("a", "b", "c", "a", None, "")] == ["a", "b", OVERFLOW, "a", UNKNOWN, UNKNOWN]


def test_asking_twice_for_a_family_returns_the_same_one() -> None:
    metrics = Metrics("ingest")
    assert metrics.counter("x", "doc", ["a"]) is metrics.counter("x", "doc", ["a"])
    with pytest.raises(ValueError, match="already a Counter"):
        metrics.gauge("x", "doc")
    with pytest.raises(ValueError, match="already registered with labels"):
        metrics.counter("x", "another meaning", ["b"])


def transition(target: State, **details: Any) -> Any:
    context = StageContext("s", TOPICS)
    sources = {
        State.REJECTED: State.RECEIVED,
        State.ACCEPTED: State.RECEIVED,
        State.REDACTED: State.ACCEPTED,
        State.BLOCKED: State.ACCEPTED,
        State.COMPLETED: State.REDACTED,
        State.FAILED: State.REDACTED,
        State.DELIVERED: State.COMPLETED,
    }
    event = context.transition("a-1", sources[target], target, request_id="r-1", details=AuditDetails(**details))
    return event.model_copy(update={"tenant": "acme"})


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_ingest_counts_refusals_by_code_and_authentication() -> None:
    metrics = Metrics("ingest")
    observe = ingest_observer(metrics)
    rejected = transition(State.REJECTED, error_code="rate_limited")
    observe(RECORD, Outcome(events=[rejected.model_copy(update={"client_id": "billing"})]))
    observe(RECORD, Outcome(events=[transition(State.REJECTED, error_code="signature_invalid")]))
    observe(RECORD, Outcome(events=[transition(State.ACCEPTED)]))
    context = StageContext("ingest", Topics("t"))
    for n in range(5):  # unauthenticated records: a dead letter each, counted as they commit
        dead = context.dead_letter(RECORD, ErrorCode.SIGNATURE_MISSING, "no signature", f"a-{n}")
        observe(RECORD, Outcome(records=[dead]))
    # Their window's notice, later, counts nothing again.
    noise = context.notice(
        "a-0", "unauthenticated", request_id=None, details=AuditDetails(extra={"count": 5, "code.signature_missing": 5})
    )
    observe(RECORD, Outcome(events=[noise]))
    assert value(metrics, "airlock_ingest_refusals_total", code="rate_limited", authenticated="true") == 1
    assert value(metrics, "airlock_ingest_refusals_total", code="signature_invalid", authenticated="false") == 1
    assert value(metrics, "airlock_ingest_refusals_total", code="signature_missing", authenticated="false") == 5
    assert value(metrics, "airlock_ingest_accepted_total", tenant="acme") == 1


def test_redactor_counts_entities_placeholders_and_pii_in_answers() -> None:
    metrics = Metrics("redactor")
    observe = redactor_observer(metrics)
    observe(RECORD, Outcome(events=[transition(State.REDACTED, entity_counts={"PERSON": 2, "EMAIL_ADDRESS": 1})]))
    observe(RECORD, Outcome(events=[transition(State.BLOCKED, entity_counts={"US_SSN": 1})]))
    extra = {"placeholders_sent": 3, "placeholders_altered": 1, "output_pii_found": 1, "output_pii.PHONE_NUMBER": 1}
    observe(RECORD, Outcome(events=[transition(State.DELIVERED, extra=extra)]))
    assert value(metrics, "airlock_redactor_entities_masked_total", entity_type="PERSON") == 2
    assert value(metrics, "airlock_redactor_entities_blocked_total", entity_type="US_SSN") == 1
    assert value(metrics, "airlock_redactor_placeholders_total", outcome="altered") == 1
    assert value(metrics, "airlock_redactor_placeholders_total", outcome="sent") == 3
    assert value(metrics, "airlock_redactor_output_pii_total", entity_type="PHONE_NUMBER") == 1


def test_llm_worker_counts_tokens_cost_cache_hits_retries_and_calls_per_target() -> None:
    telemetry = Telemetry("llm-worker", max_label_values=2)
    StageInstruments(
        telemetry, topics=TOPICS, group_id="airlock-llm-worker"
    )  # the runtime's families, as in the service
    metrics = telemetry.metrics
    observe = worker_observer(metrics)
    completed = transition(
        State.COMPLETED,
        model="gpt-4o-mini-2024",
        usage=Usage(input_tokens=12, output_tokens=30),
        cost_usd=0.25,
        attempts=3,
        extra={"logical_model": "gpt-4o-mini", "trail": "primary:429,primary:500,backup:ok"},
    )
    cached = transition(State.COMPLETED, usage=Usage(), cached=True, attempts=0, extra={"logical_model": "gpt-4o"})
    failed = transition(State.FAILED, model="gpt-4o", attempts=2, extra={"trail": "primary:open,backup:timeout"})
    for event in (completed, cached, failed):
        observe(RECORD, Outcome(events=[event]))
    assert value(metrics, "airlock_llm_worker_tokens_total", tenant="acme", model="gpt-4o-mini", type="input") == 12
    assert value(metrics, "airlock_llm_worker_tokens_total", tenant="acme", model="gpt-4o-mini", type="output") == 30
    assert value(metrics, "airlock_llm_worker_cost_usd_total", tenant="acme", model="gpt-4o-mini") == 0.25
    assert value(metrics, "airlock_llm_worker_cache_hits_total", tenant="acme") == 1
    assert value(metrics, "airlock_llm_worker_model_retries_total", model="gpt-4o-mini") == 2
    assert value(metrics, "airlock_llm_worker_model_retries_total", model="gpt-4o") == 1
    assert value(metrics, "airlock_llm_worker_target_attempts_total", target="primary", outcome="429") == 1
    assert value(metrics, "airlock_llm_worker_target_attempts_total", target="primary", outcome="open") == 1
    assert value(metrics, "airlock_llm_worker_target_attempts_total", target="backup", outcome="ok") == 1
    # Labels stay bounded: a third model folds into "other".
    observe(RECORD, Outcome(events=[transition(State.FAILED, model="invented-model", attempts=2)]))
    assert value(metrics, "airlock_llm_worker_model_retries_total", model="other") == 1


def test_invented_tenants_cannot_explode_the_series_and_nothing_is_lost() -> None:
    metrics = Metrics("llm-worker", max_label_values=5)
    observe = worker_observer(metrics)
    for n in range(300):
        event = transition(State.COMPLETED, model="m", usage=Usage(input_tokens=1, output_tokens=2), cost_usd=0.5)
        observe(RECORD, Outcome(events=[event.model_copy(update={"tenant": f"tenant-{n}"})]))
    series = [
        sample
        for family in metrics.registry.collect()
        if family.name == "airlock_llm_worker_tokens"
        for sample in family.samples
        if sample.name.endswith("_total")
    ]
    tenants = {sample.labels["tenant"] for sample in series}
    assert tenants == {f"tenant-{n}" for n in range(5)} | {OVERFLOW}
    assert len(series) == 6 * 2  # input and output per tenant label
    assert sum(s.value for s in series if s.labels["type"] == "input") == 300
    assert value(metrics, "airlock_llm_worker_cost_usd_total", tenant=OVERFLOW, model="m") == 0.5 * 295


def test_auditor_counts_sealed_records_and_checkpoints() -> None:
    metrics = Metrics("auditor")
    observe = auditor_observer(metrics, TOPICS)
    observe(RECORD, Outcome(records=[Outgoing(TOPICS.ledger, b""), Outgoing(TOPICS.checkpoints, b"")]))
    observe(RECORD, Outcome(records=[Outgoing(TOPICS.ledger, b"")]))
    assert value(metrics, "airlock_auditor_sealed_total") == 2
    assert value(metrics, "airlock_auditor_checkpoints_total") == 1


def test_breaker_states_are_read_when_scraped() -> None:
    router = Router(lambda *a, **k: None, pacer=None, breaker=lambda: CircuitBreaker(threshold=1))  # type: ignore[arg-type]
    metrics = Metrics("llm-worker")
    metrics.register(BreakerCollector(router, ["primary", "backup"]))
    router.breaker("primary").record_failure(now=1.0)
    assert value(metrics, "airlock_llm_worker_breaker_state", target="primary", state="open") == 1
    assert value(metrics, "airlock_llm_worker_breaker_state", target="primary", state="closed") == 0
    assert value(metrics, "airlock_llm_worker_breaker_state", target="backup", state="closed") == 1


def tracer() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider.get_tracer("test"), exporter


TARGET = TargetSpec(
    name="primary", provider="azure", deployment="gpt4o-eu", endpoint="https://eu.example.com", api_version="2024-10-21"
)


async def test_a_model_call_is_a_genai_client_span_without_prompt_or_answer() -> None:
    tracer_, exporter = tracer()

    async def call(
        target: TargetSpec, *, messages: Sequence[ChatMessage], params: Mapping[str, Any], timeout_s: float
    ) -> Answer:
        return Answer(
            "You said: " + messages[0].content,
            "stop",
            "gpt-4o-2024-08-06",
            Usage(input_tokens=21, output_tokens=9),
            12.0,
        )

    traced = traced_call(call, tracer_)
    answer = await traced(
        TARGET,
        messages=[ChatMessage(role="user", content=PROMPT)],
        params={"max_tokens": 64, "temperature": 0.2},
        timeout_s=5,
    )

    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "chat gpt4o-eu" and span.kind is SpanKind.CLIENT
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert attributes["gen_ai.request.model"] == "gpt4o-eu"
    assert attributes["gen_ai.request.max_tokens"] == 64 and attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (21, 9)
    assert (attributes["server.address"], attributes["server.port"]) == ("eu.example.com", 443)
    flat = repr(attributes) + span.name + repr([e.attributes for e in span.events])
    assert "Jane" not in flat and "jane@" not in flat and answer.content not in flat


async def test_a_failed_call_span_names_the_failure_kind_only() -> None:
    tracer_, exporter = tracer()

    async def call(target: TargetSpec, **_: Any) -> Answer:
        raise AttemptFailure("rate_limited", f"429 for prompt {PROMPT}", status=429)

    with pytest.raises(AttemptFailure):
        await traced_call(call, tracer_)(TARGET, messages=[], params={}, timeout_s=1)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and (span.attributes or {})["error.type"] == "429"
    assert span.events == () and "Jane" not in str(span.status.description)
