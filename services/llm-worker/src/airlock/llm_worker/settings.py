"""llm-worker settings (``AIRLOCK_LLM_WORKER_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from airlock.core.settings import KafkaSettings, StageSettings, TopicSettings


class LLMWorkerSettings(StageSettings):
    """Settings of the llm-worker service.

    Attributes:
        routes_file: The routing table (YAML, see :mod:`airlock.llm_worker.routing`). Without
            it, each of ``models`` is served by one target: ``openai_base_url`` with
            ``openai_api_key``.
        provider_keys_dir: Where targets' relative ``api_key_file`` names are found (the
            mounted provider-keys Secret, one file per key).
        prices_file: The price table (YAML, see :mod:`airlock.core.pricing`); built-in list
            prices without it.
        models: Comma-separated logical models approved when there is no routing file.
        openai_api_key: Default provider key (secret); ``OPENAI_API_KEY`` is honoured too.
            Targets that name their own key (``api_key_env``/``api_key_file``) use theirs.
        openai_base_url: Endpoint used without a routing file; ``OPENAI_BASE_URL`` is honoured too.
        call_timeout_s: Timeout of one model call attempt (the request's deadline also bounds it).
        attempts_per_target: Calls to one target for one request before falling back.
        backoff_base_s: Ceiling of the first retry's jittered delay (doubles per retry).
        backoff_max_s: Ceiling of any retry's jittered delay.
        retry_after_max_s: A longer ``Retry-After`` moves the request to the next target
            instead of waiting on this one.
        breaker_failures: Consecutive target faults (5xx, timeouts, connection errors) that
            open a target's circuit.
        breaker_cooldown_s: How long an open circuit refuses calls before one probe.
        pacing_max_wait_s: A longer wait for a paced target moves the request to the next one.
        unavailable_wait_max_s: When every target is unavailable (circuit open, or paced beyond
            ``pacing_max_wait_s``), how long a request waits for one to free up before failing;
            the request's deadline bounds it too. 0 fails such requests at once.
        pacing_burst_s: How far calls may run ahead of a target's steady pace.
        pacing_recovery_s: Ramp from the slowed pace after a 429 back to the full pace.
        max_concurrency: Model calls in flight in one process.
        cache_max_entries: Response-cache entries each replica keeps in memory.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_LLM_WORKER_")

    routes_file: Path | None = None
    provider_keys_dir: Path | None = None
    prices_file: Path | None = None
    models: str = "gpt-4o-mini,gpt-4o,gpt-4.1-mini"
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AIRLOCK_LLM_WORKER_OPENAI_API_KEY", "OPENAI_API_KEY"),
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AIRLOCK_LLM_WORKER_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
    )
    call_timeout_s: float = Field(default=60.0, gt=0)
    attempts_per_target: int = Field(default=3, ge=1, le=20)
    backoff_base_s: float = Field(default=0.25, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    retry_after_max_s: float = Field(default=30.0, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    pacing_max_wait_s: float = Field(default=30.0, ge=0)
    unavailable_wait_max_s: float = Field(default=60.0, ge=0)
    pacing_burst_s: float = Field(default=1.0, ge=0)
    pacing_recovery_s: float = Field(default=30.0, ge=0)
    max_concurrency: int = Field(default=512, ge=1)
    cache_max_entries: int = Field(default=100_000, ge=0)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)

    def model_names(self) -> list[str]:
        """The approved models when there is no routing file."""
        return [name.strip() for name in self.models.split(",") if name.strip()]
