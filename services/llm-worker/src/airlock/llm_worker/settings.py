"""llm-worker settings (``AIRLOCK_LLM_WORKER_*``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings


class LLMWorkerSettings(StageSettings):
    """Settings of the llm-worker service.

    Attributes:
        openai_api_key: Provider API key (secret); ``OPENAI_API_KEY`` is honoured too.
        openai_base_url: Any OpenAI-compatible endpoint; ``OPENAI_BASE_URL`` is honoured too.
        call_timeout_s: Timeout of one model call attempt.
        call_retries: Retries of a call by the OpenAI client (429, 5xx, connection errors).
        max_concurrency: Model calls in flight in one process.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_LLM_WORKER_")

    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AIRLOCK_LLM_WORKER_OPENAI_API_KEY", "OPENAI_API_KEY"),
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AIRLOCK_LLM_WORKER_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
    )
    call_timeout_s: float = Field(default=60.0, gt=0)
    call_retries: int = Field(default=2, ge=0)
    max_concurrency: int = Field(default=256, ge=1)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
