"""Bad values fail before anything reaches a cluster, with a message that names the value."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.chart.rendering import CHART, merged, render, render_files, scenario_values

BASE = scenario_values(CHART / "ci" / "defaults-values.yaml")


def schema_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(merged(BASE, values))
    return str(caught.value)


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmRenderError) as caught:
        render(merged(BASE, values))
    return str(caught.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # A typo'd key, at the top, in a service block, and deep inside one.
        ({"ingres": {"replicas": 2}}, "at '': additional properties 'ingres' not allowed"),
        ({"ingest": {"replica": 2}}, "at '/ingest': additional properties 'replica' not allowed"),
        (
            {"llmWorker": {"autoscaling": {"maxReplica": 4}}},
            "at '/llmWorker/autoscaling': additional properties 'maxReplica' not allowed",
        ),
        ({"global": {"kafka": {"bootstrap": "x:1"}}}, "at '/global/kafka': additional properties 'bootstrap'"),
        # Wrong types.
        ({"ingest": {"replicas": "2"}}, "at '/ingest/replicas': got string, want integer"),
        ({"keda": {"enabled": "yes"}}, "at '/keda/enabled': got string, want boolean"),
        ({"topics": {"partitions": 0}}, "at '/topics/partitions'"),
        # Values outside their set.
        (
            {"global": {"kafka": {"securityProtocol": "TLS"}}},
            "at '/global/kafka/securityProtocol': value must be one of",
        ),
        ({"global": {"kafka": {"sasl": {"mechanism": "SCRAM"}}}}, "at '/global/kafka/sasl/mechanism'"),
        ({"global": {"kafka": {"bootstrapServers": "kafka"}}}, "at '/global/kafka/bootstrapServers'"),
        ({"redactor": {"image": {"digest": "latest"}}}, "at '/redactor/image/digest'"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(values: dict[str, Any], expected: str) -> None:
    message = schema_error(values)
    assert expected in message, message


def test_schema_accepts_every_default() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(BASE)
        defaults = chart.values
    # Every block of the four services has the same keys (plus its own files).
    common = set(defaults["ingest"]) - {"clients"}
    assert "replicas" in common and "autoscaling" in common and "terminationGracePeriodSeconds" in common
    for service in ("redactor", "llmWorker", "auditor"):
        assert common <= set(defaults[service]), service


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"llmWorker": {"autoscaling": {"enabled": True, "maxReplicas": 12}}},
            "llmWorker.autoscaling.maxReplicas (12) exceeds topics.partitions (6)",
        ),
        ({"redactor": {"replicas": 7}}, "redactor.replicas (7) exceeds topics.partitions (6)"),
        (
            {"ingest": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}},
            "ingest.autoscaling.minReplicas (5) exceeds maxReplicas (3)",
        ),
        (
            {"llmWorker": {"terminationGracePeriodSeconds": 60, "shutdownGraceSeconds": 60}},
            "llmWorker.terminationGracePeriodSeconds (60) must exceed llmWorker.shutdownGraceSeconds (60)",
        ),
        (
            {"global": {"kafka": {"sasl": {"credentials": {"redactor": ""}}}}},
            "global.kafka.sasl.credentials.redactor is required with securityProtocol SASL_SSL",
        ),
        (
            {"global": {"kafka": {"sasl": {"credentials": {"audit-replay": ""}}}}},
            "global.kafka.sasl.credentials.audit-replay is required",
        ),
        ({"global": {"kafka": {"securityProtocol": "PLAINTEXT"}}}, "securityProtocol PLAINTEXT lets any client"),
        (
            {"global": {"kafka": {"securityProtocol": "PLAINTEXT", "allowInsecure": True, "tls": {"caSecret": "ca"}}}},
            "global.kafka.tls.caSecret is set but securityProtocol is PLAINTEXT",
        ),
        ({"llmWorker": {"meshKeys": {"existingSecret": ""}}}, "llmWorker.meshKeys.existingSecret is required"),
        ({"global": {"mesh": {"trust": {"existingConfigMap": ""}}}}, "global.mesh.trust.existingConfigMap is required"),
        ({"redactor": {"vaultKeys": {"existingSecret": ""}}}, "redactor.vaultKeys.existingSecret is required"),
        ({"ingest": {"clients": {"existingSecret": ""}}}, "ingest.clients.existingSecret is required"),
        ({"auditor": {"signingKeys": {"existingSecret": ""}}}, "auditor.signingKeys.existingSecret is required"),
    ],
)
def test_values_that_contradict_each_other_fail_the_render(values: dict[str, Any], expected: str) -> None:
    message = render_error(values)
    assert expected in message, message


def test_partitions_bound_replicas_exactly_at_the_limit() -> None:
    at_limit = {"topics": {"partitions": 3}, "ingest": {"replicas": 3}}
    assert render(merged(BASE, at_limit))
    assert "ingest.replicas (4) exceeds topics.partitions (3)" in render_error(
        {"topics": {"partitions": 3}, "ingest": {"replicas": 4}, "redactor": {"replicas": 1}}
    )


def test_disabled_services_need_no_secrets_and_render_nothing() -> None:
    off = {name: {"enabled": False} for name in ("ingest", "redactor", "llmWorker", "auditor")}
    objects = render({**off, "provisioning": {"enabled": False}, "auditReplay": {"enabled": False}})
    assert objects == []


def test_notes_tell_ops_how_to_check_the_rollout_and_replay_the_audit_log() -> None:
    notes = render_files(BASE)["airlock/templates/NOTES.txt"]
    for service in ("ingest", "redactor", "llm-worker", "auditor"):
        assert f"kubectl -n airlock rollout status deployment/rel-airlock-{service}" in notes
    assert "airlock ops status --namespace airlock --release rel" in notes
    assert "--from=cronjob/rel-airlock-audit-replay" in notes
    assert "existingClaim is empty" not in notes
    unwitnessed = merged(BASE, {"global": {"profile": "development"}, "auditor": {"witness": {"existingClaim": ""}}})
    assert "auditor.witness.existingClaim is empty" in render_files(unwitnessed)["airlock/templates/NOTES.txt"]


#: What the production profile requires, each emptied in turn.
PRODUCTION_NEEDS = {
    "networkPolicy.enabled is false": {"networkPolicy": {"enabled": False}},
    "networkPolicy.kafka.to is empty": {"networkPolicy": {"kafka": {"to": []}}},
    "networkPolicy.metrics.from is empty": {"networkPolicy": {"metrics": {"from": []}}},
    "llmWorker.modelEndpoints.to is empty": {"llmWorker": {"modelEndpoints": {"to": []}}},
    "auditor.witness.existingClaim is empty": {"auditor": {"witness": {"existingClaim": ""}}},
}


@pytest.mark.parametrize("expected", sorted(PRODUCTION_NEEDS))
def test_the_production_profile_refuses_open_egress_open_metrics_and_no_witness(expected: str) -> None:
    message = render_error(PRODUCTION_NEEDS[expected])
    assert expected in message and "global.profile: development" in message, message
    # The development profile takes the same values (a throw-away cluster).
    assert render(merged(BASE, {**PRODUCTION_NEEDS[expected], "global": {"profile": "development"}}))


def test_metrics_are_taken_only_from_the_monitoring_namespace_by_default() -> None:
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values
    assert defaults["global"]["profile"] == "production"
    [peer] = defaults["networkPolicy"]["metrics"]["from"]
    assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    policies = [o for o in render(BASE) if o["kind"] == "NetworkPolicy"]
    assert policies and all(rule["from"] == [peer] for p in policies for rule in p["spec"]["ingress"])
