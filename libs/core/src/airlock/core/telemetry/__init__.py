"""Telemetry of an Airlock process: traces (OpenTelemetry), metrics (Prometheus), health.

:meth:`Telemetry.from_env` is what a service's ``app.py`` builds: tracing is configured by
the standard ``OTEL_*`` variables and is **off** unless an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and
``OTEL_SDK_DISABLED`` is not ``true``; spans then go over OTLP/HTTP (protobuf) in batches
(``OTEL_BSP_*``), sampled by ``OTEL_TRACES_SAMPLER`` (parent-based, always on by default).
Metrics are always collected and served on ``/metrics`` next to ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NoOpTracerProvider, Tracer
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import AirlockSettings, SettingsError, load
from airlock.core.telemetry.metrics import Metrics

__all__ = ["Telemetry", "TelemetrySettings", "tracer_provider_from_env"]


class TelemetrySettings(AirlockSettings):
    """Telemetry knobs of every service (``AIRLOCK_TELEMETRY_*``); tracing itself reads ``OTEL_*``.

    Attributes:
        max_label_values: Distinct tenants (and models) a metric label keeps; further values
            are reported as ``other``, so a client inventing tenants cannot explode the series.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_TELEMETRY_")

    max_label_values: int = Field(default=200, ge=1, le=100_000)


def tracer_provider_from_env(service: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """An OTLP/HTTP tracer provider configured by ``OTEL_*``, or ``None`` when tracing is off.

    Raises:
        SettingsError: An ``OTEL_*`` value this process cannot honour (naming the variable).
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise SettingsError(f"OTEL_TRACES_EXPORTER: only 'otlp' or 'none' is supported, not {exporter!r}")
    endpoint = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if not endpoint:
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).strip()
    if protocol != "http/protobuf":
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported (the OTLP/HTTP exporter), not {protocol!r}"
        )
    # Imported only when used: the exporter pulls in an HTTP client.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME") or f"airlock-{service}", "service.namespace": "airlock"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class Telemetry:
    """A service's tracer and metrics.

    Args:
        service: The service name (metric names, the default ``service.name``).
        tracer_provider: Where spans go; ``None``: tracing off (spans cost nothing).
        registry: The metrics registry (a fresh one by default).
        max_label_values: Bound of the tenant and model labels.
    """

    def __init__(
        self,
        service: str,
        *,
        tracer_provider: ApiTracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        max_label_values: int = 200,
    ) -> None:
        self.service = service
        self.metrics = Metrics(service, registry, max_label_values=max_label_values)
        self._provider = tracer_provider
        self.tracing = tracer_provider is not None
        self.tracer: Tracer = (tracer_provider or NoOpTracerProvider()).get_tracer(f"airlock.{service}")

    @classmethod
    def from_env(cls, service: str) -> Telemetry:
        """What a service runs with: ``OTEL_*`` tracing, process metrics, ``AIRLOCK_TELEMETRY_*``.

        Raises:
            SettingsError: A bad ``AIRLOCK_TELEMETRY_*`` or unsupported ``OTEL_*`` value.
        """
        settings = load(TelemetrySettings)
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        return cls(
            service,
            tracer_provider=tracer_provider_from_env(service),
            registry=registry,
            max_label_values=settings.max_label_values,
        )

    def shutdown(self) -> None:
        """Flush and stop span export (at the end of the process)."""
        shutdown = getattr(self._provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
