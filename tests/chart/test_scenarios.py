"""Every ci/ scenario renders, lints, validates against the Kubernetes schemas and is secure."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from tests.chart.crd_schemas import BY_KIND
from tests.chart.rendering import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    SCENARIOS,
    SERVICES,
    VALUES_KEY,
    by_component,
    env_of,
    of_kind,
    pod_specs,
    render,
    scenario_values,
)

SCENARIO_IDS = [path.name.removesuffix("-values.yaml") for path in SCENARIOS]


@pytest.fixture(scope="module", params=SCENARIOS, ids=SCENARIO_IDS)
def scenario(request: pytest.FixtureRequest) -> tuple[Path, list[dict[str, Any]]]:
    path: Path = request.param
    return path, render(scenario_values(path))


def test_the_scenarios_the_issue_asks_for_exist() -> None:
    assert set(SCENARIO_IDS) >= {"defaults", "keda", "sasl-ssl", "strimzi", "everything-off"}


@pytest.mark.parametrize("path", SCENARIOS, ids=SCENARIO_IDS)
def test_lint_is_clean(path: Path) -> None:
    for kube_version in KUBE_VERSIONS:
        report = helm.lint(
            CHART, scenario_values(path), strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
        )
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], problems


def test_every_manifest_validates_against_the_kubernetes_schemas(scenario) -> None:
    _, objects = scenario
    assert objects
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        custom = BY_KIND.get((obj["apiVersion"], obj["kind"]))
        if custom is not None:
            errors = [e.message for e in jsonschema.Draft7Validator(custom).iter_errors(obj)]
            assert errors == [], f"{name}: {errors}"
            continue
        for kube_version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, kube_version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                pytest.fail(f"{name} against Kubernetes {kube_version}: {path}: {error.message}")


def test_every_object_carries_the_standard_labels_and_the_release_namespace(scenario) -> None:
    _, objects = scenario
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "airlock"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "airlock"
        assert obj["metadata"]["namespace"] == NAMESPACE


def test_every_pod_is_locked_down(scenario) -> None:
    _, objects = scenario
    specs = list(pod_specs(objects))
    assert specs
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert "hostNetwork" not in spec and "hostPID" not in spec, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], name
        containers = spec["containers"] + spec.get("initContainers", [])
        for container in containers:
            where = f"{name} container {container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp", where
            assert container.get("resources", {}).get("limits", {}).get("memory"), where
            # Every mount from a Secret or ConfigMap is read-only.
            for mount in container["volumeMounts"]:
                source = volumes[mount["name"]]
                if "secret" in source or "configMap" in source:
                    assert mount.get("readOnly") is True, f"{where}: {mount}"


def test_service_accounts_do_not_mount_api_tokens(scenario) -> None:
    _, objects = scenario
    for account in of_kind(objects, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]


def test_secrets_are_only_referenced(scenario) -> None:
    _path, objects = scenario
    assert of_kind(objects, "Secret") == [], "the chart must never render a Secret"
    secretish = re.compile(r"(PASSWORD|API_KEY|SECRET|TOKEN)$")
    for name, spec in pod_specs(objects):
        for container in spec["containers"]:
            for variable, value in env_of(container).items():
                if secretish.search(variable):
                    assert isinstance(value, dict) and "secretKeyRef" in value, f"{name}: {variable} is a literal"
    # No ConfigMap holds anything that looks like a credential.
    for config in of_kind(objects, "ConfigMap"):
        text = str(config.get("data", {})).lower()
        assert not re.search(r"(password|api[_-]?key|secret|BEGIN [A-Z ]*PRIVATE KEY)", text), config["metadata"]


def test_probes_use_the_health_routes_and_grace_exceeds_the_drain(scenario) -> None:
    path, objects = scenario
    values = scenario_values(path)
    deployments = by_component(objects, "Deployment")
    assert set(deployments) == set(SERVICES)
    for component, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        prefix = "AIRLOCK_" + component.upper().replace("-", "_")
        grace = float(env_of(container)[f"{prefix}_SHUTDOWN_GRACE_S"])
        assert spec["terminationGracePeriodSeconds"] > grace
        partitions = values.get("topics", {}).get("partitions", 6)
        if "replicas" in deployment["spec"]:
            assert deployment["spec"]["replicas"] <= partitions
        else:
            assert values[VALUES_KEY[component]]["autoscaling"]["enabled"] is True


def test_network_policies_confine_egress(scenario) -> None:
    path, objects = scenario
    values = scenario_values(path)
    policies = by_component(objects, "NetworkPolicy")
    if values.get("networkPolicy", {}).get("enabled", True) is False:
        assert policies == {}
        return
    workload_components = {
        spec_owner["metadata"]["labels"]["app.kubernetes.io/component"]
        for spec_owner in objects
        if spec_owner["kind"] in ("Deployment", "Job", "CronJob")
    }
    assert workload_components <= set(policies), "every workload has its NetworkPolicy"
    otlp = values.get("global", {}).get("otlp", {}).get("endpoint", "")
    otlp_port = int(re.search(r":(\d+)", otlp.split("//", 1)[-1]).group(1)) if otlp else None
    bootstrap = values.get("global", {}).get("kafka", {}).get("bootstrapServers", "kafka:9092")
    kafka_ports = {int(hp.rsplit(":", 1)[1]) for hp in bootstrap.split(",")}
    for component, policy in policies.items():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        egress_ports = {
            (port["port"], port.get("protocol", "TCP")) for rule in spec["egress"] for port in rule.get("ports", [])
        }
        assert all(rule.get("ports") for rule in spec["egress"]), f"{component}: an egress rule without ports"
        allowed = {(53, "UDP"), (53, "TCP")} | {(p, "TCP") for p in kafka_ports}
        if otlp_port:
            allowed.add((otlp_port, "TCP"))
        if component == "llm-worker":
            model_ports = values.get("llmWorker", {}).get("modelEndpoints", {}).get("ports", [443])
            assert {(p, "TCP") for p in model_ports} <= egress_ports, "the llm-worker reaches its model endpoints"
            allowed |= {(p, "TCP") for p in model_ports}
        assert egress_ports <= allowed, f"{component} may reach {egress_ports - allowed}"
        ingress_ports = {port["port"] for rule in spec["ingress"] for port in rule.get("ports", [])}
        assert ingress_ports <= {8080}, component
    # The redactor holds raw PII: nothing but DNS, Kafka and telemetry.
    redactor_ports = {port["port"] for rule in policies["redactor"]["spec"]["egress"] for port in rule["ports"]}
    assert 443 not in redactor_ports


def test_config_files_roll_the_pods_through_checksums(scenario) -> None:
    _, objects = scenario
    config_maps = {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}
    for name, spec in pod_specs(objects):
        if not name.startswith("Deployment/"):
            continue
        deployment = next(o for o in objects if f"{o['kind']}/{o['metadata']['name']}" == name)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        for volume in spec["volumes"]:
            if "configMap" in volume or "secret" in volume:
                if volume["name"] == "kafka-ca":
                    assert "checksum/kafka" in annotations
                    continue
                assert f"checksum/{volume['name']}" in annotations, f"{name}: {volume['name']}"
            if "configMap" in volume and volume["configMap"]["name"].startswith("rel-airlock"):
                assert volume["configMap"]["name"] in config_maps, f"{name} mounts a ConfigMap the chart lacks"
