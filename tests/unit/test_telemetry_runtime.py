"""The stage runtime's telemetry with stand-in producer and consumer: spans, headers, metrics, health."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from airlock.core import headers as h
from airlock.core.anomaly import Anomaly, AnomalyKind
from airlock.core.errors import ErrorCode, StageError
from airlock.core.lifecycle import State
from airlock.core.models import AuditEvent, ChatMessage, Envelope, LLMRequest
from airlock.core.runtime import StageRuntime
from airlock.core.settings import KafkaSettings, StageSettings
from airlock.core.stage import Incoming, Outcome, Result, StageContext
from airlock.core.telemetry import Telemetry
from airlock.core.telemetry.tracing import trace_id_of
from airlock.core.topics import Topics

TOPICS = Topics("t.")
TP = TopicPartition(TOPICS.accepted, 0)
CONTEXT = StageContext("redactor", TOPICS)
TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        self.offsets: list[int] = []

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def send(self, topic: str, value: bytes, **options: Any) -> asyncio.Future[None]:
        self.sent.append((topic, value, list(options.get("headers") or [])))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)  # aiokafka's send returns the delivery; the runtime awaits it
        return delivered

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self.offsets.extend(offsets.values())

    async def stop(self) -> None:
        return None


class Consumer:
    """Answers what the runtime asks of aiokafka's consumer for assignment, lag and health."""

    def __init__(self, end: int = 0, polled_ms: int | None = None) -> None:
        self.end = end
        self.polled_ms = polled_ms
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self.end

    def highwater(self, tp: TopicPartition) -> int:
        return self.end

    async def committed(self, tp: TopicPartition) -> int | None:
        return None  # nothing committed before the test: the runtime starts where the poll is

    async def position(self, tp: TopicPartition) -> int:
        return 1_000_000  # past every poll the test hands over

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return self.polled_ms

    async def topics(self) -> set[str]:
        return {TP.topic}


class Redacting:
    """Forwards each request (REDACTED), fails ``fail`` ones (BLOCKED), raises once on ``flaky`` ones."""

    def __init__(self, fail: set[int] = frozenset(), flaky: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.fail, self.flaky = set(fail), set(flaky)
        self.seen: list[Incoming] = []

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        results: list[Result] = []
        for incoming in batch:
            self.seen.append(incoming)
            envelope = Envelope.model_validate_json(incoming.value)
            if incoming.offset in self.flaky:
                self.flaky.discard(incoming.offset)
                results.append(RuntimeError("detector hiccup"))
            elif incoming.offset in self.fail:
                error = StageError(ErrorCode.POLICY_BLOCKED, "policy blocks US_SSN")
                results.append(
                    CONTEXT.fail(
                        incoming,
                        error,
                        airlock_id=envelope.airlock_id,
                        source=State.ACCEPTED,
                        target=State.BLOCKED,
                        request=envelope.request,
                    )
                )
            else:
                redacted = envelope.model_copy(update={"state": State.REDACTED})
                event = CONTEXT.transition(
                    envelope.airlock_id, State.ACCEPTED, State.REDACTED, request=envelope.request
                )
                surge = Anomaly(AnomalyKind.REQUEST_SURGE, "acme", {"observed": 40}, window_start=60)
                results.append(
                    Outcome(
                        records=[CONTEXT.forward(TOPICS.redacted, redacted, incoming)],
                        events=[event, surge.notice(CONTEXT)],
                    )
                )
        return results

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        raise AssertionError("not expected")


def accepted(offset: int) -> Incoming:
    now = datetime.now(UTC)
    request = LLMRequest(
        request_id=f"r-{offset}",
        client_id="billing",
        tenant="acme",
        model="gpt-4o-mini",
        messages=[ChatMessage(role="user", content="Jane Roe's contract")],
        reply_to=TOPICS.reply_topic("billing"),
    )
    envelope = Envelope(
        airlock_id=f"a-{offset}",
        state=State.ACCEPTED,
        request=request,
        received_at=now,
        deadline=now + timedelta(seconds=60),
    )
    return Incoming(
        topic=TP.topic,
        partition=TP.partition,
        offset=offset,
        value=envelope.to_bytes(),
        headers=(
            (h.AIRLOCK_ID, envelope.airlock_id.encode()),
            (h.REQUEST_ID, request.request_id.encode()),
            (h.TRACEPARENT, f"00-{TRACE}-{CLIENT_SPAN}-01".encode()),
        ),
        timestamp_ms=int(now.timestamp() * 1000) - 50,
    )


async def run(
    processor: Redacting, records: list[Incoming], *, tracing: bool = True, consumer: Consumer | None = None
) -> tuple[StageRuntime, Producer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry("redactor", tracer_provider=tracer_provider if tracing else None)
    runtime = StageRuntime(
        "redactor",
        {TP.topic: processor},
        context=CONTEXT,
        kafka=KafkaSettings(),
        settings=StageSettings(retry_backoff_ms=0),
        telemetry=telemetry,
    )
    producer = Producer()

    async def start_producer(tp: TopicPartition) -> Any:
        return producer

    runtime._start_producer = start_producer  # type: ignore[method-assign]
    runtime.subscriber.consumer = consumer or Consumer(end=len(records))  # type: ignore[assignment]
    await runtime.assign([TP])
    await runtime._submit(TP, records)
    for _ in range(200):
        if producer.offsets and producer.offsets[-1] == records[-1].offset + 1:
            break
        if runtime.subscriber.consumer.seeks:  # type: ignore[union-attr]
            # A retry rewound the partition: deliver the records again, as the consumer would.
            runtime.subscriber.consumer.seeks.clear()  # type: ignore[union-attr]
            start = producer.offsets[-1] if producer.offsets else records[0].offset
            await runtime._submit(TP, [r for r in records if r.offset >= start])
        await asyncio.sleep(0.01)
    return runtime, producer, exporter


def sample(runtime: StageRuntime, name: str, **labels: str) -> float:
    value = runtime.telemetry.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_each_record_gets_a_span_in_the_callers_trace_and_its_outputs_continue_it() -> None:
    processor = Redacting()
    runtime, producer, exporter = await run(processor, [accepted(0), accepted(1)])
    await runtime.revoke([TP], grace_s=1.0)

    spans = [s for s in exporter.get_finished_spans() if s.name == f"process {TP.topic}"]
    assert len(spans) == 2
    for span in spans:
        assert format_trace_id(span.context.trace_id) == TRACE
        assert span.parent is not None and format_span_id(span.parent.span_id) == CLIENT_SPAN
        assert span.attributes is not None
        assert span.attributes["airlock.state"] == "REDACTED" and span.attributes["airlock.tenant"] == "acme"
        assert span.attributes["messaging.destination.name"] == TP.topic
    # The stage saw the record with a traceparent naming its span; the forward carries it on.
    span_ids = {format_span_id(s.context.span_id) for s in spans}
    forwarded = [(value, headers) for topic, value, headers in producer.sent if topic == TOPICS.redacted]
    assert len(forwarded) == 2
    for _, headers in forwarded:
        parent = dict(headers)[h.TRACEPARENT].decode().split("-")[2]
        assert parent in span_ids
    # Audit events carry ids and the trace, and name the trace in the event itself.
    audited = [(value, dict(headers)) for topic, value, headers in producer.sent if topic == TOPICS.audit]
    transitions = [(AuditEvent.model_validate_json(v), hs) for v, hs in audited if b'"transition"' in v]
    assert len(transitions) == 2
    for event, headers in transitions:
        assert event.trace_id == TRACE
        assert (
            headers[h.AIRLOCK_ID] == event.airlock_id.encode()
            and headers[h.REQUEST_ID] == b"r-" + event.airlock_id[2:].encode()
        )
        assert trace_id_of(headers.items()) == TRACE
    # A notice about a tenant (not this request) does not join the request's trace.
    notices = [(AuditEvent.model_validate_json(v), hs) for v, hs in audited if b'"notice"' in v]
    assert notices and all(e.trace_id is None and h.TRACEPARENT not in hs for e, hs in notices)


async def test_committed_outcomes_move_the_counters_once(caplog: pytest.LogCaptureFixture) -> None:
    processor = Redacting(fail={1})
    with caplog.at_level(logging.WARNING, logger="airlock.telemetry"):
        runtime, _producer, _ = await run(processor, [accepted(0), accepted(1), accepted(2)])
    await runtime.revoke([TP], grace_s=1.0)

    assert sample(runtime, "airlock_redactor_messages_in_total", stage="redact") == 3
    assert sample(runtime, "airlock_redactor_messages_out_total", stage="redact", topic="redacted") == 2
    assert sample(runtime, "airlock_redactor_messages_out_total", stage="redact", topic="reply") == 1
    assert sample(runtime, "airlock_redactor_messages_out_total", stage="redact", topic="dlq") == 1
    assert sample(runtime, "airlock_redactor_messages_out_total", stage="redact", topic="audit") == 5
    assert sample(runtime, "airlock_redactor_transitions_total", stage="redact", to_state="BLOCKED") == 1
    assert sample(runtime, "airlock_redactor_errors_total", stage="redact", code="policy_blocked") == 1
    assert sample(runtime, "airlock_redactor_stage_latency_seconds_count", stage="redact") == 3
    assert sample(runtime, "airlock_redactor_queue_delay_seconds_count", stage="redact") == 3
    assert sample(runtime, "airlock_redactor_commit_seconds_count") >= 1
    # Each anomaly notice: one metric increment and one log line with its facts and ids.
    assert sample(runtime, "airlock_redactor_anomalies_total", kind="request_surge", tenant="acme") == 2
    lines = [r for r in caplog.records if r.getMessage().startswith("anomaly request_surge")]
    assert len(lines) == 2 and all(getattr(r, "anomaly", None) == "request_surge" for r in lines)
    assert all(getattr(r, "stage", None) == "redact" for r in lines)
    assert "observed=40" in lines[0].getMessage()


async def test_a_retried_record_is_counted_and_its_span_failed_then_committed_once() -> None:
    processor = Redacting(flaky={1})
    runtime, producer, exporter = await run(processor, [accepted(0), accepted(1), accepted(2)])
    await runtime.revoke([TP], grace_s=1.0)

    assert producer.offsets[-1] == 3
    assert sample(runtime, "airlock_redactor_retries_total", stage="redact") == 1
    assert sample(runtime, "airlock_redactor_transitions_total", stage="redact", to_state="REDACTED") == 3
    failed = [s for s in exporter.get_finished_spans() if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1 and failed[0].attributes and failed[0].attributes["error.type"] == "RuntimeError"
    assert "hiccup" not in str(failed[0].status.description)  # the type, never the message
    committed = [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("airlock.state")]
    assert len(committed) == 3


async def test_without_tracing_headers_pass_through_untouched_and_metrics_still_count() -> None:
    processor = Redacting()
    records = [accepted(0)]
    runtime, _producer, exporter = await run(processor, records, tracing=False)
    await runtime.revoke([TP], grace_s=1.0)

    assert processor.seen[0].headers == records[0].headers
    assert exporter.get_finished_spans() == ()
    assert sample(runtime, "airlock_redactor_messages_in_total", stage="redact") == 1


async def test_metrics_endpoint_serves_lag_per_partition() -> None:
    processor = Redacting()
    consumer = Consumer(end=5)
    runtime, _, _ = await run(processor, [accepted(0), accepted(1)], consumer=consumer)

    response = await runtime._metrics({})
    text = response.body.decode()
    assert 'airlock_redactor_consumer_lag_messages{partition="0",topic="t.accepted"} 3.0' in text
    assert "airlock_redactor_partitions_assigned 1.0" in text
    assert response.status_code == 200
    await runtime.revoke([TP], grace_s=1.0)


async def test_readiness_names_what_is_missing() -> None:
    runtime, _, _ = await run(Redacting(), [accepted(0)], consumer=Consumer(end=1, polled_ms=None))
    runtime.readiness_check("engines", lambda: "PII detector warming up")

    starting = json.loads((await runtime._readyz({})).body)
    assert starting["ready"] is False and starting["checks"]["runtime"] == "starting"
    assert starting["checks"]["engines"] == "PII detector warming up"
    assert starting["assigned"] == ["t.accepted/0"] and starting["waiting"] is False

    runtime._started = True
    runtime._checks.clear()
    ready = await runtime._readyz({})
    body = json.loads(ready.body)
    assert ready.status_code == 200 and body["ready"] is True and body["checks"]["kafka"] == "ok"
    await runtime.revoke([TP], grace_s=1.0)


async def test_readiness_fails_when_kafka_does_not_answer() -> None:
    class Unreachable(Consumer):
        async def topics(self) -> set[str]:
            await asyncio.sleep(10)
            return set()

    runtime, _, _ = await run(Redacting(), [accepted(0)], consumer=Unreachable(end=1))
    runtime._started = True
    response = await runtime._readyz({})
    body = json.loads(response.body)
    assert response.status_code == 503 and "no metadata from Kafka" in body["checks"]["kafka"]
    await runtime.revoke([TP], grace_s=1.0)
