"""What the stage runtime measures and traces about each record.

The runtime calls :class:`StageInstruments` at four moments of a record's life: received
(span opened, trace headers pointed at it, counted in), committed (span closed with the
outcome's facts, outputs, errors, transitions and latency counted, anomaly notices counted
and logged, the service's observers called), retried and abandoned (span closed as such).
Everything counted at commit is counted once per committed outcome, so a record that is
rewound and processed again is not counted twice.

A service adds its own metrics by observing committed outcomes (:meth:`observe`): the
audit events in them hold every domain fact worth counting (entities masked, tokens,
cost, cache hits, refusal codes), already free of text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from opentelemetry.trace import Span, SpanKind

from airlock.core import headers as h
from airlock.core.models import AuditEvent
from airlock.core.stage import Header, Incoming, Outcome, airlock_id_for
from airlock.core.telemetry import Telemetry
from airlock.core.telemetry.tracing import (
    MESSAGING_CONSUMER_GROUP,
    MESSAGING_DESTINATION,
    MESSAGING_OFFSET,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_PARTITION,
    MESSAGING_SYSTEM,
    child_span,
    fail_span,
    record_fields,
    trace_headers,
    trace_id_of,
    with_trace_headers,
)
from airlock.core.topics import Topics

log = logging.getLogger("airlock.telemetry")

#: The stage each input topic feeds (the redactor runs two): a label and a log field.
STAGE_OF_INPUT = {
    "requests": "ingest",
    "accepted": "redact",
    "redacted": "complete",
    "completions": "restore",
    "audit": "seal",
}

OutcomeObserver = Callable[[Incoming, Outcome], None]
"""Called with each committed outcome and the record it came from (service metrics)."""


@dataclass
class _Open:
    span: Span | None
    received: float
    stage: str


class StageInstruments:
    """A stage's record spans, runtime metrics and outcome observers.

    Args:
        telemetry: The service's tracer and metrics.
        topics: Topic names (to name stages and output topics' roles).
        group_id: The consumer group (a span attribute).
    """

    def __init__(self, telemetry: Telemetry, *, topics: Topics, group_id: str) -> None:
        self.telemetry = telemetry
        self._topics = topics
        self._group_id = group_id
        self._bases = {spec.name: spec.name.removeprefix(topics.prefix) for spec in _all_specs(topics)}
        self._open: dict[tuple[str, int, int], _Open] = {}
        self._roles: dict[str, str] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._observers: list[OutcomeObserver] = []
        metrics = telemetry.metrics
        self.messages_in = metrics.counter("messages_in", "Records taken from the stage's input topics.", ["stage"])
        self.messages_out = metrics.counter(
            "messages_out",
            "Records committed by the stage, by output topic (its name without the prefix; 'reply' "
            "for callers' reply topics; 'audit' for audit events).",
            ["stage", "topic"],
        )
        self.errors = metrics.counter(
            "errors",
            "Requests the stage ended with an error (REJECTED, BLOCKED, FAILED) and unreadable records, by code.",
            ["stage", "code"],
        )
        self.transitions = metrics.counter(
            "transitions", "Lifecycle transitions the stage committed, by target state.", ["stage", "to_state"]
        )
        self.retries = metrics.counter("retries", "Records whose processing failed and will be tried again.", ["stage"])
        self.latency = metrics.histogram(
            "stage_latency", "From a record's receipt by the stage to the commit of its outcome.", ["stage"]
        )
        self.queue_delay = metrics.histogram(
            "queue_delay", "From a record's timestamp (when it was written) to its receipt by the stage.", ["stage"]
        )
        self.commit_latency = metrics.histogram("commit", "Duration of one commit transaction.")
        self.anomalies = metrics.counter(
            "anomalies",
            "Anomaly notices the stage recorded (each also an audit event and a log line).",
            ["kind", "tenant"],
        )
        self.lag = metrics.gauge(
            "consumer_lag",
            "Records of an assigned input partition not yet committed (last stable offset minus committed "
            "offset; a fully consumed partition whose last write was a transaction shows 1, the commit marker).",
            ["topic", "partition"],
            unit="messages",
        )
        self.assigned = metrics.gauge("partitions_assigned", "Input partitions this process owns.")

    # -- wiring -------------------------------------------------------------------------------

    def observe(self, observer: OutcomeObserver) -> None:
        """Call ``observer`` with every committed outcome (after the commit succeeded)."""
        self._observers.append(observer)

    def stage_of(self, topic: str) -> str:
        """The stage a record of input ``topic`` is for (``redact``, ``restore``…)."""
        base = self._bases.get(topic, topic)
        return STAGE_OF_INPUT.get(base, base)

    def log_fields(self, record: Incoming) -> dict[str, str]:
        """``extra`` for a log line about ``record``: its ids, its trace and its stage."""
        return {**record_fields(record), "stage": self.stage_of(record.topic)}

    def role_of(self, topic: str) -> str:
        """A bounded label for an output topic: ``reply`` (any reply topic), its base name, or ``other``."""
        role = self._roles.get(topic)
        if role is None:
            role = "reply" if self._topics.is_reply_topic(topic) else self._bases.get(topic, "other")
            if len(self._roles) < 1024:  # reply topics are many only if callers make them so
                self._roles[topic] = role
        return role

    # -- a record's life ------------------------------------------------------------------------

    def received(self, tp: TopicPartition, records: list[Incoming]) -> list[Incoming]:
        """Count records in and open their spans; returns them with trace headers naming the spans."""
        stage = self.stage_of(tp.topic)
        now, wall = time.perf_counter(), time.time()
        self.messages_in.labels(stage).inc(len(records))
        delay = self.queue_delay.labels(stage)
        tracing = self.telemetry.tracing
        out: list[Incoming] = []
        for record in records:
            if record.timestamp_ms > 0:
                delay.observe(max(0.0, wall - record.timestamp_ms / 1000))
            span = None
            if tracing:
                span = self._open_span(tp, stage, record)
                record = dataclasses.replace(record, headers=with_trace_headers(record.headers, trace_headers(span)))
            key = (record.topic, record.partition, record.offset)
            stale = self._open.pop(key, None)
            if stale is not None and stale.span is not None:
                _end(stale.span, "superseded")  # fetched again after a rewind
            self._open[key] = _Open(span, now, stage)
            out.append(record)
        return out

    def _open_span(self, tp: TopicPartition, stage: str, record: Incoming) -> Span:
        fields = record_fields(record)
        return child_span(
            self.telemetry.tracer,
            record,
            f"process {tp.topic}",
            kind=SpanKind.CONSUMER,
            attributes={
                MESSAGING_SYSTEM: "kafka",
                MESSAGING_DESTINATION: tp.topic,
                MESSAGING_OPERATION_TYPE: "process",
                MESSAGING_CONSUMER_GROUP: self._group_id,
                MESSAGING_PARTITION: str(tp.partition),
                MESSAGING_OFFSET: record.offset,
                "airlock.stage": stage,
                "airlock.id": fields.get("airlock_id"),
                "airlock.request_id": fields.get("request_id"),
            },
        )

    def committed(
        self, tp: TopicPartition, settled: Sequence[tuple[Incoming, Outcome]], next_offset: int, commit_s: float
    ) -> None:
        """The outcomes of ``settled`` are committed: close spans, count, observe."""
        self._committed[tp] = next_offset
        self.commit_latency.observe(commit_s)
        now = time.perf_counter()
        for record, outcome in settled:
            entry = self._open.pop((record.topic, record.partition, record.offset), None)
            stage = entry.stage if entry is not None else self.stage_of(record.topic)
            if entry is not None:
                self.latency.labels(stage).observe(now - entry.received)
            self._count(stage, record, outcome, entry.span if entry is not None else None)
            for observer in self._observers:
                try:
                    observer(record, outcome)
                except Exception as error:  # metrics must never break the pipeline
                    log.warning("outcome observer %s failed: %s", getattr(observer, "__name__", observer), error)

    def _count(self, stage: str, record: Incoming, outcome: Outcome, span: Span | None) -> None:
        roles: dict[str, int] = {}
        for output in outcome.records:
            role = self.role_of(output.topic)
            roles[role] = roles.get(role, 0) + 1
        if outcome.events:
            roles["audit"] = roles.get("audit", 0) + len(outcome.events)
        for role, count in roles.items():
            self.messages_out.labels(stage, role).inc(count)
        error: str | None = None
        facts: dict[str, Any] = {}
        for event in outcome.events:
            code = event.details.error_code
            if event.kind == "transition" and event.to_state is not None:
                self.transitions.labels(stage, event.to_state.value).inc()
                facts["airlock.state"] = event.to_state.value
            if code:
                self.errors.labels(stage, code).inc()
                error = code
            if event.tenant:
                facts["airlock.tenant"] = event.tenant
            if event.client_id:
                facts["airlock.client_id"] = event.client_id
            anomaly = (event.details.extra or {}).get("anomaly")
            if event.kind == "notice" and isinstance(anomaly, str):
                self._anomaly(anomaly, event, record, stage)
        if span is not None:
            for key, value in facts.items():
                if isinstance(value, str) and len(value) <= 128:
                    span.set_attribute(key, value)
            if error is not None:
                fail_span(span, error)
            span.end()

    def _anomaly(self, kind: str, event: AuditEvent, record: Incoming, stage: str) -> None:
        self.anomalies.labels(kind, self.telemetry.metrics.tenant(event.tenant)).inc()
        own = _airlock_id(record) == event.airlock_id
        extra = event.details.extra or {}
        facts = ", ".join(f"{key}={value}" for key, value in sorted(extra.items()) if key != "anomaly")
        log.warning(
            "anomaly %s for tenant %s: %s",
            kind,
            event.tenant or "unknown",
            facts,
            extra={
                "anomaly": kind,
                "stage": stage,
                "tenant": event.tenant,
                "airlock_id": event.airlock_id,
                "request_id": event.request_id,
                "trace_id": event.trace_id or (trace_id_of(record.headers) if own else None),
            },
        )

    def retried(self, tp: TopicPartition, record: Incoming, error: BaseException) -> None:
        """``record`` failed and will be tried again: count it, close its span as failed."""
        stage = self.stage_of(tp.topic)
        self.retries.labels(stage).inc()
        entry = self._open.pop((record.topic, record.partition, record.offset), None)
        if entry is not None and entry.span is not None:
            fail_span(entry.span, error)
            entry.span.end()

    def abandoned(self, tp: TopicPartition) -> None:
        """Work on ``tp`` not committed was dropped (rewind, revocation): close its spans."""
        for key in [key for key in self._open if key[0] == tp.topic and key[1] == tp.partition]:
            entry = self._open.pop(key)
            if entry.span is not None:
                _end(entry.span, "uncommitted")

    def released(self, tp: TopicPartition) -> None:
        """``tp`` is no longer ours."""
        self.abandoned(tp)
        self._committed.pop(tp, None)

    # -- audit records --------------------------------------------------------------------------

    def audit_record(self, record: Incoming, event: AuditEvent) -> tuple[bytes, list[Header]]:
        """An audit event's value and headers: ids, and the trace of the record it is about.

        Events about the record's own request continue its trace (and name it in
        ``trace_id``); a notice about something else (a tenant's rate) does not.
        """
        headers: list[Header] = [(h.AIRLOCK_ID, event.airlock_id.encode())]
        if event.request_id:
            headers.append((h.REQUEST_ID, event.request_id.encode()))
        trace = [(k, v) for k, v in record.headers if k in h.TRACE_HEADERS]
        if not trace or _airlock_id(record) != event.airlock_id:
            return event.to_bytes(), headers
        if self.telemetry.tracing and event.trace_id is None:
            # Only when this service traces: the copy costs more than the rest of this method.
            trace_id = trace_id_of(trace)
            if trace_id is not None:
                event = event.model_copy(update={"trace_id": trace_id})
        return event.to_bytes(), headers + trace

    # -- scrape time ----------------------------------------------------------------------------

    async def refresh(self, consumer: Any, assigned: Sequence[TopicPartition]) -> None:
        """Update the gauges read at scrape time: lag per assigned partition, partitions owned."""
        self.assigned.set(len(assigned))
        values: dict[TopicPartition, int] = {}
        for tp in assigned:
            try:
                end = consumer.last_stable_offset(tp)
                if end is None:
                    end = consumer.highwater(tp)
            except (AssertionError, AttributeError, KeyError):
                continue  # revoked meanwhile
            if end is None:
                continue  # not fetched yet: unknown
            committed = self._committed.get(tp)
            if committed is None:
                try:
                    committed = await asyncio.wait_for(consumer.committed(tp), 2.0)
                except Exception as error:  # unknown for now; the next scrape asks again
                    log.debug("committed offset of %s unknown: %s", tp, type(error).__name__)
                    continue
                if committed is None:
                    continue
                self._committed.setdefault(tp, committed)
            values[tp] = max(0, end - committed)
        self.lag.clear()
        for tp, lag in values.items():
            self.lag.labels(tp.topic, str(tp.partition)).set(lag)


def _airlock_id(record: Incoming) -> str:
    return record.safe_header(h.AIRLOCK_ID) or airlock_id_for(record)


def _end(span: Span, how: str) -> None:
    span.set_attribute("airlock.outcome", how)
    span.end()


def _all_specs(topics: Topics) -> list[Any]:
    from airlock.core.settings import TopicSettings

    return topics.specs(TopicSettings())
