"""Running the four services as separate processes, plus the fake OpenAI server.

Used by ``airlock dev up`` and by the integration and fault tests, so both exercise the
same start-up path as production: ``faststream run airlock.<service>.app:app``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.core.admin import partition_counts
from airlock.core.settings import KafkaSettings
from airlock.core.topics import Topics
from airlock.core.topology import SERVICE_MODULES, STAGES
from airlock.devstack.kafka import free_port

#: ``service → FastStream app``, from the topology.
SERVICES: dict[str, str] = SERVICE_MODULES


@dataclass
class FakeOpenAIProcess:
    """The fake OpenAI server in its own process, with its control API at hand."""

    port: int
    log_path: Path
    latency_ms: float = 0.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` should be."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 30.0) -> FakeOpenAIProcess:
        """Start and wait for ``/_fake/health``."""
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airlock.devstack.fake_openai",
                "--port",
                str(self.port),
                "--latency-ms",
                str(self.latency_ms),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self._call("GET", "/_fake/health")
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"fake OpenAI server exited; see {self.log_path}") from None
                time.sleep(0.1)
        raise RuntimeError("fake OpenAI server did not start")

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback only)
            raw = response.read()
        return json.loads(raw) if raw else None

    def received(self) -> list[dict[str, Any]]:
        """Every chat request body the fake received."""
        return list(self._call("GET", "/_fake/requests"))

    def clear(self) -> None:
        """Forget the received bodies."""
        self._call("DELETE", "/_fake/requests")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change latency or fault injection (see :class:`~airlock.devstack.fake_openai.FakeConfig`)."""
        return dict(self._call("PUT", "/_fake/config", changes))

    def target_base_url(self, target: str) -> str:
        """``OPENAI_BASE_URL`` of the fake's independent target ``target`` (OpenAI style)."""
        return f"http://127.0.0.1:{self.port}/t/{target}/v1"

    def azure_endpoint(self, target: str) -> str:
        """The Azure OpenAI endpoint (``azure_endpoint``) of the fake's target ``target``."""
        return f"http://127.0.0.1:{self.port}/t/{target}"

    def configure_target(self, target: str, **changes: Any) -> dict[str, Any]:
        """Change one target's latency or fault injection."""
        return dict(self._call("PUT", f"/_fake/targets/{target}/config", changes))

    def calls(self, target: str) -> list[dict[str, Any]]:
        """One target's call log: ``at`` (epoch seconds), ``status``, ``fault``, ``api``, ``model``."""
        return list(self._call("GET", f"/_fake/targets/{target}/calls"))


@dataclass
class ServiceProcess:
    """One replica of one service."""

    service: str
    replica: int
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def health_url(self) -> str:
        """Base URL of the replica's ``/healthz`` and ``/readyz``."""
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Mesh:
    """The services as processes sharing one environment.

    Args:
        env: Environment for every service (Kafka, topic prefix, keys, OpenAI endpoint).
        log_dir: One log file per replica is written here.
        service_env: More environment per service (its own Kafka principal).
    """

    env: dict[str, str]
    log_dir: Path
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    replicas: dict[str, list[ServiceProcess]] = field(default_factory=dict)

    def start(self, service: str, count: int = 1) -> None:
        """Start ``count`` more replicas of ``service``."""
        module = SERVICES[service]
        running = self.replicas.setdefault(service, [])
        for _ in range(count):
            replica = max((p.replica for p in running), default=-1) + 1
            log_path = self.log_dir / f"{service}-{replica}.log"
            port = free_port()
            log = open(log_path, "ab")  # noqa: SIM115 (owned by the child)
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faststream",
                    "run",
                    module,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env={**os.environ, **self.env, **self.service_env.get(service, {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            running.append(ServiceProcess(service, replica, process, log_path, port))

    def scale(self, service: str, count: int, *, grace_s: float = 30.0) -> None:
        """Start or stop (gracefully, newest first) replicas until ``count`` run."""
        running = self.replicas.setdefault(service, [])
        if len(running) < count:
            self.start(service, count - len(running))
        while len(running) > count:
            self._terminate(running.pop(), grace_s)

    def kill(self, service: str, replica: int | None = None) -> None:
        """SIGKILL one replica (the newest by default) of ``service``; it is not restarted."""
        running = self.replicas.get(service, [])
        victim = (
            next((p for p in running if p.replica == replica), None)
            if replica is not None
            else (running[-1] if running else None)
        )
        if victim is None:
            return
        running.remove(victim)
        victim.process.kill()
        victim.process.wait(10)

    def stop(self, service: str | None = None, *, grace_s: float = 30.0) -> None:
        """SIGTERM replicas (of every service by default), in parallel; SIGKILL laggards."""
        names = [service] if service else list(self.replicas)
        stopping = [replica for name in names for replica in self.replicas.pop(name, [])]
        for replica in stopping:
            replica.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for replica in stopping:
            try:
                replica.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(10)

    def _terminate(self, replica: ServiceProcess, grace_s: float) -> None:
        replica.process.send_signal(signal.SIGTERM)
        try:
            replica.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(10)

    def exited(self) -> list[ServiceProcess]:
        """Replicas that died on their own."""
        return [p for running in self.replicas.values() for p in running if p.process.poll() is not None]

    def counts(self) -> dict[str, int]:
        """Replicas running per service."""
        return {name: len(running) for name, running in self.replicas.items()}


def service_inputs(topics: Topics) -> dict[str, tuple[str, ...]]:
    """The input topics of each service (what its consumer group subscribes to)."""
    return {spec.service: tuple(getattr(topics, base) for base in spec.inputs) for spec in STAGES}


def readiness(replica: ServiceProcess) -> dict[str, Any] | None:
    """The replica's ``/readyz`` answer, or ``None`` while it cannot answer or is not ready."""
    try:
        with urllib.request.urlopen(f"{replica.health_url}/readyz", timeout=2) as response:  # noqa: S310
            body = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return body if body.get("ready") else None


async def wait_ready(kafka: KafkaSettings, mesh: Mesh, timeout_s: float = 120.0) -> None:
    """Wait until every replica is ready and each service's replicas share all its partitions.

    Shared means settled: each input partition owned by exactly one replica, and (while a
    service has no more replicas than input partitions) every replica owning some.

    Raises:
        RuntimeError: A replica exited, or the services did not settle in time.
    """
    inputs = service_inputs(Topics(kafka.topic_prefix))
    counts = await partition_counts(kafka, [t for names in inputs.values() for t in names])
    deadline = time.monotonic() + timeout_s
    missing: dict[str, int] = {}
    while time.monotonic() < deadline:
        if dead := mesh.exited():
            names = ", ".join(f"{p.service}-{p.replica} (see {p.log_path})" for p in dead)
            raise RuntimeError(f"service exited: {names}")
        missing = {}
        for service, running in mesh.replicas.items():
            answers = [readiness(replica) for replica in running]
            if not running or any(answer is None for answer in answers):
                missing[service] = -1
                continue
            owned = [list(answer["assigned"]) if answer else [] for answer in answers]
            assigned = {tp for tps in owned for tp in tps}
            wanted = {f"{topic}/{p}" for topic in inputs[service] for p in range(counts.get(topic, 0))}
            # Settled, not mid-rebalance: every partition owned once, and while there are
            # enough partitions to go round, no replica left without any.
            claimed = sum(len(tps) for tps in owned)
            idle = len(running) <= len(wanted) and any(not tps for tps in owned)
            if wanted - assigned or claimed != len(assigned) or idle:
                missing[service] = len(wanted - assigned)
        if not missing:
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(
        f"services not ready after {timeout_s:.0f}s "
        f"(unassigned partitions; -1 = not ready, 0 = still rebalancing): {missing}"
    )
