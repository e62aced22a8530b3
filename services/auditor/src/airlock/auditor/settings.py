"""Auditor settings (``AIRLOCK_AUDITOR_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings


class AuditorSettings(StageSettings):
    """Settings of the auditor service.

    Attributes:
        dedupe_window: Event ids remembered per partition to seal each transition once;
            rebuilt from the ledger's tail when a partition is (re)assigned.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_AUDITOR_")

    dedupe_window: int = Field(default=10_000, ge=0)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
