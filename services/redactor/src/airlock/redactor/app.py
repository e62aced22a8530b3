"""Redactor wiring: ``faststream run airlock.redactor.app:app``."""

from __future__ import annotations

import asyncio

from airlock.core import logs
from airlock.core.anomaly import AnomalySettings
from airlock.core.authenticity import MeshSettings
from airlock.core.crypto import KeyRing, WatchedKeyRing, load_key_ring
from airlock.core.runtime import StageRuntime
from airlock.core.settings import load
from airlock.core.stage import StageContext
from airlock.core.telemetry import Telemetry
from airlock.core.topics import Topics
from airlock.redactor.handlers import RedactHandler, RestoreHandler, detector_thread
from airlock.redactor.observability import redactor_observer
from airlock.redactor.redaction import build_redactor
from airlock.redactor.settings import RedactorSettings

SERVICE = "redactor"


def vault_key_ring(settings: RedactorSettings) -> KeyRing | WatchedKeyRing:
    """The key ring sealing placeholder maps: inline (fixed), or a file read again when it changes."""
    inline = settings.vault_keys.get_secret_value() if settings.vault_keys else None
    if inline or settings.vault_keys_file is None:
        return load_key_ring(inline, None, variable="AIRLOCK_REDACTOR_VAULT_KEYS")
    return WatchedKeyRing(settings.vault_keys_file, variable="AIRLOCK_REDACTOR_VAULT_KEYS")


def create_runtime(settings: RedactorSettings | None = None) -> StageRuntime:
    """Build the redactor stage: masking on the accepted topic, restoring on completions."""
    settings = settings or load(RedactorSettings)
    ring = vault_key_ring(settings)
    topics = Topics(settings.kafka.topic_prefix)
    context = StageContext(SERVICE, topics)
    telemetry = Telemetry.from_env(SERVICE)
    anomalies = load(AnomalySettings)
    redactor = build_redactor(settings)
    detector = detector_thread()  # one spaCy, one thread, for both directions
    redact = RedactHandler(
        context,
        redactor,
        ring,
        max_prompt_chars=settings.max_prompt_chars,
        large_request_bytes=2 * settings.chunk_chars,
        detection_budget_s=settings.detection_budget_s,
        executor=detector,
        tracer=telemetry.tracer,
        anomalies=anomalies,
    )
    restore = RestoreHandler(
        context,
        ring,
        redactor,
        executor=detector,
        tracer=telemetry.tracer,
        anomalies=anomalies,
        large_answer_bytes=2 * settings.chunk_chars,
    )
    runtime = StageRuntime(
        SERVICE,
        {topics.accepted: redact, topics.completions: restore},
        context=context,
        kafka=settings.kafka,
        settings=settings,
        telemetry=telemetry,
        mesh=load(MeshSettings),
    )
    runtime.observe(redactor_observer(telemetry.metrics))
    warmed: list[bool] = []

    async def warm_up() -> None:
        # The first detection builds the policy's analyzers; do it before taking traffic,
        # on the detector thread, and report ready only after.
        await asyncio.get_running_loop().run_in_executor(detector, redactor.redact, ["warm-up"])
        warmed.append(True)

    runtime.on_startup(warm_up)
    runtime.readiness_check("engines", lambda: None if warmed else "PII detector warming up")
    if isinstance(ring, WatchedKeyRing):
        # A rotated Secret takes effect without a restart; a broken one is loud and changes nothing.
        watched = ring
        runtime.run_alongside("vault keys", lambda: watched.follow(settings.vault_keys_reload_s))
        runtime.readiness_check("vault keys", lambda: watched.refused)
    return runtime


logs.configure(SERVICE)
runtime = create_runtime()
app = runtime.app
