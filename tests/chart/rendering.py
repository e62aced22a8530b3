"""Render the chart with the real Helm engine (helm-python-sdk bundles Helm's Go SDK) and
pick the rendered manifests apart.

Everything here is offline: rendering and linting never contact a cluster, and the Kubernetes
schemas come with kubernetes-validate.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "airlock"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "rel"
NAMESPACE = "airlock"

# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest
# kubernetes-validate 1.37.0 ships schemas for: every manifest must validate against both.
KUBE_VERSIONS = ("1.29.0", "1.37.0")

SERVICES = ("ingest", "redactor", "llm-worker", "auditor")
VALUES_KEY = {"ingest": "ingest", "redactor": "redactor", "llm-worker": "llmWorker", "auditor": "auditor"}


def scenario_values(path: Path) -> dict[str, Any]:
    """The values of a ci/ scenario file."""
    return yaml.safe_load(path.read_text()) or {}


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two values trees (override wins), like successive ``-f`` files."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def render_files(values: Mapping[str, Any]) -> dict[str, str]:
    """Template path → rendered text (NOTES.txt included), as `helm template` would produce."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt left out)."""
    objects = []
    for path, text in sorted(render_files(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Objects of one kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def by_component(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind keyed by their app.kubernetes.io/component label."""
    return {obj["metadata"]["labels"]["app.kubernetes.io/component"]: obj for obj in of_kind(objects, kind)}


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload: Deployments, Jobs, CronJobs."""
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job"):
            yield name, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's environment: name → value, or the valueFrom mapping."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}
