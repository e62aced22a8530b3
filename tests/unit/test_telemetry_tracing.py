"""Trace context in Kafka headers, tracing set-up from OTEL_*, and the log fields of a record."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from airlock.core import headers as h
from airlock.core import logs
from airlock.core.settings import SettingsError
from airlock.core.stage import Incoming, airlock_id_for
from airlock.core.telemetry import Telemetry, tracer_provider_from_env
from airlock.core.telemetry.tracing import (
    MAX_ATTRIBUTE_CHARS,
    child_span,
    clean_attributes,
    context_of,
    record_fields,
    record_scope,
    trace_headers,
    trace_id_of,
    with_trace_headers,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01".encode()


def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


def record(*headers: tuple[str, bytes]) -> Incoming:
    return Incoming(topic="t.accepted", partition=1, offset=7, value=b"{}", headers=headers)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACEPARENT, TRACE),
        (b"00-" + b"0" * 32 + b"-" + PARENT.encode() + b"-01", None),  # the invalid all-zero trace id
        (b"not a traceparent", None),
        (b"\xff\xfe", None),
    ],
)
def test_trace_id_is_read_from_a_valid_traceparent_only(value: bytes, expected: str | None) -> None:
    assert trace_id_of([(h.TRACEPARENT, value)]) == expected
    assert trace_id_of([]) is None


def test_a_span_started_under_a_record_continues_its_trace_and_its_headers_name_the_span() -> None:
    tracer_provider, exporter = provider()
    tracer = tracer_provider.get_tracer("test")
    incoming = record((h.TRACEPARENT, TRACEPARENT), (h.REQUEST_ID, b"r-1"))

    span = child_span(tracer, incoming, "process t.accepted", attributes={"airlock.request_id": "r-1"})
    headers = trace_headers(span)
    span.end()

    (finished,) = exporter.get_finished_spans()
    assert format_trace_id(finished.context.trace_id) == TRACE
    assert finished.parent is not None and format_span_id(finished.parent.span_id) == PARENT
    replaced = with_trace_headers(incoming.headers, headers)
    assert trace_id_of(replaced) == TRACE
    assert [k for k, _ in replaced].count(h.TRACEPARENT) == 1
    assert format_span_id(finished.context.span_id) in dict(replaced)[h.TRACEPARENT].decode()
    assert dict(replaced)[h.REQUEST_ID] == b"r-1"


def test_without_trace_context_nothing_is_invented() -> None:
    assert trace_headers() == ()
    assert with_trace_headers([(h.REQUEST_ID, b"r")], ()) == ((h.REQUEST_ID, b"r"),)
    assert context_of([]) is not None


def test_long_strings_never_become_span_attributes() -> None:
    text = "Please summarise the attached contract for Jane Roe " * 5
    cleaned = clean_attributes({"ok": "gpt-4o-mini", "text": text, "n": 3, "none": None, "list": ["stop", text]})
    assert cleaned == {"ok": "gpt-4o-mini", "n": 3, "list": ["stop"]}
    assert len(text) > MAX_ATTRIBUTE_CHARS


def test_record_scope_puts_the_records_ids_on_every_log_line_and_makes_its_span_current() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("redactor"))
    logger = logging.getLogger("test.telemetry.scope")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    tracer_provider, exporter = provider()
    incoming = record((h.TRACEPARENT, TRACEPARENT), (h.REQUEST_ID, b"r-9"), (h.AIRLOCK_ID, b"a-9"))
    try:
        with record_scope(incoming, "redact"):
            logger.info("detector slow")
            with tracer_provider.get_tracer("test").start_as_current_span("work"):
                pass
        logger.info("outside")
    finally:
        logger.removeHandler(handler)

    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["trace_id"], inside["request_id"], inside["airlock_id"], inside["stage"]) == (
        TRACE,
        "r-9",
        "a-9",
        "redact",
    )
    assert inside["service"] == "redactor"
    assert "trace_id" not in outside and "request_id" not in outside
    (work,) = exporter.get_finished_spans()
    assert format_trace_id(work.context.trace_id) == TRACE


def test_a_request_records_airlock_id_is_derived_like_ingest_derives_it() -> None:
    incoming = record((h.REQUEST_ID, b"r-1"))
    assert record_fields(incoming) == {"airlock_id": airlock_id_for(incoming), "request_id": "r-1"}


def test_tracing_is_off_without_an_endpoint_or_when_disabled() -> None:
    assert tracer_provider_from_env("ingest", {}) is None
    assert tracer_provider_from_env("ingest", {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert tracer_provider_from_env("ingest", {**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    assert tracer_provider_from_env("ingest", {**endpoint, "OTEL_TRACES_EXPORTER": "none"}) is None
    telemetry = Telemetry("ingest")
    assert telemetry.tracing is False
    with telemetry.tracer.start_as_current_span("noop") as span:
        assert not span.is_recording()


def test_an_endpoint_turns_tracing_on_with_the_service_name() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    tracer_provider = tracer_provider_from_env("llm-worker", env)
    assert tracer_provider is not None
    try:
        assert tracer_provider.resource.attributes["service.name"] == "airlock-llm-worker"
        assert tracer_provider.resource.attributes["service.namespace"] == "airlock"
    finally:
        tracer_provider.shutdown()
    named = tracer_provider_from_env("ingest", {**env, "OTEL_SERVICE_NAME": "edge-ingest"})
    assert named is not None
    try:
        assert named.resource.attributes["service.name"] == "edge-ingest"
    finally:
        named.shutdown()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ],
)
def test_settings_this_process_cannot_honour_fail_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        tracer_provider_from_env("ingest", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", **env})
