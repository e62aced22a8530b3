"""Prometheus metrics: one registry per service, names ``airlock_<service>_<what>_<unit>``.

Label values come from small sets (stages, topics' roles, error codes, entity types, model
names, tenants); ids never become labels. Tenants and models are configured, yet a client
granted every tenant could invent new ones: :class:`BoundedLabel` keeps the first
``limit`` values of such a label and reports the rest as ``other``.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

#: Seconds; from a fast Kafka hop to a slow model call.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Label value for anything beyond a bounded label's limit.
OVERFLOW = "other"
#: Label combinations of one family whose children are remembered (values are bounded anyway).
LABEL_CACHE = 4096
#: Label value when a fact is missing (e.g. a refused request with no readable tenant).
UNKNOWN = "unknown"


def metric_name(service: str, what: str, unit: str | None = None) -> str:
    """``airlock_<service>_<what>[_<unit>]`` (``-`` becomes ``_``); counters get ``_total`` on export.

    Raises:
        ValueError: The name is not a valid Prometheus metric name.
    """
    parts = ["airlock", service.replace("-", "_"), what] + ([unit] if unit else [])
    name = "_".join(parts)
    if not _NAME.match(name):
        raise ValueError(f"not a valid metric name: {name!r}")
    return name


class BoundedLabel:
    """Keeps the values of one label bounded.

    Args:
        limit: Distinct values kept; later new values are reported as ``other``.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        """The label value to use for ``value``."""
        if not value:
            return UNKNOWN
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OVERFLOW


class Metrics:
    """A service's metric families, created once each, in one registry.

    Asking twice for the same family returns the first one, so the runtime and a
    service's own observers can share families without passing them around.

    Args:
        service: The service name in every metric name.
        registry: Where the families live (a fresh one by default).
        max_label_values: Bound of the tenant and model labels.
    """

    def __init__(self, service: str, registry: CollectorRegistry | None = None, *, max_label_values: int = 200) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.tenant = BoundedLabel(max_label_values)
        self.model = BoundedLabel(max_label_values)
        self._families: dict[str, Counter | Gauge | Histogram] = {}
        self._label_names: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def counter(self, what: str, documentation: str, labels: Sequence[str] = (), *, unit: str | None = None) -> Counter:
        """The counter ``airlock_<service>_<what>[_<unit>]_total``."""
        family = self._family(Counter, metric_name(self.service, what, unit), documentation, labels, {})
        assert isinstance(family, Counter)
        return family

    def gauge(self, what: str, documentation: str, labels: Sequence[str] = (), *, unit: str | None = None) -> Gauge:
        """The gauge ``airlock_<service>_<what>[_<unit>]``."""
        family = self._family(Gauge, metric_name(self.service, what, unit), documentation, labels, {})
        assert isinstance(family, Gauge)
        return family

    def histogram(
        self,
        what: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        unit: str = "seconds",
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """The histogram ``airlock_<service>_<what>_<unit>``."""
        family = self._family(
            Histogram, metric_name(self.service, what, unit), documentation, labels, {"buckets": tuple(buckets)}
        )
        assert isinstance(family, Histogram)
        return family

    def _family(
        self,
        kind: type[Counter] | type[Gauge] | type[Histogram],
        name: str,
        documentation: str,
        labels: Sequence[str],
        options: dict[str, object],
    ) -> Counter | Gauge | Histogram:
        with self._lock:
            found = self._families.get(name)
            if found is None:
                found = kind(name, documentation, list(labels), registry=self.registry, **options)  # type: ignore[arg-type]
                if labels and kind is not Gauge:
                    # labels() takes a lock and validates on every call; a counter's children
                    # live as long as it does (gauges may be cleared), so remember them.
                    found.labels = functools.lru_cache(maxsize=LABEL_CACHE)(found.labels)  # type: ignore[method-assign,assignment]
                self._families[name] = found
                self._label_names[name] = tuple(labels)
            elif not isinstance(found, kind):
                raise ValueError(f"{name} is already a {type(found).__name__}")
            elif self._label_names[name] != tuple(labels):
                # Two owners of one name would silently share a family: the second one's
                # samples would land under the first one's labels and meaning.
                raise ValueError(f"{name} is already registered with labels {list(self._label_names[name])}")
            return found

    def register(self, collector: Collector) -> None:
        """Add a collector that reads its values when scraped (breaker states, lag…)."""
        self.registry.register(collector)

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def exposed(self) -> set[str]:
        """Every series name the registry exposes (``_total``, ``_bucket``… included), labels or not."""
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
        names: set[str] = set()
        for family in self.registry.collect():
            names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        return names
