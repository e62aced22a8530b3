"""Suite ``llm-worker``: one llm-worker process against the fake model answering in 300 ms.

What is measured, precisely:

* **added latency (in-process)** — the production handler (built by the same
  :func:`~airlock.llm_worker.worker.build_worker` as the service: routing, parameter
  governance, pacing, breaker, the real ``openai`` client on aiohttp, usage/cost, outcome
  building) is fed redacted envelopes open-loop at 300 requests/s and at 50 requests/s
  (context: the same process far from busy). For each request: time from its scheduled
  arrival to its finished outcome, minus the fake's configured 300 ms. No Kafka.
* **bare HTTP call** — just before, the same request posted to the same fake at the same
  rate with aiohttp alone (no worker, no SDK), minus 300 ms: the loopback round trip and
  the fake server's own work, which share these two cores and which no client can go below.
* **worker's own added latency** (judged against the targets, at 300 requests/s) — the
  added latency minus the bare call's, percentile by percentile: what the worker, the
  openai SDK included, adds beyond the fake's delay.
* **throughput (through Kafka)** — a real broker, the topics, N redacted envelopes
  preloaded on the input topic, then one ``faststream run airlock.llm_worker.app:app``
  process drains them; the rate is taken over the middle 80 % of the committed completions
  (read back with ``read_committed``), so start-up and the tail are excluded.
* **worker code** (context) — the handler's time minus the time spent in the SDK call:
  routing, governance, pacing, envelope parsing and building, usage, audit, and any wait for
  a concurrency slot or for the event loop. **CPU per request** — the worker's CPU time per request, in
  process and (for the service process) through Kafka: the machine is shared, so wall-clock
  figures move with everybody else's load while these do much less.
* **end-to-end latency through Kafka** (no target; for context) — the same process fed
  open-loop at 300 requests/s: publish → committed completion visible to a reader, minus
  300 ms. It adds two Kafka hops and the transaction commit to the figure above.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer, ConsumerRecord

from airlock.core import headers as h
from airlock.core.authenticity import StageSigner
from airlock.core.lifecycle import State
from airlock.core.models import ChatMessage, ChatParams, Envelope, LLMRequest, RedactionSummary, SealedVault, utcnow
from airlock.core.settings import KafkaSettings
from airlock.core.stage import Incoming, StageContext
from airlock.core.topics import Topics
from airlock.devstack.bench import Measurement, StolenCpu, load
from airlock.devstack.bench.load import percentile
from airlock.devstack.bench.watch import TopicFollower
from airlock.devstack.kafka import free_port
from airlock.devstack.mesh import FakeOpenAIProcess, Mesh, wait_ready
from airlock.devstack.stack import DEV_CLIENT_ID, LocalStack

SUITE = "llm-worker"
MODEL_LATENCY_MS = 300.0
RATE = 300.0
#: A light load, for context: the same figures when the process is far from busy.
LIGHT_RATE = 50.0
THROUGHPUT_TARGET = 300.0
ADDED_P50_TARGET_MS = 2.0
ADDED_P99_TARGET_MS = 10.0
API_KEY = "sk-airlock-fake"
PARTITIONS = 6
#: Requests sent before measuring (connections opened, caches warm).
WARM_UP = 300


def envelope(index: int, reply_to: str) -> Envelope:
    """A redacted request as the redactor publishes it (a short prompt with a placeholder)."""
    now = utcnow()
    return Envelope(
        airlock_id=str(uuid.uuid4()),
        state=State.REDACTED,
        request=LLMRequest(
            request_id=f"bench-{index}",
            client_id="bench",
            tenant="acme",
            model="gpt-4o-mini",
            messages=[
                ChatMessage(role="system", content="You are a helpful assistant for the billing team."),
                ChatMessage(role="user", content=f"Hi, I am <PERSON_1>; please summarise invoice {index} for me."),
            ],
            params=ChatParams(max_tokens=200, temperature=0.2),
            reply_to=reply_to,
        ),
        received_at=now,
        deadline=now + timedelta(seconds=600),
        vault=SealedVault(key_id="bench", nonce="bm9uY2U=", ciphertext="c2VhbGVk"),
        redaction=RedactionSummary(policy_version="bench", entity_counts={"PERSON": 1}),
    )


async def bare_http_floor(fake: FakeOpenAIProcess, seconds: float, rate: float) -> list[float]:
    """Added latency of bare HTTP calls to the fake at ``rate`` requests/s (ms beyond its delay).

    The same request as :func:`envelope`'s, posted with aiohttp alone: no worker, no SDK. What
    remains after the fake's 300 ms is the loopback round trip and the fake server's own work
    (a Python HTTP server sharing these cores) — latency no model client can go below, so the
    worker's own figure is the worker's minus this, percentile by percentile (how gateway
    overhead is usually reported: p99 through the gateway minus p99 direct).
    """
    prompt = envelope(0, "bench.responses.bench").request
    body = {"model": prompt.model, "messages": [m.model_dump() for m in prompt.messages], "max_tokens": 200}
    url = f"{fake.base_url}/chat/completions"
    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {API_KEY}"}) as session:

        async def send(index: int) -> tuple[bool, str]:
            async with session.post(url, json=body) as response:
                json.loads(await response.read())
                return response.status == 200, str(response.status)

        await asyncio.gather(*(send(i) for i in range(WARM_UP)))  # connections, as for the worker
        samples = await load.drive(send, rate, seconds, answer_timeout_s=30)
    if not all(sample.ok for sample in samples):
        raise RuntimeError("bare HTTP calls to the fake failed in the benchmark")
    return [sample.latency_ms - MODEL_LATENCY_MS for sample in samples if sample.latency_ms is not None]


async def added_latency(fake: FakeOpenAIProcess, seconds: float, rate: float, *, judged: bool) -> list[Measurement]:
    """The production handler in this process, fed open-loop at ``rate`` requests/s.

    Args:
        fake: The fake model (300 ms).
        seconds: How long to offer load.
        rate: Offered requests per second.
        judged: Whether the issue's latency targets apply to this run (the 300/s one).
    """
    from pydantic import SecretStr

    from airlock.llm_worker.calls import Answer
    from airlock.llm_worker.router import Call
    from airlock.llm_worker.routing import TargetSpec
    from airlock.llm_worker.settings import LLMWorkerSettings
    from airlock.llm_worker.worker import build_worker, tune_gc

    settings = LLMWorkerSettings(
        openai_api_key=SecretStr(API_KEY),
        **{"AIRLOCK_LLM_WORKER_OPENAI_BASE_URL": fake.base_url},  # type: ignore[arg-type]
    )
    topics = Topics("bench.")
    call_ms: dict[str, float] = {}

    def timed(call: Call) -> Call:
        async def timed_call(target: TargetSpec, **arguments: Any) -> Answer:
            started = time.perf_counter()
            try:
                return await call(target, **arguments)
            finally:
                call_ms[arguments["messages"][-1].content] = (time.perf_counter() - started) * 1000

        return timed_call

    floor = await bare_http_floor(fake, seconds, rate)
    worker = build_worker(settings, StageContext("llm-worker", topics), share=lambda: 1.0, wrap_call=timed)
    handler = worker.handler
    count = int(seconds * rate)
    records = [
        Incoming(
            topic=topics.redacted, partition=0, offset=i, value=envelope(i, topics.reply_topic("bench")).to_bytes()
        )
        for i in range(count + WARM_UP)
    ]
    prompts = [Envelope.model_validate_json(record.value).request.messages[-1].content for record in records]
    tune_gc()  # as the service does once started; the bench's own inputs are frozen with the start-up heap
    own: list[float] = []

    async def send(index: int) -> tuple[bool, str]:
        started = time.perf_counter()
        [result] = await handler.process([records[index]])
        if isinstance(result, BaseException) or not result.records[0].topic.endswith("completions"):
            return False, f"request failed in the benchmark: {result}"
        own.append((time.perf_counter() - started) * 1000 - call_ms[prompts[index]])
        return True, ""

    try:
        await asyncio.gather(*(send(i) for i in range(count, count + WARM_UP)))  # connections, caches
        own.clear()
        cpu_started = time.process_time()
        stolen = StolenCpu()
        samples = await load.drive(send, rate, count / rate, answer_timeout_s=30)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / count
        stolen_share = stolen.share()
    finally:
        await worker.stop()
    failed = [sample.error for sample in samples if not sample.ok]
    if failed:
        raise RuntimeError(failed[0])
    added = [sample.latency_ms - MODEL_LATENCY_MS for sample in samples if sample.latency_ms is not None]
    elapsed = max(sample.done or 0.0 for sample in samples) - samples[0].scheduled
    at = f"at {rate:g}/s"
    beyond_note = "worker's added latency minus the bare HTTP call's, at the same percentile"
    note = f"{count} requests open-loop; includes the SDK, loopback HTTP and the fake's own handling"
    floor_note = "aiohttp alone, same request and rate: loopback + the fake's own handling"
    own_note = "handler time minus the openai SDK call (routing, governance, pacing, envelope, usage, audit)"
    p50_target, p99_target = (ADDED_P50_TARGET_MS, ADDED_P99_TARGET_MS) if judged else (None, None)

    def row(name: str, value: float, unit: str = "ms", target: float | None = None, why: str = "") -> Measurement:
        return Measurement(SUITE, f"{name} {at} (in-process)", value, unit, target, unit != "ms", why)

    return [
        row(
            "worker's own added p50",
            percentile(added, 0.5) - percentile(floor, 0.5),
            target=p50_target,
            why=beyond_note,
        ),
        row(
            "worker's own added p99",
            percentile(added, 0.99) - percentile(floor, 0.99),
            target=p99_target,
            why=beyond_note,
        ),
        row("added latency p50", percentile(added, 0.5), why=note),
        row("added latency p99", percentile(added, 0.99), why=note),
        row("bare HTTP call p50", percentile(floor, 0.5), why=floor_note),
        row("bare HTTP call p99", percentile(floor, 0.99), why=floor_note),
        row("worker code p50", percentile(own, 0.5), why=own_note),
        row("worker code p99", percentile(own, 0.99), why=own_note),
        row("completion rate", count / elapsed, "req/s"),
        row("worker CPU per request", cpu_ms, why="CPU time / requests"),
        *(
            [row("CPU stolen by the host", stolen_share, "%", why="steal time while the load ran: the tail follows it")]
            if stolen_share is not None
            else []
        ),
    ]


class _CompletionWatch:
    """Follows the completions topic and notes when each Airlock id became visible."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.seen: dict[str, float] = {}
        self.follower = TopicFollower(kafka, [topic], self._note, fetch_max_wait_ms=10)

    def _note(self, record: ConsumerRecord) -> None:
        airlock_id = dict(record.headers or ()).get(h.AIRLOCK_ID, b"").decode()
        self.seen.setdefault(airlock_id, time.perf_counter())

    async def wait_for(self, ids: Sequence[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(i not in self.seen for i in ids):
            if time.monotonic() > deadline:
                missing = sum(1 for i in ids if i not in self.seen)
                raise RuntimeError(f"{missing} completions missing after {timeout_s:.0f}s")
            await asyncio.sleep(0.1)


async def through_kafka(fake: FakeOpenAIProcess, state: Path, preload: int, seconds: float) -> list[Measurement]:
    """One llm-worker process on a real broker: drain rate, then open-loop end-to-end latency."""
    # The local stack's broker (SASL, ACLs) and keys, but only the llm-worker runs: the bench
    # plays the redactor, signing the envelopes it publishes with the redactor's key.
    stack = LocalStack(state, topic_prefix="bench.", partitions=PARTITIONS)
    stack.start_broker()
    mesh: Mesh | None = None
    try:
        await stack.provision()
        kafka = stack.kafka_settings
        topics = stack.topics
        redactor = stack.stage_signer("redactor")
        producer = AIOKafkaProducer(**kafka.client_args(), acks="all", linger_ms=5)
        await producer.start()
        watch = _CompletionWatch(kafka, topics.completions)
        reply_to = topics.reply_topic(DEV_CLIENT_ID)
        try:
            preloaded = [envelope(i, reply_to) for i in range(preload)]
            await _publish(producer, topics.redacted, preloaded, redactor)
            await watch.follower.start()
            mesh = Mesh(
                {
                    **stack.service_env(),
                    "AIRLOCK_LLM_WORKER_OPENAI_BASE_URL": fake.base_url,
                    "AIRLOCK_LLM_WORKER_OPENAI_API_KEY": API_KEY,
                },
                state / "logs",
                {"llm-worker": stack.stage_env("llm-worker")},
            )
            (state / "logs").mkdir(exist_ok=True)
            mesh.start("llm-worker", 1)
            await wait_ready(kafka, mesh, 180)
            worker_pid = mesh.replicas["llm-worker"][0].process.pid
            cpu_before = _cpu_seconds(worker_pid)
            ids = [e.airlock_id for e in preloaded]
            await watch.wait_for(ids, timeout_s=max(120.0, preload / 50))
            cpu_used = _cpu_seconds(worker_pid) - cpu_before
            times = sorted(watch.seen[i] for i in ids)
            low, high = int(len(times) * 0.1), int(len(times) * 0.9)
            drain_rate = (high - low) / (times[high] - times[low])

            latencies: list[float] = []
            live = [envelope(i, reply_to) for i in range(int(seconds * RATE))]
            sent_at: dict[str, float] = {}
            started = time.perf_counter()
            for index, item in enumerate(live):
                delay = started + index / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[item.airlock_id] = time.perf_counter()
                await producer.send(
                    topics.redacted,
                    item.to_bytes(),
                    key=item.airlock_id.encode(),
                    headers=_headers(item, topics.redacted, redactor),
                )
            await producer.flush()
            await watch.wait_for([e.airlock_id for e in live], timeout_s=120)
            latencies = [(watch.seen[i] - sent_at[i]) * 1000 - MODEL_LATENCY_MS for i in sent_at]
        finally:
            await watch.follower.stop()
            await producer.stop()
    finally:
        if mesh is not None:
            mesh.stop()
        stack.stop()
    e2e_note = f"{len(latencies)} requests open-loop at {RATE:g}/s: publish → committed completion visible"
    return [
        Measurement(
            SUITE,
            "throughput, 1 process (via Kafka)",
            drain_rate,
            "req/s",
            THROUGHPUT_TARGET,
            True,
            f"{preload} preloaded, middle 80 % of completions, {PARTITIONS} partitions",
        ),
        Measurement(
            SUITE,
            "worker CPU per request (via Kafka)",
            cpu_used * 1000 / preload if cpu_used > 0 else float("nan"),
            "ms",
            None,
            False,
            "the worker process's CPU time while draining (all its work: Kafka, SDK, handler)",
        ),
        Measurement(
            SUITE, "end-to-end added p50 (via Kafka)", statistics.median(latencies), "ms", None, False, e2e_note
        ),
        Measurement(
            SUITE, "end-to-end added p99 (via Kafka)", percentile(latencies, 0.99), "ms", None, False, e2e_note
        ),
    ]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _headers(item: Envelope, topic: str, signer: StageSigner) -> list[tuple[str, bytes]]:
    value, key = item.to_bytes(), item.airlock_id.encode()
    return [
        (h.AIRLOCK_ID, key),
        (h.REQUEST_ID, item.request.request_id.encode()),
        signer.header(topic, key, value),
    ]


async def _publish(producer: AIOKafkaProducer, topic: str, items: Sequence[Envelope], signer: StageSigner) -> None:
    for item in items:
        await producer.send(topic, item.to_bytes(), key=item.airlock_id.encode(), headers=_headers(item, topic, signer))
    await producer.flush()


async def _run(quick: bool) -> list[Measurement]:
    state = Path(tempfile.mkdtemp(prefix="airlock-bench-llm-"))
    fake = FakeOpenAIProcess(free_port(), state / "fake-openai.log", latency_ms=MODEL_LATENCY_MS).start()
    try:
        rows = await added_latency(fake, seconds=5 if quick else 20, rate=RATE, judged=True)
        rows += await added_latency(fake, seconds=5 if quick else 10, rate=LIGHT_RATE, judged=False)
        rows += await through_kafka(fake, state, preload=1500 if quick else 6000, seconds=5 if quick else 15)
    except BaseException:
        print(f"llm-worker bench failed; logs kept in {state}", file=sys.stderr)
        raise
    finally:
        fake.stop()
    shutil.rmtree(state, ignore_errors=True)
    return rows


def run(options: dict[str, Any]) -> list[Measurement]:
    """Run the suite (``options["quick"]``: shorter runs)."""
    return asyncio.run(_run(bool(options.get("quick"))))
