"""``airlock ops``: the deployed mesh as Kubernetes and Kafka see it.

``airlock ops status`` reads the Deployments (and their autoscalers) of an Airlock release
through the Kubernetes API — in-cluster credentials inside a pod, the kubeconfig elsewhere —
and each stage's consumer lag per partition from Kafka, and says, per stage, whether it should
scale. Lag is computed from the group's committed offsets (``list_consumer_group_offsets``) and
the partitions' last stable offsets: aiokafka's ``describe_consumer_groups`` cannot decode
Kafka 4.4's answer, and these two requests are all lag needs.

``airlock ops chart-topics`` writes the topic table the chart's Strimzi KafkaTopic resources
are rendered from, derived from :meth:`airlock.core.topics.Topics.specs` so the chart never
keeps a second, drifting list of topics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from airlock.core.reading import committed_reader
from airlock.core.settings import KafkaSettings, TopicSettings
from airlock.core.topics import Topics
from airlock.devstack.cli.common import fail, kafka_settings
from airlock.devstack.mesh import SERVICES, service_inputs

app = typer.Typer(help="Operate a deployed Airlock (Kubernetes + Kafka).", no_args_is_help=True)

#: Label values the chart puts on every Airlock Deployment (app.kubernetes.io/*).
CHART_NAME = "airlock"
_API_TIMEOUT = (5, 15)  # connect, read (seconds) per Kubernetes API request


class ClusterUnreachable(RuntimeError):
    """No Kubernetes API is configured, or the configured one does not answer."""


@dataclass(frozen=True)
class Autoscaler:
    """The autoscaler in charge of a Deployment's replica count."""

    kind: str  # "HPA", or "KEDA" for the HPA a KEDA ScaledObject owns
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Workload:
    """One stage's Deployment, as the Kubernetes API reports it."""

    stage: str
    name: str
    desired: int
    ready: int
    updated: int
    topic_prefix: str | None = None
    autoscaler: Autoscaler | None = None


@dataclass(frozen=True)
class PartitionLag:
    """Consumer lag of one input partition.

    Attributes:
        committed: The group's committed offset; ``None`` when it has none yet.
        start: First offset still in the log (where a new group begins).
        end: Last stable offset (``read_committed`` readers see nothing beyond it).
    """

    topic: str
    partition: int
    committed: int | None
    start: int
    end: int

    @property
    def lag(self) -> int:
        """Records the group has yet to process on this partition.

        A partition whose last write was a transaction reads 1 behind when fully consumed (the
        commit marker takes an offset); the scale thresholds are far above that.
        """
        position = self.start if self.committed is None or self.committed < 0 else self.committed
        return max(0, self.end - max(position, self.start))


@dataclass(frozen=True)
class Verdict:
    """What to do about a stage: ``action`` is ok, scale-up, scale-down, wait, limit or unknown."""

    action: str
    reason: str
    target: int | None = None


@dataclass(frozen=True)
class StageStatus:
    """Everything ``ops status`` reports about one stage."""

    stage: str
    workload: Workload | None
    partitions: int | None
    lags: tuple[PartitionLag, ...] | None
    verdict: Verdict

    @property
    def total_lag(self) -> int | None:
        """Lag summed over the stage's input partitions (``None`` when unknown)."""
        return None if self.lags is None else sum(p.lag for p in self.lags)


def consumer_group(stage: str) -> str:
    """The consumer group a stage consumes in (``airlock-<service>``, DESIGN.md §5)."""
    return f"airlock-{stage}"


def stage_inputs(topics: Topics) -> dict[str, tuple[str, ...]]:
    """Input topics of each stage, in pipeline order, from the same table the dev mesh uses."""
    return service_inputs(topics)


def recommend(
    workload: Workload | None, partitions: int | None, lags: Sequence[PartitionLag] | None, lag_per_replica: int
) -> Verdict:
    """Decide whether a stage should scale.

    A stage never usefully runs more replicas than its input topics have partitions (a
    consumer group gives each partition to one member). Within that bound, it needs about one
    replica per ``lag_per_replica`` records of lag.

    Args:
        workload: The stage's Deployment; ``None`` when it is not deployed.
        partitions: Partitions of the stage's input topic (the largest, for several); ``None``
            when Kafka could not be read.
        lags: Lag per input partition; ``None`` when Kafka could not be read.
        lag_per_replica: Lag one replica is expected to work off.
    """
    if workload is None:
        return Verdict("unknown", "not deployed in this namespace")
    if workload.ready < workload.desired:
        return Verdict("wait", f"{workload.ready}/{workload.desired} replicas ready: check the pods before scaling")
    if partitions is None or lags is None:
        return Verdict("unknown", "lag unknown: Kafka could not be read")
    if partitions == 0:
        return Verdict("unknown", "input topics missing: provision them (airlock topics provision)")
    scaler = workload.autoscaler
    ceiling = scaler.max_replicas if scaler else workload.desired
    if ceiling > partitions:
        what = f"the {scaler.kind} maximum" if scaler else "replicas"
        return Verdict(
            "scale-down",
            f"lower {what} to {partitions}: replicas beyond the {partitions} partitions sit idle",
            partitions,
        )
    total = sum(p.lag for p in lags)
    if total > ceiling * lag_per_replica and ceiling >= partitions:
        return Verdict("limit", f"lag {total} with all {partitions} partitions served: add partitions to scale further")
    wanted = min(partitions, max(1, math.ceil(total / lag_per_replica)))
    if wanted > ceiling:
        if scaler:
            return Verdict(
                "scale-up", f"lag {total} needs {wanted} replicas: raise the {scaler.kind} maximum to {wanted}", wanted
            )
        return Verdict("scale-up", f"lag {total} > {lag_per_replica} per replica: scale to {wanted}", wanted)
    if scaler:
        return Verdict("ok", f"{scaler.kind} scales it ({scaler.min_replicas}-{scaler.max_replicas})")
    return Verdict("ok", f"lag {total} within {workload.desired} x {lag_per_replica}")


# -- Kubernetes --------------------------------------------------------------------------------


def kube_client(kubeconfig: str | None, context: str | None) -> Any:
    """An API client: in-cluster credentials inside a pod, else the kubeconfig.

    Raises:
        ClusterUnreachable: No credentials anywhere.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as error:
            raise ClusterUnreachable(f"in-cluster credentials unusable: {error}") from None
        return client.ApiClient(configuration)
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context, persist_config=False)
    except (ConfigException, OSError) as error:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterUnreachable(
            f"no usable kubeconfig ({where}: {error}); pass --kubeconfig, set KUBECONFIG, or run in a pod"
        ) from None


def read_workloads(api: Any, namespace: str, release: str | None) -> list[Workload]:
    """The Airlock stages' Deployments in ``namespace`` (one release), with their autoscalers.

    Raises:
        ClusterUnreachable: The API server does not answer or refuses the request.
        ValueError: Several releases share the namespace and ``release`` is None.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    selector = f"app.kubernetes.io/name={CHART_NAME}"
    if release:
        selector += f",app.kubernetes.io/instance={release}"
    host = api.configuration.host
    # The API's own JSON (not the generated models): only a few fields are read.
    try:
        deployments_response: Any = client.AppsV1Api(api).list_namespaced_deployment(
            namespace, label_selector=selector, _request_timeout=_API_TIMEOUT, _preload_content=False
        )
        autoscalers_response: Any = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(
            namespace, _request_timeout=_API_TIMEOUT, _preload_content=False
        )
        deployments = json.loads(deployments_response.data)
        autoscalers = json.loads(autoscalers_response.data)
    except ApiException as error:
        raise ClusterUnreachable(
            f"the Kubernetes API at {host} refused to list Deployments in {namespace!r}: {error.status} {error.reason}"
        ) from None
    except HTTPError as error:
        raise ClusterUnreachable(f"cannot reach the Kubernetes API at {host}: {error}") from None
    return workloads_from(deployments, autoscalers, namespace=namespace, release=release)


def workloads_from(
    deployments: Mapping[str, Any], autoscalers: Mapping[str, Any], *, namespace: str, release: str | None
) -> list[Workload]:
    """Stage workloads from a DeploymentList and a HorizontalPodAutoscalerList (API JSON).

    Raises:
        ValueError: Several releases are listed and ``release`` is None.
    """
    scalers = {}
    for hpa in autoscalers.get("items", []):
        spec, metadata = hpa["spec"], hpa["metadata"]
        target = spec["scaleTargetRef"]
        if target.get("kind") != "Deployment":
            continue
        owned_by_keda = metadata["name"].startswith("keda-hpa-") or "scaledobject.keda.sh/name" in metadata.get(
            "labels", {}
        )
        scalers[target["name"]] = Autoscaler(
            "KEDA" if owned_by_keda else "HPA", spec.get("minReplicas", 1), spec["maxReplicas"]
        )

    items = deployments.get("items", [])
    releases = sorted({str(d["metadata"].get("labels", {}).get("app.kubernetes.io/instance")) for d in items})
    if release is None and len(releases) > 1:
        raise ValueError(f"several Airlock releases in {namespace!r} ({', '.join(releases)}): pick one with --release")
    found = []
    for deployment in items:
        metadata, spec, status = deployment["metadata"], deployment["spec"], deployment.get("status", {})
        stage = metadata.get("labels", {}).get("app.kubernetes.io/component")
        if stage not in SERVICES:
            continue
        containers = spec["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in containers[0].get("env", [])}
        found.append(
            Workload(
                stage=stage,
                name=metadata["name"],
                desired=spec.get("replicas", 1),
                ready=status.get("readyReplicas", 0),
                updated=status.get("updatedReplicas", 0),
                topic_prefix=env.get("AIRLOCK_KAFKA_TOPIC_PREFIX"),
                autoscaler=scalers.get(metadata["name"]),
            )
        )
    return found


# -- Kafka -------------------------------------------------------------------------------------


async def read_lags(
    kafka: KafkaSettings, inputs: Mapping[str, Sequence[str]], *, timeout_s: float = 10.0
) -> tuple[dict[str, tuple[PartitionLag, ...]], dict[str, int]]:
    """Lag per input partition of each stage's group, and the partition count of each topic.

    Args:
        kafka: Connection settings.
        inputs: Stage → its input topics.
        timeout_s: How long to wait for the broker.

    Raises:
        KafkaConnectionError: The broker stays unreachable for ``timeout_s``.
    """
    from aiokafka import TopicPartition

    from airlock.core.admin import connect_admin

    admin = await connect_admin(kafka, timeout_s=timeout_s)
    offsets = committed_reader(kafka)
    try:
        await offsets.start()
        names = sorted({topic for topics in inputs.values() for topic in topics})
        described = await admin.describe_topics(names)
        counts = {t["topic"]: (len(t["partitions"]) if t["error_code"] == 0 else 0) for t in described}
        lags: dict[str, tuple[PartitionLag, ...]] = {}
        for stage, topics in inputs.items():
            wanted = [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))]
            if not wanted:
                lags[stage] = ()
                continue
            committed = await admin.list_consumer_group_offsets(consumer_group(stage), partitions=wanted)
            starts = await offsets.beginning_offsets(wanted)
            ends = await offsets.end_offsets(wanted)
            lags[stage] = tuple(
                PartitionLag(
                    tp.topic,
                    tp.partition,
                    committed[tp].offset if tp in committed and committed[tp].offset >= 0 else None,
                    starts[tp],
                    ends[tp],
                )
                for tp in wanted
            )
        return lags, counts
    finally:
        await offsets.stop()
        await admin.close()


# -- report ------------------------------------------------------------------------------------


def build_statuses(
    workloads: Sequence[Workload],
    inputs: Mapping[str, Sequence[str]],
    lags: Mapping[str, Sequence[PartitionLag]] | None,
    counts: Mapping[str, int],
    lag_per_replica: int,
) -> list[StageStatus]:
    """Join Deployments and lag into one status per stage, in pipeline order.

    ``lags`` is ``None`` when Kafka could not be read; partitions are then unknown too.
    """
    by_stage = {w.stage: w for w in workloads}
    statuses = []
    for stage in inputs:
        partitions = None if lags is None else max((counts.get(t, 0) for t in inputs[stage]), default=0)
        stage_lags = None if lags is None else tuple(lags.get(stage, ()))
        verdict = recommend(by_stage.get(stage), partitions, stage_lags, lag_per_replica)
        statuses.append(StageStatus(stage, by_stage.get(stage), partitions, stage_lags, verdict))
    return statuses


def format_statuses(statuses: Sequence[StageStatus]) -> list[str]:
    """The human report: one row per stage, then its lag per partition."""
    rows = [("STAGE", "DESIRED", "READY", "AUTOSCALER", "PARTITIONS", "LAG", "RECOMMENDATION")]
    for status in statuses:
        workload = status.workload
        scaler = workload.autoscaler if workload else None
        rows.append(
            (
                status.stage,
                str(workload.desired) if workload else "-",
                str(workload.ready) if workload else "-",
                f"{scaler.kind} {scaler.min_replicas}-{scaler.max_replicas}" if scaler else "-",
                "?" if status.partitions is None else str(status.partitions),
                "?" if status.total_lag is None else str(status.total_lag),
                f"{status.verdict.action}: {status.verdict.reason}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows
    ]
    for status in statuses:
        if not status.lags:
            continue
        lines.append("")
        lines.append(f"{status.stage} lag per partition ({consumer_group(status.stage)}):")
        topics: dict[str, list[PartitionLag]] = {}
        for lag in status.lags:
            topics.setdefault(lag.topic, []).append(lag)
        for topic, parts in topics.items():
            cells = " ".join(f"{p.partition}:{p.lag}" for p in sorted(parts, key=lambda p: p.partition))
            lines.append(f"  {topic}  {cells}")
    return lines


def statuses_json(statuses: Sequence[StageStatus]) -> list[dict[str, Any]]:
    """The report as JSON-ready dicts (``--format json``)."""
    documents = []
    for status in statuses:
        document = dataclasses.asdict(status)
        document["total_lag"] = status.total_lag
        if status.lags is not None:
            document["lags"] = [{**dataclasses.asdict(p), "lag": p.lag} for p in status.lags]
        documents.append(document)
    return documents


@app.command("status")
def ops_status(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the release.")] = "default",
    release: Annotated[str | None, typer.Option(help="Helm release (needed when several share the namespace).")] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config).")
    ] = None,
    context: Annotated[str | None, typer.Option(help="Kubeconfig context.")] = None,
    lag_per_replica: Annotated[int, typer.Option(min=1, help="Lag one replica should work off.")] = 1000,
    kafka_timeout: Annotated[float, typer.Option(help="Seconds to wait for Kafka.")] = 10.0,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Per stage: desired/ready replicas, consumer lag per partition, and whether to scale.

    Kafka is reached with AIRLOCK_KAFKA_* (as every command); the topic prefix is the one the
    Deployments run with.
    """
    if output_format not in ("table", "json"):
        fail(f"--format must be table or json, not {output_format!r}")
    try:
        api = kube_client(kubeconfig, context)
        with api:
            workloads = read_workloads(api, namespace, release)
    except ClusterUnreachable as error:
        fail(f"no Kubernetes cluster reachable: {error}")
    except ValueError as error:
        fail(str(error))
    if not workloads:
        fail(f"no Airlock Deployments in namespace {namespace!r}" + (f" for release {release!r}" if release else ""))

    kafka = kafka_settings()
    prefix = next((w.topic_prefix for w in workloads if w.topic_prefix is not None), kafka.topic_prefix)
    inputs = stage_inputs(Topics(prefix))
    lags: dict[str, tuple[PartitionLag, ...]] | None
    # The report says what failed; per-retry connection warnings would only bury it.
    for noisy in ("aiokafka", "airlock.core.admin"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        lags, counts = asyncio.run(read_lags(kafka, inputs, timeout_s=kafka_timeout))
        kafka_note = ""
    except Exception as error:  # any broker problem: report the cluster side anyway
        lags, counts = None, {}
        kafka_note = f"lag unavailable: {error}"
    statuses = build_statuses(workloads, inputs, lags, counts, lag_per_replica)

    if output_format == "json":
        document = {
            "namespace": namespace,
            "release": release,
            "kafka": kafka.bootstrap,
            "topic_prefix": prefix,
            "kafka_error": kafka_note or None,
            "stages": statuses_json(statuses),
        }
        typer.echo(json.dumps(document, indent=2))
        return
    typer.echo(
        f"namespace {namespace}"
        + (f", release {release}" if release else "")
        + f"; Kafka {kafka.bootstrap}, topics {prefix}*"
    )
    if kafka_note:
        typer.echo(kafka_note)
    typer.echo("")
    for line in format_statuses(statuses):
        typer.echo(line)


# -- the chart's topic table -------------------------------------------------------------------


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _setting_or_literal(
    topic: str, value_a: str | int, value_b: str | int, first: Mapping[str, int], second: Mapping[str, int]
) -> Any:
    """``{"setting": key}`` when the two values are one field's two sentinels, else the literal."""
    for field, sentinel in first.items():
        if str(value_a) == str(sentinel) and str(value_b) == str(second[field]):
            return {"setting": _camel(field)}
    if value_a != value_b:
        raise ValueError(f"topic {topic}: {value_a!r} is derived from the settings, not one of them")
    return value_a


def topic_table() -> list[dict[str, Any]]:
    """Topics.specs as a table the chart renders KafkaTopic resources from.

    A partition count or config value that comes from a TopicSettings field becomes
    ``{"setting": <values key>}`` (the camelCase key under the chart's ``topics:``); fixed
    ones stay literal. The mapping is found by calling Topics.specs with two sets of distinct
    sentinel values, so it follows whatever Topics.specs does.

    Raises:
        ValueError: A value depends on the settings in a way a table cannot express.
    """
    fields = [name for name, info in TopicSettings.model_fields.items() if info.annotation is int]
    # Distinct per field and per set, valid for every field (partitions <= 1024), and unlike
    # any fixed count or retention a topic might use.
    first = {field: 500 + 7 * index for index, field in enumerate(fields)}
    second = {field: 700 + 7 * index for index, field in enumerate(fields)}
    table = []
    specs = zip(Topics("").specs(TopicSettings(**first)), Topics("").specs(TopicSettings(**second)), strict=True)
    for spec_a, spec_b in specs:
        table.append(
            {
                "name": spec_a.name,
                "partitions": _setting_or_literal(spec_a.name, spec_a.partitions, spec_b.partitions, first, second),
                "replicas": _setting_or_literal(
                    spec_a.name, spec_a.replication_factor, spec_b.replication_factor, first, second
                ),
                "config": {
                    key: _setting_or_literal(spec_a.name, value, spec_b.configs[key], first, second)
                    for key, value in spec_a.configs.items()
                },
            }
        )
    return table


CHART_TOPICS_HEADER = (
    "# Generated by `airlock ops chart-topics` (make chart-topics) from Topics.specs: do not edit.\n"
    "# {setting: X} takes the value of topics.X from the chart's values.\n"
)


def chart_topics_text() -> str:
    """The chart's files/topics.yaml, as ``ops chart-topics`` writes it."""
    import yaml

    return CHART_TOPICS_HEADER + yaml.safe_dump(topic_table(), sort_keys=False, default_flow_style=False)


@app.command("chart-topics")
def ops_chart_topics() -> None:
    """Print the chart's topic table (charts/airlock/files/topics.yaml) derived from Topics.specs."""
    typer.echo(chart_topics_text(), nl=False)


@app.command("acls")
def ops_acls(
    client: Annotated[
        list[str] | None,
        typer.Option(help="A client to include (repeat; default: every client of --clients-file, if given)."),
    ] = None,
    clients_file: Annotated[
        str | None, typer.Option(help="Include every client of this clients file.", show_default=False)
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, json or strimzi (KafkaUser resources).")] = "table",
    cluster: Annotated[str, typer.Option(help="Strimzi: the Kafka cluster's name (strimzi.io/cluster).")] = "kafka",
    namespace: Annotated[str | None, typer.Option(help="Strimzi: the KafkaUsers' namespace.")] = None,
) -> None:
    """Print the least-privilege ACLs of a deployment: one principal per stage, the audit reader, each client.

    Derived from the topology (airlock.core.topology) and AIRLOCK_KAFKA_TOPIC_PREFIX. The admin
    principal that provisions topics, users and ACLs is the only super user and is not listed.
    """
    import yaml

    from airlock.core import access

    clients = list(client or [])
    if clients_file:
        from pathlib import Path

        from airlock.ingest.clients import ClientsFile

        clients += sorted(set(ClientsFile.load(Path(clients_file)).clients) - set(clients))
    topics = Topics(load_topic_prefix())
    acls = access.deployment_acls(topics, clients)
    if output == "table":
        typer.echo(access.as_table(acls))
    elif output == "json":
        typer.echo(json.dumps(access.as_json(acls), indent=2))
    elif output == "strimzi":
        typer.echo(yaml.safe_dump_all(access.strimzi_users(acls, cluster, namespace), sort_keys=False), nl=False)
    else:
        fail(f"--format {output!r}: expected table, json or strimzi")


def load_topic_prefix() -> str:
    """The topic prefix from AIRLOCK_KAFKA_TOPIC_PREFIX (no broker needed)."""
    from airlock.core.settings import load

    return load(KafkaSettings).topic_prefix


@app.command("mesh-keys")
def ops_mesh_keys(
    out: Annotated[
        str, typer.Option(help="Directory for <stage>.json, dead-letters.json (secrets) and trust.json (public).")
    ],
) -> None:
    """Make each stage's signing key ring, the dead-letter ring and the mesh's trust file (idempotent).

    Put each <stage>.json in that stage's own Secret (<stage>.meshKeys.existingSecret in the
    chart) and trust.json in a ConfigMap (global.mesh.trust.existingConfigMap); hand trust.json
    to client teams too (their SDK verifies replies with it). Keep dead-letters.json with the
    operators, never in the cluster: it opens the dead letters (`airlock dlq read --keys`). To
    rotate, add a key to a ring with the new one active and re-run: trust.json then lists both.
    Existing rings are kept.
    """
    from pathlib import Path

    from airlock.core.authenticity import write_mesh_keys

    trust = write_mesh_keys(Path(out))
    typer.echo(
        f"signing rings, the dead-letter ring and {trust} written to {out}: the rings are secret, the trust file not"
    )
