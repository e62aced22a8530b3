"""`airlock ops status` against recorded Kubernetes API responses served over loopback HTTP,
and its scaling advice as a pure function."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from airlock.devstack.cli import app
from airlock.devstack.cli.ops import (
    Autoscaler,
    PartitionLag,
    StageStatus,
    Verdict,
    Workload,
    build_statuses,
    format_statuses,
    kube_client,
    read_workloads,
    recommend,
)

RECORDINGS = Path(__file__).parent / "ops_recordings"
TOKEN = "recorded-test-token"


class FakeApiServer:
    """Serves the recorded list responses like the API server: label selectors, 401, 404."""

    def __init__(self, deployments: dict[str, Any], autoscalers: dict[str, Any], status: int = 200) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                url = urlparse(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                if status != 200:
                    return self._send(status, _status(status, "Forbidden", "deployments.apps is forbidden"))
                parts = url.path.strip("/").split("/")
                recorded = {"deployments": deployments, "horizontalpodautoscalers": autoscalers}.get(parts[-1])
                if recorded is None or parts[-3] != "namespaces":
                    return self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
                items = [
                    item
                    for item in recorded["items"]
                    if item["metadata"]["namespace"] == parts[-2]
                    and all(item["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
                ]
                self._send(200, {**recorded, "items": items})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _recording(name: str) -> dict[str, Any]:
    return json.loads((RECORDINGS / f"{name}.json").read_text())


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "recorded", "cluster": {"server": server}}],
                "users": [{"name": "ops", "user": {"token": TOKEN}}],
                "contexts": [{"name": "recorded", "context": {"cluster": "recorded", "user": "ops"}}],
                "current-context": "recorded",
            }
        )
    )
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(_recording("deployments"), _recording("horizontalpodautoscalers"))
    yield server
    server.stop()


def _run(args: list[str], **env: str) -> Any:
    environment = {"KUBERNETES_SERVICE_HOST": "", "AIRLOCK_KAFKA_BOOTSTRAP": f"127.0.0.1:{_closed_port()}", **env}
    return CliRunner().invoke(app, ["ops", "status", *args], env=environment)


def test_workloads_come_from_the_releases_deployments_and_their_autoscalers(api: FakeApiServer, tmp_path: Path) -> None:
    with kube_client(str(_kubeconfig(tmp_path, api.url)), None) as client:
        workloads = {w.stage: w for w in read_workloads(client, "airlock", "rel")}
    assert set(workloads) == {"ingest", "redactor", "llm-worker", "auditor"}, "billing-api is not Airlock"
    assert workloads["redactor"] == Workload("redactor", "rel-airlock-redactor", 2, 1, 2, "airlock.", None)
    assert workloads["llm-worker"].autoscaler == Autoscaler("KEDA", 2, 6)
    assert workloads["llm-worker"].desired == 3
    assert workloads["ingest"].autoscaler is None, "billing-api's HPA is not the ingest's"
    deployments_call = next(r for r in api.requests if "/deployments" in r)
    assert deployments_call.startswith("/apis/apps/v1/namespaces/airlock/deployments?")
    selector = parse_qs(urlparse(deployments_call).query)["labelSelector"][0]
    assert selector == "app.kubernetes.io/name=airlock,app.kubernetes.io/instance=rel"


def test_status_prints_each_stage_and_reports_kafka_it_cannot_reach(api: FakeApiServer, tmp_path: Path) -> None:
    result = _run(
        [
            "-n",
            "airlock",
            "--release",
            "rel",
            "--kubeconfig",
            str(_kubeconfig(tmp_path, api.url)),
            "--kafka-timeout",
            "1",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("namespace airlock, release rel; Kafka 127.0.0.1:")
    assert lines[0].endswith("topics airlock.*")
    assert lines[1].startswith("lag unavailable: ")
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.split() and line.split()[0] in ("ingest", "redactor", "llm-worker", "auditor")
    }
    assert rows["redactor"][1:3] == ["2", "1"]
    assert "wait: 1/2 replicas ready" in next(line for line in lines if line.startswith("redactor"))
    assert rows["llm-worker"][1:5] == ["3", "3", "KEDA", "2-6"]
    assert "unknown: lag unknown: Kafka could not be read" in next(line for line in lines if line.startswith("ingest"))


def test_status_as_json(api: FakeApiServer, tmp_path: Path) -> None:
    result = _run(
        [
            "-n",
            "airlock",
            "--kubeconfig",
            str(_kubeconfig(tmp_path, api.url)),
            "--kafka-timeout",
            "1",
            "--format",
            "json",
        ]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    stages = {stage["stage"]: stage for stage in document["stages"]}
    assert document["topic_prefix"] == "airlock."
    assert document["kafka_error"]
    assert stages["redactor"]["workload"]["ready"] == 1
    assert stages["redactor"]["verdict"]["action"] == "wait"
    assert stages["llm-worker"]["workload"]["autoscaler"] == {"kind": "KEDA", "min_replicas": 2, "max_replicas": 6}
    assert stages["auditor"]["lags"] is None


def test_a_namespace_without_airlock_says_so(api: FakeApiServer, tmp_path: Path) -> None:
    result = _run(["-n", "elsewhere", "--kubeconfig", str(_kubeconfig(tmp_path, api.url))])
    assert result.exit_code == 2
    assert "no Airlock Deployments in namespace 'elsewhere'" in result.output


def test_several_releases_need_one_picked(tmp_path: Path) -> None:
    deployments = _recording("deployments")
    second = json.loads(json.dumps(deployments["items"][0]))
    second["metadata"]["labels"]["app.kubernetes.io/instance"] = "canary"
    second["metadata"]["name"] = "canary-airlock-auditor"
    server = FakeApiServer(
        {**deployments, "items": [*deployments["items"], second]}, _recording("horizontalpodautoscalers")
    )
    try:
        result = _run(["-n", "airlock", "--kubeconfig", str(_kubeconfig(tmp_path, server.url))])
    finally:
        server.stop()
    assert result.exit_code == 2
    assert "several Airlock releases in 'airlock' (canary, rel): pick one with --release" in result.output


def test_no_cluster_reachable_is_a_clear_error(tmp_path: Path) -> None:
    port = _closed_port()
    result = _run(["--kubeconfig", str(_kubeconfig(tmp_path, f"http://127.0.0.1:{port}"))])
    assert result.exit_code == 2
    assert (
        f"no Kubernetes cluster reachable: cannot reach the Kubernetes API at http://127.0.0.1:{port}" in result.output
    )
    missing = _run([], KUBECONFIG=str(tmp_path / "absent"))
    assert missing.exit_code == 2
    assert "no Kubernetes cluster reachable: no usable kubeconfig" in missing.output


def test_an_api_that_refuses_is_reported_with_its_status(tmp_path: Path) -> None:
    server = FakeApiServer(_recording("deployments"), _recording("horizontalpodautoscalers"), status=403)
    try:
        result = _run(["-n", "airlock", "--kubeconfig", str(_kubeconfig(tmp_path, server.url))])
    finally:
        server.stop()
    assert result.exit_code == 2
    assert "refused to list Deployments in 'airlock': 403 Forbidden" in result.output


def _lags(topic: str, *lags: int) -> tuple[PartitionLag, ...]:
    return tuple(PartitionLag(topic, p, 100, 0, 100 + lag) for p, lag in enumerate(lags))


def _workload(desired: int, ready: int | None = None, autoscaler: Autoscaler | None = None) -> Workload:
    return Workload(
        "llm-worker", "rel-airlock-llm-worker", desired, desired if ready is None else ready, desired, None, autoscaler
    )


@pytest.mark.parametrize(
    ("workload", "partitions", "lags", "expected"),
    [
        (None, 6, _lags("t", 0), Verdict("unknown", "not deployed in this namespace")),
        (
            _workload(2, ready=1),
            6,
            _lags("t", 9999),
            Verdict("wait", "1/2 replicas ready: check the pods before scaling"),
        ),
        (_workload(2), None, None, Verdict("unknown", "lag unknown: Kafka could not be read")),
        (_workload(2), 0, (), Verdict("unknown", "input topics missing: provision them (airlock topics provision)")),
        (
            _workload(8),
            6,
            _lags("t", 0),
            Verdict("scale-down", "lower replicas to 6: replicas beyond the 6 partitions sit idle", 6),
        ),
        (
            _workload(2, autoscaler=Autoscaler("HPA", 1, 12)),
            6,
            _lags("t", 0),
            Verdict("scale-down", "lower the HPA maximum to 6: replicas beyond the 6 partitions sit idle", 6),
        ),
        (_workload(2), 6, _lags("t", 500, 400, 0, 0, 0, 0), Verdict("ok", "lag 900 within 2 x 1000")),
        (
            _workload(2),
            6,
            _lags("t", 2000, 1500, 100, 0, 0, 0),
            Verdict("scale-up", "lag 3600 > 1000 per replica: scale to 4", 4),
        ),
        (
            _workload(6),
            6,
            _lags("t", 2000, 2000, 2000, 2000, 2000, 2000),
            Verdict("limit", "lag 12000 with all 6 partitions served: add partitions to scale further"),
        ),
        (
            _workload(2, autoscaler=Autoscaler("KEDA", 1, 3)),
            6,
            _lags("t", 2000, 2000, 1000, 0, 0, 0),
            Verdict("scale-up", "lag 5000 needs 5 replicas: raise the KEDA maximum to 5", 5),
        ),
        (
            _workload(2, autoscaler=Autoscaler("KEDA", 1, 6)),
            6,
            _lags("t", 10, 0),
            Verdict("ok", "KEDA scales it (1-6)"),
        ),
    ],
)
def test_scaling_advice(
    workload: Workload | None, partitions: int | None, lags: tuple[PartitionLag, ...] | None, expected: Verdict
) -> None:
    assert recommend(workload, partitions, lags, lag_per_replica=1000) == expected


def test_lag_counts_from_the_log_start_when_the_group_has_no_offset_or_an_expired_one() -> None:
    assert PartitionLag("t", 0, None, 40, 100).lag == 60
    assert PartitionLag("t", 0, 10, 40, 100).lag == 60, "records before the log start are gone, not lag"
    assert PartitionLag("t", 0, 100, 40, 100).lag == 0
    assert PartitionLag("t", 0, 95, 0, 100).lag == 5


def test_the_report_lists_lag_per_partition_for_each_input_topic() -> None:
    workloads = [
        Workload("redactor", "rel-airlock-redactor", 2, 2, 2),
        Workload("auditor", "rel-airlock-auditor", 1, 1, 1),
    ]
    inputs = {
        "ingest": ("a.requests",),
        "redactor": ("a.accepted", "a.completions"),
        "llm-worker": ("a.redacted",),
        "auditor": ("a.audit",),
    }
    lags = {
        "redactor": _lags("a.accepted", 5, 0, 7) + _lags("a.completions", 0, 1, 0),
        "auditor": _lags("a.audit", 0, 0, 0),
        "ingest": (),
        "llm-worker": (),
    }
    counts = {"a.requests": 3, "a.accepted": 3, "a.completions": 3, "a.redacted": 3, "a.audit": 3}
    statuses = build_statuses(workloads, inputs, lags, counts, lag_per_replica=1000)
    assert [s.stage for s in statuses] == ["ingest", "redactor", "llm-worker", "auditor"]
    assert isinstance(statuses[1], StageStatus) and statuses[1].total_lag == 13
    lines = format_statuses(statuses)
    assert lines[0].split() == ["STAGE", "DESIRED", "READY", "AUTOSCALER", "PARTITIONS", "LAG", "RECOMMENDATION"]
    assert lines[1].split()[:7] == ["ingest", "-", "-", "-", "3", "0", "unknown:"]
    assert lines[2].split()[:7] == ["redactor", "2", "2", "-", "3", "13", "ok:"]
    assert "redactor lag per partition (airlock-redactor):" in lines
    assert "  a.accepted  0:5 1:0 2:7" in lines
    assert "  a.completions  0:0 1:1 2:0" in lines
