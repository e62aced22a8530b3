"""llm-worker wiring: ``faststream run airlock.llm_worker.app:app``."""

from __future__ import annotations

from airlock.core import logs
from airlock.core.admin import partition_counts
from airlock.core.authenticity import MeshSettings
from airlock.core.runtime import StageRuntime
from airlock.core.settings import load
from airlock.core.stage import StageContext
from airlock.core.telemetry import Telemetry
from airlock.core.topics import Topics
from airlock.llm_worker.observability import BreakerCollector, traced_call, worker_observer
from airlock.llm_worker.router import Call
from airlock.llm_worker.settings import LLMWorkerSettings
from airlock.llm_worker.worker import build_worker, routing_table, tune_gc

SERVICE = "llm-worker"


class MembershipShare:
    """A replica's share of the fleet's provider limits: owned input partitions / all of them.

    Kafka keeps the group's assignment disjoint and complete, so the replicas' shares add
    up to one and follow scaling and rebalances without any coordination of their own.
    """

    def __init__(self) -> None:
        self.runtime: StageRuntime | None = None
        self.partitions = 1

    def __call__(self) -> float:
        """The current share (0 < share ≤ 1)."""
        owned = len(self.runtime.assigned) if self.runtime is not None else self.partitions
        # At least one partition's worth: a replica between assignments still paces sanely.
        return min(1.0, max(1, owned) / self.partitions)


def create_runtime(settings: LLMWorkerSettings | None = None) -> StageRuntime:
    """Build the llm-worker stage."""
    settings = settings or load(LLMWorkerSettings)
    topics = Topics(settings.kafka.topic_prefix)
    context = StageContext(SERVICE, topics)
    share = MembershipShare()
    telemetry = Telemetry.from_env(SERVICE)

    def trace_calls(call: Call) -> Call:
        return traced_call(call, telemetry.tracer)

    # The side channels check and sign with the stage's keys (loaded by the runtime on start).
    worker = build_worker(
        settings,
        context,
        share,
        wrap_call=trace_calls if telemetry.tracing else None,
        door=lambda: runtime.door(),
        signer=lambda: runtime.signer,
    )
    runtime = StageRuntime(
        SERVICE,
        {topics.redacted: worker.handler},
        context=context,
        kafka=settings.kafka,
        settings=settings,
        max_in_flight=settings.max_concurrency * 2,
        telemetry=telemetry,
        mesh=load(MeshSettings),
    )
    runtime.observe(worker_observer(telemetry.metrics))
    targets = [target.name for target in routing_table(settings).targets()]
    telemetry.metrics.register(BreakerCollector(worker.router, targets))
    side_channels: list[bool] = []
    runtime.readiness_check("side_channels", lambda: None if side_channels else "pacing and cache feeds starting")

    async def start_side_channels() -> None:
        counts = await partition_counts(settings.kafka, [topics.redacted])
        share.partitions = max(1, counts.get(topics.redacted, settings.topics.partitions))
        share.runtime = runtime
        await worker.start()
        side_channels.append(True)
        tune_gc()

    runtime.on_startup(start_side_channels)
    runtime.app.on_shutdown(worker.stop)
    return runtime


logs.configure(SERVICE)
runtime = create_runtime()
app = runtime.app
