"""Typed, frozen settings read from ``AIRLOCK_*`` environment variables.

Each section is its own settings class with its own prefix (``AIRLOCK_KAFKA_``,
``AIRLOCK_TOPICS_``, ``AIRLOCK_<SERVICE>_``), so every variable is spelled
``AIRLOCK_<SECTION>_<NAME>``. Services compose the sections they need.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_MS = 24 * 3600 * 1000


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


class AirlockSettings(BaseSettings):
    """Base of every settings section: frozen, from the environment, no unknown fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_")


class KafkaSettings(AirlockSettings):
    """How to reach Kafka (``AIRLOCK_KAFKA_*``).

    Attributes:
        bootstrap: Comma-separated ``host:port`` list.
        security_protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
        sasl_mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only).
        sasl_username: SASL user.
        sasl_password: SASL password (secret).
        ssl_cafile: CA bundle for TLS.
        topic_prefix: Prepended to every topic name.
        request_timeout_ms: Timeout of one Kafka request.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_KAFKA_")

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    topic_prefix: str = Field(default="airlock.", pattern=r"^[A-Za-z0-9._-]*$")
    request_timeout_ms: int = Field(default=30_000, ge=1_000)

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
        args: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            args["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        if self.security_protocol.startswith("SASL"):
            args["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            args["sasl_plain_username"] = self.sasl_username
            args["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return args

    def librdkafka_config(self) -> dict[str, str | int | float | bool]:
        """The same connection, as librdkafka (confluent-kafka) takes it."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.ssl_cafile and self.security_protocol in ("SSL", "SASL_SSL"):
            config["ssl.ca.location"] = self.ssl_cafile
        if self.security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.sasl_mechanism or "PLAIN"
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        return config

    def as_principal(self, username: str, password: str) -> KafkaSettings:
        """These settings with another SASL user (SCRAM-SHA-512 unless a mechanism is set)."""
        protocol = self.security_protocol if self.security_protocol.startswith("SASL") else "SASL_PLAINTEXT"
        return self.model_copy(
            update={
                "security_protocol": protocol,
                "sasl_mechanism": self.sasl_mechanism or "SCRAM-SHA-512",
                "sasl_username": username,
                "sasl_password": SecretStr(password),
            }
        )

    def environment(self) -> dict[str, str]:
        """The ``AIRLOCK_KAFKA_*`` variables that reproduce these settings in another process."""
        env = {
            "AIRLOCK_KAFKA_BOOTSTRAP": self.bootstrap,
            "AIRLOCK_KAFKA_SECURITY_PROTOCOL": self.security_protocol,
            "AIRLOCK_KAFKA_TOPIC_PREFIX": self.topic_prefix,
        }
        if self.sasl_mechanism:
            env["AIRLOCK_KAFKA_SASL_MECHANISM"] = self.sasl_mechanism
        if self.sasl_username:
            env["AIRLOCK_KAFKA_SASL_USERNAME"] = self.sasl_username
        if self.sasl_password:
            env["AIRLOCK_KAFKA_SASL_PASSWORD"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            env["AIRLOCK_KAFKA_SSL_CAFILE"] = self.ssl_cafile
        return env

    def faststream_security(self) -> Any:
        """The same connection security, as FastStream's broker takes it."""
        from faststream.security import (
            BaseSecurity,
            SASLPlaintext,
            SASLScram256,
            SASLScram512,
        )

        if self.security_protocol == "PLAINTEXT":
            return None
        ssl_context = self.client_args().get("ssl_context")
        if self.security_protocol == "SSL":
            return BaseSecurity(ssl_context=ssl_context)
        username = self.sasl_username or ""
        password = self.sasl_password.get_secret_value() if self.sasl_password else ""
        kinds = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
        kind = kinds.get(self.sasl_mechanism or "PLAIN", SASLPlaintext)
        return kind(username=username, password=password, ssl_context=ssl_context)


class TopicSettings(AirlockSettings):
    """Partitions and retention used when provisioning topics (``AIRLOCK_TOPICS_*``).

    Attributes:
        partitions: Partitions of the pipeline topics; bounds the replicas of each stage.
        replication_factor: Replicas of every topic (1 for the local single-node broker).
        transit_retention_ms: Retention of the pipeline topics (requests to responses).
        dlq_retention_ms: Retention of the dead-letter topic (a week: letters are sealed, but
            refused prompts need not outlive an operator's look at them).
        ledger_retention_ms: Retention of the audit, ledger and checkpoint topics; -1 keeps
            them forever.
        usage_retention_ms: Retention of the usage topic; longer than any budget window.
        llm_cache_retention_ms: Retention of the llm-worker's response cache topic; at least
            the longest cache TTL.
        ingest_seen_retention_ms: Retention of ingest's seen-requests topic; at least ingest's
            idempotency window.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_TOPICS_")

    partitions: int = Field(default=6, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    transit_retention_ms: int = Field(default=7 * DAY_MS, ge=-1)
    dlq_retention_ms: int = Field(default=7 * DAY_MS, ge=-1)
    ledger_retention_ms: int = Field(default=-1, ge=-1)
    usage_retention_ms: int = Field(default=40 * DAY_MS, ge=-1)
    llm_cache_retention_ms: int = Field(default=DAY_MS, ge=-1)
    ingest_seen_retention_ms: int = Field(default=DAY_MS, ge=-1)


class StageSettings(AirlockSettings):
    """Knobs of the stage runtime, shared by every service under its own prefix.

    Attributes:
        max_batch: Most records taken from the input per poll.
        poll_timeout_ms: How long one poll waits for records.
        max_attempts: Attempts at a record whose processing fails transiently before the
            request is failed with an audited error.
        retry_backoff_ms: First retry delay; doubles per attempt.
        retry_backoff_max_ms: Cap on the retry delay.
        max_message_bytes: Largest input record accepted; larger ones go to the DLQ.
        request_deadline_s: Deadline given to a request at ingest.
        shutdown_grace_s: On shutdown or revocation, how long in-flight work may take to
            commit before it is dropped (uncommitted, so redone by the next owner).
    """

    max_batch: int = Field(default=256, ge=1)
    poll_timeout_ms: int = Field(default=20, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_ms: int = Field(default=200, ge=0)
    retry_backoff_max_ms: int = Field(default=5_000, ge=0)
    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    request_deadline_s: float = Field(default=300.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, ge=0)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _env_name(model: type[BaseSettings], field: str) -> str:
    prefix = str(model.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def _settings_classes() -> dict[str, type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    stack: list[type[BaseSettings]] = [AirlockSettings]
    while stack:
        cls = stack.pop()
        found[cls.__name__] = cls
        stack.extend(cls.__subclasses__())
    return found


def describe(error: ValidationError) -> str:
    """Turn a settings validation error into lines naming the environment variables."""
    owner = _settings_classes().get(error.title)
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        name = _env_name(owner, field) if owner else field
        lines.append(f"{name}: {item['msg']}")
    return "invalid settings: " + "; ".join(lines)


def load(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Instantiate a settings class, turning validation errors into :class:`SettingsError`.

    Args:
        cls: The settings class.
        **overrides: Values that win over the environment (tests, CLI flags).

    Raises:
        SettingsError: With one ``AIRLOCK_…: reason`` entry per bad variable.
    """
    try:
        return cls(**overrides)
    except ValidationError as error:
        raise SettingsError(describe(error)) from None
