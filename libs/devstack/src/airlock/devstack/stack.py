"""The whole local stack in one object: broker, fake OpenAI, topics, keys, services.

``airlock dev up`` and the integration tests both build on :class:`LocalStack`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from airlock.client import AirlockClient, ClientCredentials
from airlock.core import access
from airlock.core.admin import apply_access, provision, provision_blocking
from airlock.core.authenticity import DEAD_LETTER_RING, StageSigner, Trust
from airlock.core.crypto import KeyRing
from airlock.core.deadletters import DeadLetterOpener
from airlock.core.settings import KafkaSettings, TopicSettings
from airlock.core.topics import Topics
from airlock.core.topology import STAGES
from airlock.devstack.kafka import LocalKafka, free_port
from airlock.devstack.mesh import SERVICES, FakeOpenAIProcess, Mesh, wait_ready

#: Not a secret: the fake server accepts any bearer token.
FAKE_API_KEY = "sk-airlock-fake"


def write_secret(path: Path, content: str) -> Path:
    """Write a file only the current user can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return path


def ensure_vault_keys(state: Path) -> Path:
    """The dev stack's redactor key ring, generated on first use."""
    path = state / "secrets" / "vault-keys.json"
    if not path.exists():
        write_secret(path, KeyRing.generate("dev-1").to_json())
    return path


def ensure_signing_keys(state: Path) -> Path:
    """The dev stack's ledger signing key ring (Ed25519 seeds), generated on first use."""
    path = state / "secrets" / "ledger-signing-keys.json"
    if not path.exists():
        write_secret(path, KeyRing.generate("dev-sig-1").to_json())
    return path


def mesh_keys_dir(state: Path) -> Path:
    """Each stage's signing key ring (``<stage>.json``) and the mesh's trust file (``trust.json``)."""
    return state / "secrets" / "mesh"


def ensure_mesh_keys(state: Path) -> Path:
    """Every stage's Ed25519 signing ring and the trust file of their public keys, made on first use.

    Returns:
        The trust file.
    """
    from airlock.core.authenticity import write_mesh_keys

    return write_mesh_keys(mesh_keys_dir(state))


def witness_dir(state: Path) -> Path:
    """The dev stack's witness directory (a stand-in for write-once object storage)."""
    return state / "witness"


#: The dev and test client: `airlock send`, the `airlock dev up` demo and the tests sign as it.
DEV_CLIENT_ID = "airlock-cli"


def clients_file_path(state: Path) -> Path:
    """Where the dev stack keeps ingest's clients file."""
    return state / "secrets" / "clients.yaml"


def ensure_clients_file(state: Path) -> Path:
    """The dev stack's clients file, generated on first use.

    It declares every tenant (no limits) and one client, :data:`DEV_CLIENT_ID`, allowed any
    tenant, model, use case and reply topic. Add restricted clients and tenant limits with
    ``airlock clients``; ingest reloads the file when it changes.
    """
    from airlock.ingest.clients import ANY, ClientPolicy, ClientsFile, Limits, new_key

    path = clients_file_path(state)
    if not path.exists():
        key_id, key = new_key(DEV_CLIENT_ID)
        policy = ClientPolicy(
            keys={key_id: key},
            tenants=[ANY],
            models=[ANY],
            use_cases=[ANY],
            reply_topics=[],
            max_prompt_chars=200_000,
            max_tokens=1_000_000,
            description="dev and test client: airlock send, the demo, the integration tests",
        )
        ClientsFile(tenants={ANY: Limits()}, clients={DEV_CLIENT_ID: policy}).save(path)
    return path


def dev_credentials(state: Path, client_id: str = DEV_CLIENT_ID) -> ClientCredentials:
    """Credentials of ``client_id`` (its newest valid key) from the dev stack's clients file.

    Raises:
        LookupError: The client is not in the file, or has no valid key.
    """
    from airlock.ingest.clients import ClientsFile

    clients = ClientsFile.load(ensure_clients_file(state))
    policy = clients.clients.get(client_id)
    newest = policy.newest_key(datetime.now(UTC)) if policy else None
    if newest is None:
        raise LookupError(f"no valid key for client {client_id!r} in {clients_file_path(state)}")
    key_id, key = newest
    return ClientCredentials(client_id=client_id, key_id=key_id, secret=key.secret)


def local_principal_settings(settings: KafkaSettings, principal: str | None = None) -> KafkaSettings | None:
    """``settings`` logged in as a principal of the local stack in ``state_dir()``, if one runs there.

    Args:
        settings: The environment's settings (bootstrap, prefix).
        principal: A stage, client or audit-reader principal; ``None`` for the admin.
    """
    from airlock.devstack.kafka import ADMIN_PRINCIPAL
    from airlock.devstack.paths import state_dir

    broker = LocalKafka(state_dir(create=False) / "kafka")
    if not broker.credentials_file.exists():
        return None
    name = principal or ADMIN_PRINCIPAL
    return settings.as_principal(name, broker.password(name))


def ensure_credentials_file(state: Path, client_id: str = DEV_CLIENT_ID) -> Path:
    """A credentials file for ``client_id`` (what ``AIRLOCK_CLIENT_CREDENTIALS_FILE`` points at)."""
    path = state / "secrets" / f"{client_id}.credentials.json"
    return write_secret(path, dev_credentials(state, client_id).to_json())


@dataclass
class LocalStack:
    """Broker + fake OpenAI + provisioned topics + the four services, all on loopback.

    Args:
        state: Directory for broker data, logs and dev keys.
        bootstrap: ``host:port`` the broker listens on (``None``: a free port).
        topic_prefix: Prefix of every topic (tests use a unique one).
        real_openai: Use ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``) instead of the fake.
        partitions: Partitions of the pipeline topics.
        latency_ms: Fake model latency.
        extra_env: More environment for the services.
    """

    state: Path
    bootstrap: str | None = None
    topic_prefix: str = "airlock."
    real_openai: bool = False
    partitions: int = 6
    latency_ms: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)
    kafka: LocalKafka | None = None
    fake: FakeOpenAIProcess | None = None
    mesh: Mesh | None = None

    @property
    def kafka_settings(self) -> KafkaSettings:
        """The admin principal's settings (provisioning; tests observing every topic)."""
        assert self.kafka is not None
        return self.kafka.admin_settings(self.topic_prefix)

    def principal_settings(self, principal: str) -> KafkaSettings:
        """Settings of one of this stack's principals (a stage, the audit reader, a client)."""
        assert self.kafka is not None
        return self.kafka.principal_settings(principal, self.topic_prefix)

    def client_kafka_settings(self, client_id: str = DEV_CLIENT_ID) -> KafkaSettings:
        """Settings of a client's own principal, provisioned (reply topic, user, ACLs) on first use."""
        self.provision_client(client_id)
        return self.principal_settings(access.client_principal(client_id))

    def provision_client(self, client_id: str) -> None:
        """Give ``client_id`` its reply topic, Kafka user and ACLs (idempotent)."""
        assert self.kafka is not None
        principal = access.client_principal(client_id)
        provision_blocking(
            self.kafka_settings,
            [self.topics.reply_spec(client_id, self.topic_settings)],
            users={principal: self.kafka.password(principal)},
            acls=access.client_acls(client_id, self.topics),
        )

    @property
    def reply_topics(self) -> list[str]:
        """The reply topic of every client in the clients file."""
        from airlock.ingest.clients import ClientsFile

        return [self.topics.reply_topic(c) for c in sorted(ClientsFile.load(self.clients_file).clients)]

    @property
    def topic_settings(self) -> TopicSettings:
        """Partitions and retention of this stack's topics."""
        return TopicSettings(partitions=self.partitions)

    @property
    def topics(self) -> Topics:
        """Topic names of this stack."""
        return Topics(self.topic_prefix)

    def start_broker(self) -> LocalKafka:
        """Start the broker (reusing its data directory)."""
        port = int(self.bootstrap.rsplit(":", 1)[1]) if self.bootstrap else 0
        host = self.bootstrap.rsplit(":", 1)[0] if self.bootstrap else "127.0.0.1"
        self.kafka = LocalKafka(self.state / "kafka", host=host, port=port)
        return self.kafka.start()

    def start_fake(self) -> FakeOpenAIProcess | None:
        """Start the fake OpenAI server unless the real API is used."""
        if self.real_openai:
            return None
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.fake = FakeOpenAIProcess(free_port(), logs / "fake-openai.log", latency_ms=self.latency_ms)
        return self.fake.start()

    async def provision(self) -> list[str]:
        """Create the topics, every principal and its ACLs, and each known client's reply topic (idempotent)."""
        from airlock.ingest.clients import ClientsFile

        clients = sorted(ClientsFile.load(self.clients_file).clients)
        specs = self.topics.specs(self.topic_settings)
        specs += [self.topics.reply_spec(client_id, self.topic_settings) for client_id in clients]
        created = await provision(self.kafka_settings, specs)
        assert self.kafka is not None
        users = {principal: self.kafka.password(principal) for principal in access.principals(clients)}
        await apply_access(self.kafka_settings, users, access.deployment_acls(self.topics, clients))
        return created

    def service_env(self) -> dict[str, str]:
        """Environment shared by the services."""
        assert self.kafka is not None
        env = {
            "AIRLOCK_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "AIRLOCK_KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "AIRLOCK_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "AIRLOCK_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "AIRLOCK_REDACTOR_VAULT_KEYS_FILE": str(ensure_vault_keys(self.state)),
            "AIRLOCK_REDACTOR_VAULT_KEYS_RELOAD_S": "1",
            "AIRLOCK_INGEST_CLIENTS_FILE": str(ensure_clients_file(self.state)),
            "AIRLOCK_INGEST_CLIENTS_RELOAD_S": "1",
            # Noise notices every 5 s instead of 10 minutes, so tests (and the demo) see them.
            "AIRLOCK_INGEST_NOISE_WINDOW_S": "5",
            "AIRLOCK_TOPICS_PARTITIONS": str(self.partitions),
            "AIRLOCK_AUDITOR_SIGNING_KEYS_FILE": str(ensure_signing_keys(self.state)),
            "AIRLOCK_AUDITOR_WITNESS_DIR": str(witness_dir(self.state)),
            "AIRLOCK_MESH_TRUST_FILE": str(ensure_mesh_keys(self.state)),
        }
        if self.fake is not None:
            env["AIRLOCK_LLM_WORKER_OPENAI_BASE_URL"] = self.fake.base_url
            env["AIRLOCK_LLM_WORKER_OPENAI_API_KEY"] = FAKE_API_KEY
        return {**env, **self.extra_env}

    def stage_signer(self, service: str) -> StageSigner:
        """Signs records as ``service`` does (tests that play a stage)."""
        ensure_mesh_keys(self.state)
        return StageSigner(service, KeyRing.from_json((mesh_keys_dir(self.state) / f"{service}.json").read_text()))

    def stage_env(self, service: str) -> dict[str, str]:
        """The environment that makes ``service`` log in as its own principal and sign as itself."""
        assert self.kafka is not None
        principal = access.stage_principal(service)
        ensure_mesh_keys(self.state)
        return {
            "AIRLOCK_KAFKA_SASL_USERNAME": principal,
            "AIRLOCK_KAFKA_SASL_PASSWORD": self.kafka.password(principal),
            "AIRLOCK_MESH_SIGNING_KEYS_FILE": str(mesh_keys_dir(self.state) / f"{service}.json"),
        }

    async def start_services(self, scale: dict[str, int] | None = None, timeout_s: float = 180.0) -> Mesh:
        """Start every service (``scale`` replicas each, default 1) and wait until ready."""
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        counts = {name: (scale or {}).get(name, 1) for name in SERVICES}
        self.mesh = Mesh(self.service_env(), logs, {spec.service: self.stage_env(spec.service) for spec in STAGES})
        for name, count in counts.items():
            self.mesh.start(name, count)
        await wait_ready(self.kafka_settings, self.mesh, timeout_s)
        return self.mesh

    @property
    def clients_file(self) -> Path:
        """Ingest's clients file (edit it with :class:`~airlock.ingest.clients.ClientsFile`)."""
        return ensure_clients_file(self.state)

    def credentials(self, client_id: str = DEV_CLIENT_ID) -> ClientCredentials:
        """Signing credentials of a client in this stack's clients file."""
        return dev_credentials(self.state, client_id)

    def trust(self) -> Trust:
        """The mesh's public keys: what clients verify replies with."""
        return Trust.from_json(ensure_mesh_keys(self.state).read_text())

    def dead_letters(self) -> DeadLetterOpener:
        """Opens this stack's sealed dead letters (the operators' ring; tests that inspect the DLQ)."""
        ensure_mesh_keys(self.state)
        return DeadLetterOpener(KeyRing.from_json((mesh_keys_dir(self.state) / DEAD_LETTER_RING).read_text()))

    def client(
        self,
        client_id: str = DEV_CLIENT_ID,
        *,
        reply_to: str | None = None,
        credentials: ClientCredentials | None = None,
    ) -> AirlockClient:
        """An SDK client of this stack that signs as ``client_id`` (use ``async with``).

        Args:
            client_id: The client, logged in as its own principal.
            reply_to: Its reply topic (default its own).
            credentials: Sign with these (default: the client's current key in the clients file).
        """
        return AirlockClient(
            self.client_kafka_settings(client_id),
            client_id,
            reply_to=reply_to,
            credentials=credentials or self.credentials(client_id),
            trust=self.trust(),
        )

    def stop(self) -> None:
        """Stop services, the fake server and the broker, in that order (each even if one before failed)."""
        try:
            if self.mesh is not None:
                self.mesh.stop()
        finally:
            try:
                if self.fake is not None:
                    self.fake.stop()
            finally:
                if self.kafka is not None:
                    self.kafka.stop()
