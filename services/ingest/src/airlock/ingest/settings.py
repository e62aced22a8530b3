"""Ingest settings (``AIRLOCK_INGEST_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings


class IngestSettings(StageSettings):
    """Settings of the ingest service.

    Attributes:
        max_prompt_chars: Largest prompt (all messages together) accepted from anyone;
            each client's own limit is in the clients file.
        clients_file: The clients file (a mounted Secret): clients, keys, grants, tenants'
            limits. Required to start; without it nothing could be authenticated.
        clients_reload_s: How often the clients file is checked for changes.
        signature_tolerance_s: How far a signature's timestamp may be from ingest's clock
            (either way); also how long exact replays are remembered.
        idempotency_window_s: How long an accepted request id is remembered: a duplicate
            within it is refused and never reaches the model. At least twice the tolerance.
        noise_window_s: How long a request partition's unauthenticated records are counted
            before their one audit notice is sealed (see :mod:`airlock.ingest.noise`).
        quota_timeout_s: How long a batch may wait for the shared quota state before its
            records are retried (and, after ``max_attempts``, refused: fail closed).
        prices_file: The llm-worker's price table (the same file), to estimate what a request
            may cost before admitting it under a cost budget; built-in list prices without it.
        kafka: Connection settings (``AIRLOCK_KAFKA_*``).
        topics: Provisioning settings (``AIRLOCK_TOPICS_*``).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_INGEST_")

    max_prompt_chars: int = Field(default=200_000, ge=1)
    clients_file: Path | None = None
    clients_reload_s: float = Field(default=5.0, gt=0)
    signature_tolerance_s: float = Field(default=300.0, gt=0)
    idempotency_window_s: float = Field(default=3600.0, gt=0)
    noise_window_s: float = Field(default=600.0, gt=0)
    quota_timeout_s: float = Field(default=10.0, gt=0)
    prices_file: Path | None = None
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)

    @model_validator(mode="after")
    def _windows_fit(self) -> IngestSettings:
        if self.idempotency_window_s < 2 * self.signature_tolerance_s:
            raise ValueError(
                "AIRLOCK_INGEST_IDEMPOTENCY_WINDOW_S must be at least twice AIRLOCK_INGEST_SIGNATURE_TOLERANCE_S"
            )
        return self
