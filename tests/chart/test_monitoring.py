"""Monitoring resources: scraping, alerts and the dashboard match the metrics the code exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from airlock.auditor.observability import auditor_observer
from airlock.core.anomaly import AnomalyKind, AnomalySettings
from airlock.core.runtime import StageRuntime
from airlock.core.settings import KafkaSettings, StageSettings
from airlock.core.stage import RecordProcessor, StageContext
from airlock.core.telemetry import Telemetry
from airlock.core.topics import Topics
from airlock.devstack.mesh import service_inputs
from airlock.ingest.observability import clients_file_gauge, ingest_observer
from airlock.llm_worker.observability import BreakerCollector, worker_observer
from airlock.llm_worker.router import Router
from airlock.redactor.observability import redactor_observer
from tests.chart.rendering import CHART, SERVICES, by_component, env_of, of_kind, render, scenario_values

MONITORING = scenario_values(CHART / "ci" / "monitoring-values.yaml")
RATE_KINDS = {"request_surge", "token_surge", "blocked_spike", "failed_spike", "rejected_spike"}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(MONITORING)


def exposed_metrics() -> set[str]:
    """Every metric name the four services expose, from the code that registers them."""
    topics = Topics()
    names: set[str] = set()

    async def unused(*_: Any) -> None:
        raise AssertionError("never called")

    for service in SERVICES:
        telemetry = Telemetry(service)
        StageRuntime(
            service,
            {topic: RecordProcessor(unused, unused) for topic in service_inputs(topics)[service]},
            context=StageContext(service, topics),
            kafka=KafkaSettings(),
            settings=StageSettings(),
            telemetry=telemetry,
        )
        metrics = telemetry.metrics
        if service == "ingest":
            ingest_observer(metrics)
            clients_file_gauge(metrics, lambda: False)
        elif service == "redactor":
            redactor_observer(metrics)
        elif service == "llm-worker":
            worker_observer(metrics)
            metrics.register(BreakerCollector(Router(unused, pacer=None), ["primary"]))  # type: ignore[arg-type]
        else:
            auditor_observer(metrics, topics)
        names |= metrics.exposed()
    return names


def queried_metrics(expression: str) -> tuple[set[str], set[str]]:
    """(metric names, ``__name__`` regexes) an expression reads."""
    patterns = set(re.findall(r'__name__=~"([^"]+)"', expression))
    literal = re.sub(r'__name__=~"[^"]+"', "", expression)
    return set(re.findall(r"\bairlock_[a-z0-9_]+\b", literal)), patterns


def test_monitoring_is_off_by_default() -> None:
    objects = render(scenario_values(CHART / "ci" / "defaults-values.yaml"))
    assert of_kind(objects, "ServiceMonitor") == [] and of_kind(objects, "PrometheusRule") == []
    assert not [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]


def test_each_service_is_scraped_on_its_health_and_metrics_port(objects: list[dict[str, Any]]) -> None:
    monitors = by_component(objects, "ServiceMonitor")
    services = by_component(objects, "Service")
    assert set(monitors) == set(SERVICES)
    for component, monitor in monitors.items():
        service = services[component]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items(), component
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_every_anomaly_kind_alerts_on_the_metric_of_the_service_that_detects_it(objects: list[dict[str, Any]]) -> None:
    (rule,) = of_kind(objects, "PrometheusRule")
    groups = {group["name"]: group["rules"] for group in rule["spec"]["groups"]}
    alerted: dict[str, str] = {}
    for alert in groups["airlock.anomalies"]:
        (kind,) = re.findall(r'kind="([a-z_]+)"', alert["expr"])
        (service,) = re.findall(r"airlock_([a-z_]+)_anomalies_total", alert["expr"])
        alerted[kind] = service
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        assert "{{ $labels.tenant }}" in alert["annotations"]["summary"]
    assert set(alerted) == {kind.value for kind in AnomalyKind}
    assert {kind for kind, service in alerted.items() if service == "auditor"} == RATE_KINDS
    assert {kind for kind, service in alerted.items() if service == "redactor"} == {
        kind.value for kind in AnomalyKind
    } - RATE_KINDS
    stage_alerts = {(a["alert"], a["labels"]["service"]) for a in groups["airlock.stages"]}
    for service in SERVICES:
        for name in ("AirlockStageDown", "AirlockConsumerLagHigh", "AirlockStageLatencyHigh", "AirlockStageFailures"):
            assert (name, service) in stage_alerts
    assert ("AirlockCircuitOpen", "llm-worker") in stage_alerts


SERVICE_PREFIX = re.compile(r"airlock_(ingest|redactor|llm_worker|auditor)_")


def test_every_metric_the_alerts_and_the_dashboard_query_is_one_the_code_exposes(
    objects: list[dict[str, Any]],
) -> None:
    exposed = exposed_metrics()
    assert "airlock_llm_worker_tokens_total" in exposed and "airlock_ingest_stage_latency_seconds_bucket" in exposed
    (rule,) = of_kind(objects, "PrometheusRule")
    expressions = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    dashboard = json.loads(
        next(c for c in of_kind(objects, "ConfigMap") if "airlock.json" in c["data"])["data"]["airlock.json"]
    )
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    expressions += [target["expr"] for panel in panels for target in panel["targets"]]
    assert len(expressions) > 40
    for expression in expressions:
        names, patterns = queried_metrics(expression)
        assert names or patterns or expression.startswith("up{"), expression  # up: Prometheus' own
        assert names <= exposed, f"{sorted(names - exposed)} in {expression}"
        for pattern in patterns:
            # A pattern stands for one metric across services; one that also catches another
            # family (retries vs model_retries) would sum samples with other labels and meaning.
            meanings = {SERVICE_PREFIX.sub("", name, count=1) for name in exposed if re.fullmatch(pattern, name)}
            assert len(meanings) == 1, f"{pattern} matches {sorted(meanings) or 'no metric'}"


def test_the_dashboard_shows_stages_and_tenants(objects: list[dict[str, Any]]) -> None:
    (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == "rel-airlock-dashboard"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["airlock.json"])
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for wanted in (
        "Throughput per stage",
        "Latency per stage",
        "Consumer lag per partition",
        "Tokens per tenant",
        "Cost per tenant",
    ):
        assert wanted in titles
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_anomalies_block_mirrors_the_anomaly_settings_and_reaches_every_service(
    objects: list[dict[str, Any]],
) -> None:
    defaults = scenario_values(CHART / "values.yaml")["anomalies"]

    def snake(key: str) -> str:
        return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()

    assert {snake(key) for key in defaults} == set(AnomalySettings.model_fields)
    for key, value in defaults.items():
        assert AnomalySettings.model_fields[snake(key)].default == value, key
    for component, deployment in by_component(objects, "Deployment").items():
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["AIRLOCK_ANOMALY_WINDOW_S"] == "120" and env["AIRLOCK_ANOMALY_MIN_TOKENS"] == "50000", component
        assert env["AIRLOCK_TELEMETRY_MAX_LABEL_VALUES"] == "200"
        loaded = AnomalySettings(
            **{
                k.removeprefix("AIRLOCK_ANOMALY_").lower(): v
                for k, v in env.items()
                if k.startswith("AIRLOCK_ANOMALY_")
            }
        )
        assert loaded.window_s == 120 and loaded.prompt_injection is True
