"""Ingest settings (``AIRLOCK_INGEST_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings


class IngestSettings(StageSettings):
    """Settings of the ingest service.

    Attributes:
        max_prompt_chars: Largest prompt (all messages together) accepted.
        kafka: Connection settings (``AIRLOCK_KAFKA_*``).
        topics: Provisioning settings (``AIRLOCK_TOPICS_*``).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_INGEST_")

    max_prompt_chars: int = Field(default=200_000, ge=1)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
