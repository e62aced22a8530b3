"""llm-worker wiring: ``faststream run airlock.llm_worker.app:app``."""

from __future__ import annotations

import openai

from airlock.core import logs
from airlock.core.runtime import StageRuntime
from airlock.core.settings import SettingsError, load
from airlock.core.stage import StageContext
from airlock.core.topics import Topics
from airlock.llm_worker.handlers import CompletionHandler
from airlock.llm_worker.settings import LLMWorkerSettings

SERVICE = "llm-worker"


def openai_client(settings: LLMWorkerSettings) -> openai.AsyncOpenAI:
    """The provider client; the key comes only from the environment or a mounted Secret."""
    if settings.openai_api_key is None:
        raise SettingsError("AIRLOCK_LLM_WORKER_OPENAI_API_KEY (or OPENAI_API_KEY) must be set")
    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=settings.call_retries,
        timeout=settings.call_timeout_s,
    )


def create_runtime(settings: LLMWorkerSettings | None = None) -> StageRuntime:
    """Build the llm-worker stage."""
    settings = settings or load(LLMWorkerSettings)
    topics = Topics(settings.kafka.topic_prefix)
    context = StageContext(SERVICE, topics)
    handler = CompletionHandler(
        context,
        openai_client(settings),
        timeout_s=settings.call_timeout_s,
        max_concurrency=settings.max_concurrency,
    )
    return StageRuntime(
        SERVICE,
        {topics.redacted: handler},
        context=context,
        kafka=settings.kafka,
        settings=settings,
        max_in_flight=settings.max_concurrency * 4,
    )


logs.configure(SERVICE)
runtime = create_runtime()
app = runtime.app
