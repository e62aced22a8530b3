"""A real Apache Kafka broker in KRaft combined mode, from jars resolved through Maven.

The jars are resolved once into ``~/.cache/airlock/kafka/<version>/libs`` with
``mvn dependency:copy-dependencies`` over a small pom (``kafka-pom.xml`` next to this
module), then the broker runs as ``java -cp 'libs/*' kafka.Kafka server.properties``.

The broker lets no one in unauthenticated: clients log in with SCRAM-SHA-512 on loopback, KRaft's
``StandardAuthorizer`` denies what no ACL grants, and only the admin principal (whose password
is generated with the storage) is a super user. Stages and clients get principals and ACLs
from :mod:`airlock.core.access`.

Why 4.4.0: it is the newest release, and aiokafka's idempotent and transactional producers
work against it (checked by the integration tests, which run every stage transactionally).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from importlib import resources
from pathlib import Path
from types import TracebackType

from pydantic import SecretStr

from airlock.core.settings import KafkaSettings
from airlock.devstack.paths import cache_dir

KAFKA_VERSION = "4.4.0"
#: The SCRAM principal that provisions topics, users and ACLs (a super user).
ADMIN_PRINCIPAL = "admin"
_CONTROLLER_PRINCIPAL = "controller"
log = logging.getLogger(__name__)


def _write_private(path: Path, content: str) -> None:
    """Write a file only the current user can read (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


class MissingPrerequisite(RuntimeError):
    """Java or Maven is missing or too old; the message says what to install."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def java_major(java: str = "java") -> int:
    """Major version of the ``java`` on PATH (or ``$JAVA_HOME``).

    Raises:
        MissingPrerequisite: When there is no usable Java.
    """
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        raise MissingPrerequisite(
            "Java 17+ is required to run Kafka: install a JDK or JRE 17 or newer (e.g. openjdk-17-jre-headless)"
        ) from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        raise MissingPrerequisite("Java 17+ is required to run Kafka: `java -version` printed no version")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker's jars through Maven once; return the directory holding them.

    Raises:
        MissingPrerequisite: When Maven is missing, or Java is missing or older than 17.
    """
    libs = cache_dir() / "kafka" / version / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if java_major(_java()) < 17:
        raise MissingPrerequisite("Java 17+ is required to run Kafka: install a JDK or JRE 17 or newer")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingPrerequisite("Maven is required to fetch the Kafka jars: install Maven 3 (e.g. apt install maven)")
    pom = resources.files("airlock.devstack").joinpath("kafka-pom.xml").read_text()
    with tempfile.TemporaryDirectory() as work:
        Path(work, "pom.xml").write_text(pom.replace("${kafka.version}", version))
        staging = libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        log.info("resolving Kafka %s jars with Maven into %s", version, libs)
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mvn could not resolve the Kafka jars:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    marker.write_text(version)
    return libs


_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


class LocalKafka:
    """One Kafka broker (KRaft, broker+controller in one process) on loopback.

    Args:
        data_dir: Holds the log directories, config and broker log. Reused if formatted.
        port: Client port (``0`` picks a free one).
        controller_port: KRaft controller port (``0`` picks a free one).
        host: Interface to listen on.
        heap: JVM heap size.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        controller_port: int = 0,
        host: str = "127.0.0.1",
        heap: str = "768m",
        version: str = KAFKA_VERSION,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.controller_port = controller_port or free_port(host)
        self.heap = heap
        self.version = version
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's own log."""
        return self.data_dir / "broker.log"

    @property
    def credentials_file(self) -> Path:
        """The passwords of the broker's principals: its admin's, its controller's, every stage's and client's."""
        return self.data_dir / "credentials.json"

    def _credentials(self) -> dict[str, str]:
        if self.credentials_file.exists():
            stored: dict[str, str] = json.loads(self.credentials_file.read_text())
            return stored
        fresh = {ADMIN_PRINCIPAL: secrets.token_hex(24), _CONTROLLER_PRINCIPAL: secrets.token_hex(24)}
        if (self.data_dir / "logs" / "meta.properties").exists():
            # Storage formatted before the broker required authentication: it has no admin
            # user, and nobody could add one. Local data is disposable; start it afresh.
            log.warning("Kafka storage in %s predates authentication; formatting it anew", self.data_dir)
            shutil.rmtree(self.data_dir / "logs")
        _write_private(self.credentials_file, json.dumps(fresh))
        return fresh

    @property
    def admin_password(self) -> str:
        """The admin principal's SCRAM password (generated with the storage)."""
        return self._credentials()[ADMIN_PRINCIPAL]

    def password(self, principal: str) -> str:
        """The SCRAM password of ``principal`` on this broker, generated on first use.

        Kept with the broker's data, not with whoever asks: users live in the cluster's
        metadata, so two stacks sharing one broker must share the passwords too.
        """
        known = self._credentials()
        if principal not in known:
            known[principal] = secrets.token_urlsafe(24)
            _write_private(self.credentials_file, json.dumps(known, indent=2, sort_keys=True))
        return known[principal]

    def principal_settings(self, principal: str, topic_prefix: str = "airlock.") -> KafkaSettings:
        """Connection settings of one of this broker's principals (made on first use)."""
        return self.settings_for(principal, self.password(principal), topic_prefix)

    def admin_settings(self, topic_prefix: str = "airlock.") -> KafkaSettings:
        """Connection settings of the admin principal (provisioning, tests' observers)."""
        return self.settings_for(ADMIN_PRINCIPAL, self.admin_password, topic_prefix)

    def settings_for(self, username: str, password: str, topic_prefix: str = "airlock.") -> KafkaSettings:
        """Connection settings of a SCRAM principal of this broker."""
        return KafkaSettings(
            bootstrap=self.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=username,
            sasl_password=SecretStr(password),
            topic_prefix=topic_prefix,
        )

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secrets = self._credentials()
        admin, controller = secrets[ADMIN_PRINCIPAL], secrets[_CONTROLLER_PRINCIPAL]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"CLIENT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"CLIENT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            # Every listener authenticates: clients and the broker itself with SCRAM (users
            # live in the cluster's metadata), broker-to-controller with PLAIN (KRaft
            # controllers cannot check SCRAM, whose users they would have to read first).
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "CLIENT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.client.scram-sha-512.sasl.jaas.config": (
                f"org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN_PRINCIPAL}" password="{admin}";'
            ),
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{_CONTROLLER_PRINCIPAL}" password="{controller}" '
                f'user_{_CONTROLLER_PRINCIPAL}="{controller}";'
            ),
            # Deny by default: only ACLs (airlock.core.access) grant anything, but to the admin.
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_PRINCIPAL};User:{_CONTROLLER_PRINCIPAL}",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "60000",
        }
        config = self.data_dir / "server.properties"
        _write_private(config, "".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(
            _LOG4J2.format(log_file=self.log_file, level=os.environ.get("AIRLOCK_KAFKA_LOG_LEVEL", "WARN"))
        )
        return config

    def _classpath(self, libs: Path) -> str:
        return str(libs / "*")

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        """Resolve jars if needed, format storage if new, start, and wait until ready.

        Raises:
            MissingPrerequisite: Java or Maven missing.
            RuntimeError: The broker exited or did not become ready in time.
        """
        libs = ensure_jars(self.version)
        config = self._write_config()
        java = _java()
        jvm = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            self._classpath(libs),
        ]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            admin = f"SCRAM-SHA-512=[name={ADMIN_PRINCIPAL},password={self.admin_password}]"
            formatted = subprocess.run(
                # `=` form: a random id may start with "-", which argparse would take for an option.
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(config),
                    # The admin's SCRAM user is written with the storage: nobody can add users
                    # to a cluster that has none and lets no one in unauthenticated.
                    "--add-scram",
                    admin,
                ],
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise RuntimeError(f"formatting Kafka storage failed: {formatted.stderr[-2000:]}")
        console = open(self.data_dir / "console.log", "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(config)],
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        console.close()
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.data_dir / "console.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Kafka exited with code {self.process.returncode}:\n{tail}")
            if _metadata_ok(self.admin_settings()):
                return
            time.sleep(0.3)
        raise RuntimeError(f"Kafka did not become ready on {self.bootstrap} within {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker: SIGTERM (controlled shutdown), SIGKILL if it lingers.

        Returns:
            Whether it shut down cleanly. A KRaft broker with clients mid-transaction can take
            well over 30 s; killed instead, the single replica restarts from an unclean state,
            where Kafka itself no longer vouches for what it acknowledged last.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return True
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("Kafka did not stop within %.0fs of SIGTERM; killing it", timeout_s)
            process.kill()
            process.wait(10)
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the broker (fault tests)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _metadata_ok(kafka: KafkaSettings) -> bool:
    """True when the broker answers the admin's metadata request (checked from a private loop)."""
    outcome: list[bool] = []

    def probe() -> None:
        async def check() -> bool:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(**{**kafka.client_args(), "request_timeout_ms": 3000})
            try:
                await admin.start()
                await admin.list_topics()
                return True
            except Exception:
                return False
            finally:
                await admin.close()

        outcome.append(asyncio.run(check()))

    try:
        with socket.create_connection(tuple(kafka.bootstrap.rsplit(":", 1)), timeout=1):  # type: ignore[arg-type]
            pass
    except OSError:
        return False
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(10)
    return bool(outcome and outcome[0])
