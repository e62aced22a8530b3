"""Trace context in Kafka headers, and the spans Airlock records.

A request's trace starts at the caller's publish (the SDK writes a W3C ``traceparent``
header) and follows the request through every stage: the stage runtime opens one span per
input record as a child of the record's ``traceparent`` and hands the stage a copy of the
record whose ``traceparent`` names that span, so every record the stage derives from it
(:meth:`~airlock.core.stage.StageContext.forward`, ``reply``, the audit events) continues
the same trace one hop further.

Span attributes are ids, counts, model names and error codes — never prompt or answer
text: :func:`clean_attributes` drops any string longer than :data:`MAX_ATTRIBUTE_CHARS`
as a last line of defence, and exceptions are recorded by type only (a message may quote
input).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from airlock.core import headers as h
from airlock.core import logs
from airlock.core.stage import Header, Incoming, airlock_id_for

#: Longest string a span attribute may hold: ids, model names and codes fit, text does not.
MAX_ATTRIBUTE_CHARS = 128

# OpenTelemetry semantic conventions (GenAI, messaging, errors) used by Airlock's spans.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_CONSUMER_GROUP = "messaging.consumer.group.name"
MESSAGING_PARTITION = "messaging.destination.partition.id"
MESSAGING_OFFSET = "messaging.kafka.offset"

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_NO_TRACE = "0" * 32


def trace_id_of(headers: Iterable[Header]) -> str | None:
    """The trace id (32 hex digits) of a record's ``traceparent`` header, if it has a valid one."""
    value = None
    for key, raw in headers:
        if key == h.TRACEPARENT:
            value = raw
    if value is None:
        return None
    match = _TRACEPARENT.match(value.decode("ascii", "replace").strip())
    if match is None or match.group(1) == _NO_TRACE:
        return None
    return match.group(1)


def context_of(headers: Iterable[Header]) -> Context:
    """The OpenTelemetry context carried by a record's trace headers (empty without them).

    Parsed here rather than by the W3C propagator (same rules, a fraction of the cost: this
    runs for every record of every stage).
    """
    parent = state = None
    for key, value in headers:
        if key == h.TRACEPARENT:
            parent = value
        elif key == h.TRACESTATE:
            state = value
    if parent is None:
        return Context()
    match = _TRACEPARENT.match(parent.decode("ascii", "replace").strip())
    if match is None or match.group(1) == _NO_TRACE or match.group(2) == "0" * 16:
        return Context()
    span_context = SpanContext(
        trace_id=int(match.group(1), 16),
        span_id=int(match.group(2), 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match.group(3), 16) & TraceFlags.SAMPLED),
        trace_state=TraceState.from_header([state.decode("ascii", "replace")]) if state else None,
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def trace_headers(span: Span | None = None) -> tuple[Header, ...]:
    """``traceparent`` (and ``tracestate``) naming ``span``, or the current span; empty when none is valid."""
    context = trace.set_span_in_context(span) if span is not None else None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return tuple((key, value.encode()) for key, value in carrier.items())


def with_trace_headers(headers: Iterable[Header], trace: Iterable[Header]) -> tuple[Header, ...]:
    """``headers`` with their trace context replaced by ``trace`` (kept when ``trace`` is empty)."""
    replacement = tuple(trace)
    if not replacement:
        return tuple(headers)
    return (*((k, v) for k, v in headers if k not in h.TRACE_HEADERS), *replacement)


def record_fields(incoming: Incoming) -> dict[str, str]:
    """The ids of a record for log lines: ``trace_id``, ``request_id``, ``airlock_id``."""
    fields = {
        "airlock_id": incoming.safe_header(h.AIRLOCK_ID) or airlock_id_for(incoming),
        "request_id": incoming.safe_header(h.REQUEST_ID),
        "trace_id": trace_id_of(incoming.headers),
    }
    return {key: value for key, value in fields.items() if value}


@contextmanager
def record_scope(incoming: Incoming, stage: str | None = None) -> Iterator[None]:
    """Work on one record: its span is the current span and its ids are on every log line.

    Use it around per-record work that logs or opens spans (a model call), inside the task
    or thread doing that work: the context belongs to the task or thread that enters it.
    """
    token = otel_context.attach(context_of(incoming.headers))
    try:
        with logs.bind(stage=stage, **record_fields(incoming)):
            yield
    finally:
        otel_context.detach(token)


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes fit for a span: ``None`` dropped, and strings (alone or in lists) capped.

    A string longer than :data:`MAX_ATTRIBUTE_CHARS` is not an id or a label; it is dropped
    rather than truncated, since a prefix of text is still text.
    """
    cleaned: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_CHARS:
            continue
        if isinstance(value, list | tuple):
            value = [v for v in value if not (isinstance(v, str) and len(v) > MAX_ATTRIBUTE_CHARS)]
        cleaned[key] = value
    return cleaned


def child_span(
    tracer: Tracer,
    incoming: Incoming,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> Span:
    """Start a span under ``incoming``'s trace context (end it yourself, or use ``with``).

    Usable from any thread: the parent comes from the record's headers, not from context
    variables.
    """
    return tracer.start_span(
        name,
        context=context_of(incoming.headers),
        kind=kind,
        attributes=clean_attributes(attributes),
        start_time=start_time,
        record_exception=False,
        set_status_on_exception=False,
    )


def fail_span(span: Span, error: BaseException | str) -> None:
    """Mark ``span`` failed, naming the error's type (never its message: it may quote input)."""
    kind = error if isinstance(error, str) else type(error).__name__
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, kind))
