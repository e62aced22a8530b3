"""The redactor's telemetry: redaction and restoration spans, and its own metrics.

Both are built from the outcome's audit event — entity types and counts, the policy,
placeholder statistics — so they hold exactly what the audit log may hold: no prompt, no
answer, no PII value. The spans live under the record's span (``redact`` and ``restore``).
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.trace import NoOpTracer, Tracer

from airlock.core.lifecycle import State
from airlock.core.models import AuditEvent
from airlock.core.stage import Incoming, Outcome
from airlock.core.telemetry.instruments import OutcomeObserver
from airlock.core.telemetry.metrics import Metrics
from airlock.core.telemetry.tracing import GEN_AI_REQUEST_MODEL, child_span, fail_span

#: DELIVERED ``extra`` keys reported on the restore span and counted as placeholder outcomes.
PLACEHOLDER_OUTCOMES = ("sent", "restored", "survived", "missing", "altered", "unknown")


def transition_of(outcome: Outcome) -> AuditEvent | None:
    """The lifecycle event of an outcome (notices aside)."""
    return next((event for event in outcome.events if event.kind == "transition"), None)


def record_span(
    tracer: Tracer,
    incoming: Incoming,
    name: str,
    outcome: Outcome,
    started_ns: int,
    model: str | None,
    *,
    model_key: str = GEN_AI_REQUEST_MODEL,
) -> None:
    """Record the ``redact`` or ``restore`` span of one request, from ``started_ns`` to now.

    Args:
        tracer: The service's tracer.
        incoming: The record (its trace context is the parent).
        name: ``redact`` or ``restore``.
        outcome: The request's outcome; its transition event supplies the attributes.
        started_ns: When the work started (epoch nanoseconds).
        model: The model the prompt is for (redact) or that answered (restore).
        model_key: The GenAI attribute naming ``model``.
    """
    if isinstance(tracer, NoOpTracer):
        return  # tracing off: skip building attributes nobody records
    event = transition_of(outcome)
    attributes: dict[str, Any] = {model_key: model}
    if event is not None:
        details = event.details
        attributes["airlock.state"] = event.to_state.value if event.to_state else None
        attributes["airlock.policy"] = details.policy_version
        counts = details.entity_counts or {}
        attributes["airlock.redaction.entities"] = sum(counts.values())
        for entity, count in counts.items():
            attributes[f"airlock.redaction.entity.{entity}"] = count
        extra = details.extra or {}
        for key in PLACEHOLDER_OUTCOMES:
            value = extra.get(f"placeholders_{key}")
            if isinstance(value, int):
                attributes[f"airlock.placeholders.{key}"] = value
        if isinstance(extra.get("output_pii_found"), int):
            attributes["airlock.output_pii.found"] = extra["output_pii_found"]
    span = child_span(tracer, incoming, name, attributes=attributes, start_time=started_ns)
    if event is not None and event.details.error_code:
        fail_span(span, event.details.error_code)
    span.end(end_time=time.time_ns())


def redactor_observer(metrics: Metrics) -> OutcomeObserver:
    """Counts entities masked and blocked by type, placeholder outcomes, and PII found in answers."""
    masked = metrics.counter(
        "entities_masked", "Entities masked or redacted in prompts, by entity type.", ["entity_type"]
    )
    blocked = metrics.counter(
        "entities_blocked", "Entities that made a policy block a request, by entity type.", ["entity_type"]
    )
    placeholders = metrics.counter(
        "placeholders",
        "Placeholders on the model's round trip: sent, restored, survived, missing, altered, unknown.",
        ["outcome"],
    )
    output_pii = metrics.counter(
        "output_pii", "Personal data found in answers that was not the caller's own, by entity type.", ["entity_type"]
    )

    def observe(record: Incoming, outcome: Outcome) -> None:
        for event in outcome.events:
            details = event.details
            if event.to_state is State.REDACTED:
                for entity, count in (details.entity_counts or {}).items():
                    masked.labels(entity).inc(count)
            elif event.to_state is State.BLOCKED:
                for entity, count in (details.entity_counts or {}).items():
                    blocked.labels(entity).inc(count)
            elif event.to_state is State.DELIVERED:
                extra = details.extra or {}
                for key in PLACEHOLDER_OUTCOMES:
                    value = extra.get(f"placeholders_{key}")
                    if isinstance(value, int) and value:
                        placeholders.labels(key).inc(value)
                for key, value in extra.items():
                    if key.startswith("output_pii.") and isinstance(value, int):
                        output_pii.labels(key.removeprefix("output_pii.")).inc(value)

    return observe
