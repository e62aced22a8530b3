"""Auditor settings (``AIRLOCK_AUDITOR_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings


class AuditorSettings(StageSettings):
    """Settings of the auditor service.

    Attributes:
        dedupe_window: Event ids remembered per partition to seal each transition once;
            rebuilt from the ledger's tail when a partition is (re)assigned.
        signing_keys: The Ed25519 key ring signing checkpoints, as JSON (secret):
            ``{"active": id, "keys": {id: base64 32-byte seed}}``.
        signing_keys_file: A file holding that ring (a mounted Secret); used when
            ``signing_keys`` is unset.
        checkpoint_every: Sign a checkpoint whenever a partition's chain reaches a multiple
            of this many records.
        checkpoint_interval_s: …and whenever a sealed record has waited this long for one,
            traffic or not. Together they bound the newest records no checkpoint vouches
            for yet.
        witness_dir: Where checkpoints are also written, outside Kafka, one file each
            (meant for write-once object storage). Unset: checkpoints go to Kafka only and
            truncation of the ledger's tail cannot be proven.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_AUDITOR_")

    dedupe_window: int = Field(default=10_000, ge=0)
    signing_keys: SecretStr | None = None
    signing_keys_file: Path | None = None
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_s: float = Field(default=10.0, gt=0)
    witness_dir: Path | None = None
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
