"""The llm-worker's telemetry: a GenAI span per model call, and its own metrics.

Each call attempt is a span following the OpenTelemetry GenAI conventions (``chat
<model>``, kind client, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``…) under the
record's span; messages and answers are never attributes. Tokens, cost, cache hits,
retries and calls per target come from the committed audit events (counted once per
committed request); breaker states are read from the router when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, Tracer
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from airlock.core.lifecycle import State
from airlock.core.models import ChatMessage
from airlock.core.stage import Incoming, Outcome
from airlock.core.telemetry.instruments import OutcomeObserver
from airlock.core.telemetry.metrics import Metrics, metric_name
from airlock.core.telemetry.tracing import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    SERVER_ADDRESS,
    SERVER_PORT,
    clean_attributes,
    fail_span,
)
from airlock.llm_worker.calls import Answer, AttemptFailure
from airlock.llm_worker.resilience import BreakerState
from airlock.llm_worker.router import Call, Router
from airlock.llm_worker.routing import TargetSpec

#: ``gen_ai.provider.name`` of each provider kind (an OpenAI-compatible server speaks OpenAI).
_PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "openai-compatible": "openai"}
_DEFAULT_ENDPOINT = "https://api.openai.com/v1"


def traced_call(call: Call, tracer: Tracer) -> Call:
    """``call`` with a GenAI client span around each attempt (no prompt or answer text)."""

    async def traced(
        target: TargetSpec, *, messages: Sequence[ChatMessage], params: Mapping[str, Any], timeout_s: float
    ) -> Answer:
        with tracer.start_as_current_span(
            f"chat {target.served_model}",
            kind=SpanKind.CLIENT,
            attributes=clean_attributes(call_attributes(target, params)),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                answer = await call(target, messages=messages, params=params, timeout_s=timeout_s)
            except AttemptFailure as failure:
                fail_span(span, failure.label)
                raise
            except BaseException as error:
                fail_span(span, error)
                raise
            span.set_attributes(
                clean_attributes(
                    {
                        GEN_AI_RESPONSE_MODEL: answer.model,
                        GEN_AI_RESPONSE_FINISH_REASONS: [answer.finish_reason],
                        GEN_AI_USAGE_INPUT_TOKENS: answer.usage.input_tokens,
                        GEN_AI_USAGE_OUTPUT_TOKENS: answer.usage.output_tokens,
                    }
                )
            )
            return answer

    return traced


def call_attributes(target: TargetSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The GenAI request attributes of one call (model, provider, server, governed parameters)."""
    endpoint = urlsplit(target.endpoint or _DEFAULT_ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    return {
        GEN_AI_OPERATION_NAME: "chat",
        GEN_AI_PROVIDER_NAME: _PROVIDER_NAMES.get(target.provider, target.provider),
        GEN_AI_REQUEST_MODEL: target.served_model,
        GEN_AI_REQUEST_MAX_TOKENS: params.get("max_tokens"),
        GEN_AI_REQUEST_TEMPERATURE: params.get("temperature"),
        GEN_AI_REQUEST_TOP_P: params.get("top_p"),
        SERVER_ADDRESS: endpoint.hostname,
        SERVER_PORT: port,
        "airlock.target": target.name,
    }


def worker_observer(metrics: Metrics) -> OutcomeObserver:
    """Counts tokens and cost by tenant and model, cache hits, retries, and calls per target."""
    tokens = metrics.counter(
        "tokens", "Tokens used by completed requests, by tenant, logical model and type.", ["tenant", "model", "type"]
    )
    cost = metrics.counter(
        "cost",
        "Cost of completed requests in USD (price table), by tenant and logical model.",
        ["tenant", "model"],
        unit="usd",
    )
    completions = metrics.counter(
        "completions",
        "Completed requests, by tenant, logical model and whether the cache answered.",
        ["tenant", "model", "cached"],
    )
    cache_hits = metrics.counter("cache_hits", "Requests answered from the response cache, by tenant.", ["tenant"])
    retries = metrics.counter(
        "model_retries",
        "Model calls beyond the first for one request (retries and fallbacks), by logical model.",
        ["model"],
    )
    attempts = metrics.counter(
        "target_attempts",
        "Calls and skips per target by outcome: ok, an HTTP status, timeout, connection, malformed "
        "(calls); open, paced (skips).",
        ["target", "outcome"],
    )

    def observe(record: Incoming, outcome: Outcome) -> None:
        for event in outcome.events:
            if event.to_state not in (State.COMPLETED, State.FAILED):
                continue
            details = event.details
            logical = (details.extra or {}).get("logical_model") or details.model
            model = metrics.model(str(logical) if logical else None)
            if details.attempts:
                retries.labels(model).inc(max(0, details.attempts - 1))
            trail = (details.extra or {}).get("trail")
            if isinstance(trail, str):
                for step in trail.split(","):
                    target, _, result = step.rpartition(":")
                    if target:
                        attempts.labels(target, result).inc()
            if event.to_state is not State.COMPLETED:
                continue
            tenant = metrics.tenant(event.tenant)
            completions.labels(tenant, model, "true" if details.cached else "false").inc()
            if details.cached:
                cache_hits.labels(tenant).inc()
            if details.usage is not None:
                tokens.labels(tenant, model, "input").inc(details.usage.input_tokens)
                tokens.labels(tenant, model, "output").inc(details.usage.output_tokens)
            if details.cost_usd:
                cost.labels(tenant, model).inc(details.cost_usd)

    return observe


class BreakerCollector(Collector):
    """``airlock_llm_worker_breaker_state{target, state}``: 1 for each target's current state.

    Args:
        router: Holds the breakers (one per target, created on first use).
        targets: Every target of the routing table (reported closed before first use).
    """

    def __init__(self, router: Router, targets: Sequence[str]) -> None:
        self._router = router
        self._targets = list(targets)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current state of every target's circuit breaker."""
        family = GaugeMetricFamily(
            metric_name("llm-worker", "breaker_state"),
            "Circuit breaker state per target: 1 for the current state (closed, open, half_open), 0 otherwise.",
            labels=["target", "state"],
        )
        for target in sorted(set(self._targets) | set(self._router.breakers)):
            breaker = self._router.breakers.get(target)
            current = breaker.state if breaker is not None else BreakerState.CLOSED
            for state in BreakerState:
                family.add_metric([target, state.value], 1.0 if state is current else 0.0)
        yield family
