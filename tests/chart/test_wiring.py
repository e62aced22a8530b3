"""The chart is wired to what the code actually does: entry points, consumer groups, input
topics, topic specs, settings variables, mounted files and checksums."""

from __future__ import annotations

import posixpath
from typing import Any

import helm_python as helm
import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from airlock.auditor.settings import AuditorSettings
from airlock.core.anomaly import AnomalySettings
from airlock.core.authenticity import MeshSettings
from airlock.core.runtime import StageRuntime
from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings
from airlock.core.stage import RecordProcessor, StageContext
from airlock.core.telemetry import TelemetrySettings
from airlock.core.topics import Topics
from airlock.devstack.cli.ops import chart_topics_text
from airlock.devstack.mesh import SERVICES as ENTRY_POINTS
from airlock.devstack.mesh import service_inputs
from airlock.ingest.settings import IngestSettings
from airlock.llm_worker.settings import LLMWorkerSettings
from airlock.redactor.settings import RedactorSettings
from tests.chart.rendering import (
    CHART,
    SERVICES,
    by_component,
    env_of,
    merged,
    of_kind,
    pod_specs,
    render,
    scenario_values,
)

SCENARIO = {name: scenario_values(CHART / "ci" / f"{name}-values.yaml") for name in ("defaults", "keda", "sasl-ssl")}
SCENARIO["strimzi"] = scenario_values(CHART / "ci" / "strimzi-values.yaml")
#: The defaults without a witness volume (only the development profile renders that).
UNWITNESSED = merged(
    SCENARIO["defaults"], {"global": {"profile": "development"}, "auditor": {"witness": {"existingClaim": ""}}}
)


def _group_and_topics(service: str, prefix: str) -> tuple[str, set[str]]:
    """The consumer group and input topics the service's StageRuntime really subscribes with."""
    topics = Topics(prefix)

    async def unused(*_: Any) -> None:
        raise AssertionError("never called")

    runtime = StageRuntime(
        service,
        {topic: RecordProcessor(unused, unused) for topic in service_inputs(topics)[service]},
        context=StageContext(service, topics),
        kafka=KafkaSettings(),
        settings=StageSettings(),
    )
    return runtime.group_id, {topic.name for topic in runtime.subscriber.topics}


def _env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field, info in cls.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            names |= {str(choice) for choice in info.validation_alias.choices}
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def test_each_deployment_runs_the_services_entry_point() -> None:
    deployments = by_component(render(SCENARIO["defaults"]), "Deployment")
    for service in SERVICES:
        command = deployments[service]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:3] == ["faststream", "run", ENTRY_POINTS[service]]
        assert command[3:] == ["--host", "0.0.0.0", "--port", "8080"]


@pytest.mark.parametrize("scenario", ["keda", "sasl-ssl"])
def test_scaled_objects_watch_the_group_and_topics_the_service_consumes(scenario: str) -> None:
    values = SCENARIO[scenario]
    prefix = values.get("global", {}).get("kafka", {}).get("topicPrefix", "airlock.")
    partitions = values.get("topics", {}).get("partitions", 6)
    scaled = by_component(render(values), "ScaledObject")
    assert scaled
    for service, scaled_object in scaled.items():
        group, topics = _group_and_topics(service, prefix)
        triggers = scaled_object["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {group}
        assert {t["metadata"]["topic"] for t in triggers} == topics
        assert all(t["metadata"]["allowIdleConsumers"] == "false" for t in triggers)
        assert scaled_object["spec"]["maxReplicaCount"] <= partitions
        assert scaled_object["spec"]["scaleTargetRef"]["name"] == f"rel-airlock-{service}"


def test_keda_reaches_a_secured_kafka_with_the_services_secrets() -> None:
    objects = render(SCENARIO["sasl-ssl"])
    # Only the llm-worker is autoscaled here: KEDA reads its lag with the llm-worker's own login.
    (auth,) = of_kind(objects, "TriggerAuthentication")
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("airlock-kafka-llm-worker", "username"),
        "password": ("airlock-kafka-llm-worker", "password"),
        "ca": ("kafka-cluster-ca", "ca.crt"),
    }
    (scaled,) = of_kind(objects, "ScaledObject")
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    every = {a["metadata"]["name"]: a for a in of_kind(render(SCENARIO["keda"]), "TriggerAuthentication")}
    assert set(every) == {f"rel-airlock-{s}-kafka" for s in SERVICES}, "one per autoscaled stage"
    insecure = {"global": {"kafka": {"securityProtocol": "PLAINTEXT", "allowInsecure": True}}}
    assert of_kind(render(merged(SCENARIO["keda"], insecure)), "TriggerAuthentication") == [], "PLAINTEXT needs none"


def test_autoscaling_is_keda_or_hpa_never_both() -> None:
    keda = render(SCENARIO["keda"])
    assert len(of_kind(keda, "ScaledObject")) == 4 and of_kind(keda, "HorizontalPodAutoscaler") == []
    for deployment in of_kind(keda, "Deployment"):
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    hpa = by_component(render(SCENARIO["strimzi"]), "HorizontalPodAutoscaler")
    assert set(hpa) == {"redactor", "llm-worker"}
    assert hpa["redactor"]["spec"]["maxReplicas"] == 12
    assert hpa["redactor"]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(word.capitalize() for word in rest)


def test_the_topics_block_has_one_key_per_topic_setting_with_the_same_defaults() -> None:
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values["topics"]
    fields = {_camel(name): name for name in TopicSettings.model_fields}
    assert set(defaults) == set(fields), "add the missing TopicSettings fields to topics: in values.yaml and the schema"
    code = TopicSettings()
    for key, field in fields.items():
        if key != "replicationFactor":  # 1 suits the local single broker, never a cluster
            assert defaults[key] == getattr(code, field), key


def test_the_charts_topic_table_is_generated_from_topics_specs() -> None:
    committed = (CHART / "files" / "topics.yaml").read_text()
    assert committed == chart_topics_text(), "Topics.specs changed: run `make chart-topics`"


def test_strimzi_topics_match_the_topics_the_code_provisions() -> None:
    values = SCENARIO["strimzi"]
    objects = render(values)
    assert of_kind(objects, "Job") == [], "Strimzi replaces the provisioning Job"
    with helm.Chart.load(CHART) as chart:
        topics = chart.merge_values(values)["topics"]
    settings = TopicSettings(**{field: int(topics[_camel(field)]) for field in TopicSettings.model_fields})
    assert settings.partitions == 12 and settings.transit_retention_ms == 86_400_000
    expected = {
        spec.name: (spec.partitions, spec.replication_factor, spec.configs)
        for spec in Topics("airlock.").specs(settings)
    }
    rendered = {}
    for topic in of_kind(objects, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "my-cluster"
        assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        spec = topic["spec"]
        rendered[spec["topicName"]] = (spec["partitions"], spec["replicas"], spec["config"])
    assert rendered == expected


def test_the_provisioning_job_is_an_idempotent_hook_running_the_cli() -> None:
    objects = render(SCENARIO["sasl-ssl"])
    (job,) = of_kind(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert [*container["command"], *container["args"]] == ["airlock", "topics", "provision"]
    assert container["image"] == "registry.example.internal/airlock/cli:0.1.0"
    env = env_of(container)
    assert env["AIRLOCK_TOPICS_PARTITIONS"] == "6"
    assert env["AIRLOCK_TOPICS_LEDGER_RETENTION_MS"] == "-1"
    assert env["AIRLOCK_KAFKA_TOPIC_PREFIX"] == "prod.airlock."
    # Everything the Job needs exists before it: its ServiceAccount and NetworkPolicy are hooks too.
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    hooks = {
        (obj["kind"], obj["metadata"]["name"]): obj["metadata"].get("annotations", {}).get("helm.sh/hook")
        for obj in objects
    }
    assert hooks[("ServiceAccount", account)] == "pre-install,pre-upgrade"
    assert hooks[("NetworkPolicy", "rel-airlock-provisioning")] == "pre-install,pre-upgrade"


def test_every_airlock_variable_is_one_the_services_read() -> None:
    known = set()
    for cls in (
        KafkaSettings,
        TopicSettings,
        IngestSettings,
        RedactorSettings,
        LLMWorkerSettings,
        AuditorSettings,
        AnomalySettings,
        TelemetrySettings,
        MeshSettings,
    ):
        known |= _env_names(cls)
    objects = render(SCENARIO["sasl-ssl"])
    seen = set()
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            seen |= {name for name in env_of(container) if name.startswith("AIRLOCK_")}
    unknown = seen - known
    assert unknown == set(), f"the chart sets variables no settings class reads: {sorted(unknown)}"
    files = {name for name in seen if name.endswith(("_FILE", "_DIR"))}
    assert files == {
        "AIRLOCK_INGEST_CLIENTS_FILE",
        "AIRLOCK_REDACTOR_VAULT_KEYS_FILE",
        "AIRLOCK_REDACTOR_POLICY_DIR",
        "AIRLOCK_LLM_WORKER_ROUTES_FILE",
        "AIRLOCK_LLM_WORKER_PRICES_FILE",
        "AIRLOCK_INGEST_PRICES_FILE",
        "AIRLOCK_AUDITOR_SIGNING_KEYS_FILE",
        "AIRLOCK_AUDITOR_WITNESS_DIR",
        "AIRLOCK_MESH_SIGNING_KEYS_FILE",
        "AIRLOCK_MESH_TRUST_FILE",
    }, "every file the services read is wired"


def test_kafka_credentials_and_ca_come_from_the_referenced_secrets() -> None:
    objects = render(SCENARIO["sasl-ssl"])
    credentials = SCENARIO["sasl-ssl"]["global"]["kafka"]["sasl"]["credentials"]
    logins = set()
    for name, spec in pod_specs(objects):
        (container,) = spec["containers"]
        env = env_of(container)
        # Each stage and job logs in with its own Secret: least privilege per principal.
        secret = credentials[name.split("/", 1)[1].removeprefix("rel-airlock-")]
        logins.add(secret)
        assert env["AIRLOCK_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["AIRLOCK_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["AIRLOCK_KAFKA_SASL_USERNAME"] == {"secretKeyRef": {"name": secret, "key": "username"}}, name
        assert env["AIRLOCK_KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": secret, "key": "password"}}, name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
        assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
        _assert_file_is_mounted(spec, container, env["AIRLOCK_KAFKA_SSL_CAFILE"], "kafka-cluster-ca", "ca.crt")
    assert len(logins) == 6, "four stages, the provisioning Job and the audit replay: six principals"


def test_strimzi_style_secrets_log_in_as_the_principals_own_name() -> None:
    values = merged(SCENARIO["sasl-ssl"], {"global": {"kafka": {"sasl": {"usernameKey": ""}}}})
    names = {
        name: env_of(spec["containers"][0])["AIRLOCK_KAFKA_SASL_USERNAME"] for name, spec in pod_specs(render(values))
    }
    assert names["Deployment/rel-airlock-redactor"] == "airlock-redactor"
    assert names["CronJob/rel-airlock-audit-replay"] == "airlock-audit-reader"


def _assert_file_is_mounted(spec: dict[str, Any], container: dict[str, Any], path: str, source: str, key: str) -> None:
    directory, filename = posixpath.split(path)
    assert filename == key
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    backing = volume.get("secret") or volume.get("configMap")
    assert backing.get("secretName", backing.get("name")) == source
    assert {"key": key, "path": key} in backing["items"]


def test_every_file_variable_points_at_the_mounted_key() -> None:
    values = SCENARIO["sasl-ssl"]
    expected = {
        "AIRLOCK_INGEST_CLIENTS_FILE": ("airlock-ingest-clients", "clients.yaml"),
        "AIRLOCK_REDACTOR_VAULT_KEYS_FILE": ("airlock-redactor-vault-keys", "keys.json"),
        "AIRLOCK_LLM_WORKER_ROUTES_FILE": ("airlock-routes", "routes.yaml"),
        "AIRLOCK_LLM_WORKER_PRICES_FILE": ("rel-airlock-llm-worker-prices", "prices.yaml"),
        "AIRLOCK_AUDITOR_SIGNING_KEYS_FILE": ("airlock-auditor-signing-keys", "signing-keys.json"),
        "AIRLOCK_MESH_TRUST_FILE": ("airlock-mesh-trust", "trust.json"),
    }
    objects = render(values)
    for component, deployment in by_component(objects, "Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        path = env_of(container)["AIRLOCK_MESH_SIGNING_KEYS_FILE"]
        _assert_file_is_mounted(spec, container, path, f"airlock-{component}-mesh-keys", "signing-keys.json")
    checked = set()
    for _, spec in pod_specs(objects):
        (container,) = spec["containers"]
        for variable, value in env_of(container).items():
            if variable in expected:
                _assert_file_is_mounted(spec, container, value, *expected[variable])
                checked.add(variable)
    assert checked == set(expected)
    deployments = by_component(objects, "Deployment")
    config_maps = {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}

    # The redactor's policies: a directory with one file per policy given in values.
    redactor = deployments["redactor"]["spec"]["template"]["spec"]
    policy_dir = env_of(redactor["containers"][0])["AIRLOCK_REDACTOR_POLICY_DIR"]
    volume = _volume_at(redactor, policy_dir)
    assert volume["configMap"]["name"] == "rel-airlock-redactor-policies" and "items" not in volume["configMap"]
    policies = config_maps["rel-airlock-redactor-policies"]["data"]
    assert set(policies) == {"default.yaml", "hr.yaml"}
    assert "US_SSN: block" in policies["default.yaml"]

    worker = deployments["llm-worker"]["spec"]["template"]["spec"]
    worker_env = env_of(worker["containers"][0])
    assert worker_env["AIRLOCK_LLM_WORKER_OPENAI_API_KEY"] == {
        "secretKeyRef": {"name": "airlock-openai", "key": "api-key"}
    }
    assert worker_env["AIRLOCK_LLM_WORKER_OPENAI_BASE_URL"] == "https://llm-proxy.example.internal/v1"
    # Provider keys: every key of the Secret a file the routing table names with api_key_file.
    volume = _volume_at(worker, "/etc/airlock/provider-keys")
    assert volume["secret"]["secretName"] == "airlock-provider-keys" and "items" not in volume["secret"]
    assert "gpt-4o-mini" in config_maps["rel-airlock-llm-worker-prices"]["data"]["prices.yaml"]

    auditor = deployments["auditor"]["spec"]["template"]["spec"]
    witness = env_of(auditor["containers"][0])["AIRLOCK_AUDITOR_WITNESS_DIR"]
    mount = next(m for m in auditor["containers"][0]["volumeMounts"] if m["mountPath"] == witness)
    assert not mount.get("readOnly"), "the auditor writes its witness files"
    assert _volume_at(auditor, witness)["persistentVolumeClaim"] == {"claimName": "airlock-witness"}
    # Without a claim there is no witness at all (never one that vanishes with the pod).
    plain = by_component(render(UNWITNESSED), "Deployment")["auditor"]["spec"]["template"]["spec"]
    assert "AIRLOCK_AUDITOR_WITNESS_DIR" not in env_of(plain["containers"][0])
    assert {v["name"] for v in plain["volumes"]} == {"tmp", "signing-keys", "mesh-keys", "mesh-trust"}


def test_the_audit_replay_job_reads_the_auditors_witness_read_only() -> None:
    # Without the witness a scheduled replay could not prove a truncated ledger tail.
    [cron] = of_kind(render(SCENARIO["sasl-ssl"]), "CronJob")
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    witness = env_of(spec["containers"][0])["AIRLOCK_AUDITOR_WITNESS_DIR"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == witness)
    assert mount["readOnly"] is True
    claim = _volume_at(spec, witness)["persistentVolumeClaim"]
    assert claim == {"claimName": "airlock-witness", "readOnly": True}
    [plain] = of_kind(render(UNWITNESSED), "CronJob")
    plain_spec = plain["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "AIRLOCK_AUDITOR_WITNESS_DIR" not in env_of(plain_spec["containers"][0])


def _volume_at(spec: dict[str, Any], path: str) -> dict[str, Any]:
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == path)
    return next(v for v in spec["volumes"] if v["name"] == mount["name"])


def _pod_checksums(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        service: {
            key: value
            for key, value in deployment["spec"]["template"]["metadata"]["annotations"].items()
            if key.startswith("checksum/")
        }
        for service, deployment in by_component(render(values), "Deployment").items()
    }


def test_a_config_change_rolls_exactly_the_pods_that_mount_it() -> None:
    base = SCENARIO["sasl-ssl"]
    before = _pod_checksums(base)
    policy = _pod_checksums(merged(base, {"redactor": {"policies": {"files": {"default.yaml": {"version": "2"}}}}}))
    assert policy["redactor"] != before["redactor"]
    assert {s: policy[s] for s in ("ingest", "llm-worker", "auditor")} == {
        s: before[s] for s in ("ingest", "llm-worker", "auditor")
    }
    prices = _pod_checksums(merged(base, {"llmWorker": {"prices": {"content": {"currency": "EUR"}}}}))
    assert prices["llm-worker"] != before["llm-worker"]
    assert prices["ingest"] != before["ingest"], "ingest prices its reservations with the same table"
    assert all(prices[s] == before[s] for s in ("redactor", "auditor"))
    # Pointing at another Secret rolls the pods that mount it.
    clients = _pod_checksums(merged(base, {"ingest": {"clients": {"existingSecret": "clients-v2"}}}))
    assert clients["ingest"] != before["ingest"] and clients["redactor"] == before["redactor"]
    kafka = _pod_checksums(merged(base, {"global": {"kafka": {"sasl": {"credentials": {"ingest": "other-user"}}}}}))
    assert kafka["ingest"] != before["ingest"], "a stage's own login rolls it"
    assert all(kafka[s] == before[s] for s in SERVICES if s != "ingest"), "and no other stage"
    protocol = _pod_checksums(merged(base, {"global": {"kafka": {"sasl": {"passwordKey": "pw"}}}}))
    assert all(protocol[s] != before[s] for s in SERVICES)
