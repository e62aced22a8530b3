"""Suite ``stages``: each service alone, draining its input, with 1, 2 and 3 replicas.

A cascade on one real broker, per replica count. Each stage runs under its own topic prefix
and is started *first*: once all its replicas are ready (every input partition assigned), its
input is copied in, byte for byte (keys, headers, partitions), from the topic the previous
stage wrote — so no replica starts late into a half-drained topic, and every stage reads the
records the previous stage really produced:

1. **ingest** ×r drains N signed requests (the e2e prompts, published with the SDK);
2. **redactor** ×r drains ingest's ``accepted`` (the request direction);
3. **llm-worker** ×r drains the redactor's ``redacted`` (fake model at 300 ms);
4. **redactor** ×r drains the worker's ``completions`` (restore + output scan, to the reply topic);
5. **auditor** ×r seals every audit event the four stages above wrote.

The rate is outputs over the time from the first input written to the last output visible to
a ``read_committed`` reader (the input copy overlaps the drain, so it is a lower bound; the
middle-80 % rate is kept in the data but outputs arrive a transaction at a time, which makes
it jumpy); CPU per record is the stage's
processes' CPU time over the drain divided by the records. Everything shares the two cores
with the broker, so 3 replicas cannot be 3× one: the table shows where scaling stops.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from airlock.core import headers as h
from airlock.core.admin import partition_counts
from airlock.core.reading import committed_reader
from airlock.core.settings import KafkaSettings
from airlock.core.topics import Topics
from airlock.devstack.bench import Measurement
from airlock.devstack.bench.e2e import MODEL, PARAMS, TENANT, prompts
from airlock.devstack.bench.watch import ProcessMonitor, TopicFollower, until_reached
from airlock.devstack.kafka import LocalKafka, free_port
from airlock.devstack.mesh import FakeOpenAIProcess, Mesh, wait_ready
from airlock.devstack.stack import DEV_CLIENT_ID, LocalStack

log = logging.getLogger(__name__)

SUITE = "stages"
REPLICAS: tuple[int, ...] = (1, 2, 3)
PARTITIONS = 6
MODEL_LATENCY_MS = 300.0


@dataclass(frozen=True)
class Stage:
    """One step of the cascade.

    Attributes:
        name: Row label.
        service: The service started.
        inputs: Topic names (without prefix) copied in from the previous stages' prefixes.
        outputs: Topic names (without prefix) whose records count as this stage's output.
    """

    name: str
    service: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


CASCADE: tuple[Stage, ...] = (
    Stage("ingest", "ingest", ("requests",), ("accepted", "responses")),
    Stage("redactor (request)", "redactor", ("accepted",), ("redacted", "responses")),
    Stage("llm-worker", "llm-worker", ("redacted",), ("completions", "responses")),
    Stage("redactor (answer)", "redactor", ("completions",), ("responses",)),
    Stage("auditor", "auditor", ("audit",), ("ledger",)),
)


def drain_rate(times: Sequence[float]) -> float:
    """Records per second over the middle 80 % of arrival times (NaN with too few records)."""
    ordered = sorted(times)
    if len(ordered) < 10:
        return float("nan")
    low, high = int(len(ordered) * 0.1), int(len(ordered) * 0.9) - 1
    span = ordered[high] - ordered[low]
    return (high - low) / span if span > 0 else float("nan")


async def copy_topic(kafka: KafkaSettings, source: str, target: str, stack: LocalStack | None = None) -> int:
    """Copy every committed record of ``source`` to the same partition of ``target``; return the count.

    With ``stack``, each record is signed anew by the stage that signed it, for ``target``: a
    stage signature binds the topic, so a copied one would (rightly) be refused at the door.
    """
    counts = await partition_counts(kafka, [source])
    consumer = committed_reader(kafka)
    producer = AIOKafkaProducer(**kafka.client_args(), acks="all", linger_ms=5, max_batch_size=1_048_576)
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        tps = [TopicPartition(source, p) for p in range(counts.get(source, 0))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    headers = list(record.headers or ())
                    if stack is not None:
                        headers = _resigned(stack, target, record.key, record.value, headers)
                    await producer.send(target, record.value, key=record.key, headers=headers, partition=tp.partition)
                    copied += 1
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    return copied


def _resigned(
    stack: LocalStack, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """``headers`` with the signing stage's signature redone for ``topic``."""
    signed = [v.decode().split(" ")[1] for k, v in headers if k == h.STAGE_SIGNATURE]
    kept = [(k, v) for k, v in headers if k != h.STAGE_SIGNATURE]
    return [*kept, *(stack.stage_signer(stage).header(topic, key, value) for stage in signed)]


async def _run_cascade(
    broker: LocalKafka, fake: FakeOpenAIProcess, state: Path, replicas: int, count: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    done_prefixes: list[str] = []
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    samples = prompts()
    for position, stage in enumerate(CASCADE):
        stack = LocalStack(state, topic_prefix=f"stage{replicas}-{position}.", partitions=PARTITIONS)
        stack.kafka, stack.fake = broker, fake
        await stack.provision()
        kafka = stack.kafka_settings
        # Replies (and error replies) go to each request's reply topic: the first prefix's.
        first = done_prefixes[0] if done_prefixes else stack.topic_prefix
        replies = Topics(first).reply_topic(DEV_CLIENT_ID)
        outputs = [replies if name == "responses" else stack.topic_prefix + name for name in stage.outputs]
        follower = await TopicFollower(kafka, outputs).start(from_end=True)
        mesh = Mesh(stack.service_env(), logs, {stage.service: stack.stage_env(stage.service)})
        mesh.start(stage.service, replicas)
        monitor = ProcessMonitor({f"{p.service}-{p.replica}": p.process.pid for p in mesh.replicas[stage.service]})
        try:
            await wait_ready(kafka, mesh, 300)
            cpu_before = sum(monitor.cpu_seconds().values())
            started = time.perf_counter()
            if position == 0:
                expected = await _publish_requests(stack, samples, count)
            else:
                expected = 0
                sources = done_prefixes if stage.service == "auditor" else done_prefixes[-1:]
                for prefix in sources:
                    for name in stage.inputs:
                        expected += await copy_topic(kafka, prefix + name, stack.topic_prefix + name, stack)
            finished = await _wait_outputs(follower, outputs, expected)
            cpu = sum(monitor.cpu_seconds().values()) - cpu_before
        finally:
            mesh.stop()
            await follower.stop()
        times = sorted(t for topic in outputs for t in follower.seen[topic])
        # Over the whole drain, from the first input written: outputs become visible a
        # transaction at a time, so a few large commits make any sub-window's rate meaningless.
        rate = len(times) / (times[-1] - started) if times and times[-1] > started else float("nan")
        note = "" if finished else f"only {len(times)} of {expected} outputs"
        rows.append(
            {
                "stage": stage.name,
                "replicas": replicas,
                "records": len(times),
                "rate": rate,
                "rate_middle_80": drain_rate(times),
                "cpu_ms_per_record": 1000 * cpu / max(1, len(times)),
                "note": note,
            }
        )
        log.warning("stage %s ×%d: %.1f records/s (%d records) %s", stage.name, replicas, rate, len(times), note)
        done_prefixes.append(stack.topic_prefix)
    return rows


async def _publish_requests(stack: LocalStack, samples: Sequence[Any], count: int) -> int:
    async with stack.client() as client:
        requests = [
            client.build(samples[i % len(samples)].text, tenant=TENANT, model=MODEL, params=PARAMS)
            for i in range(count)
        ]
        for start in range(0, count, 500):
            await asyncio.gather(*(client.publish(r) for r in requests[start : start + 500]))
    return count


async def _wait_outputs(
    follower: TopicFollower, topics: Sequence[str], expected: int, idle_timeout_s: float = 60.0
) -> bool:
    """Wait until ``expected`` records arrived on ``topics`` (together), or progress stops."""
    got = await until_reached(
        lambda: sum(follower.count(t) for t in topics), expected, idle_timeout_s=idle_timeout_s, poll_s=0.1
    )
    return got >= expected


async def run_stages(quick: bool, replicas: Sequence[int] = REPLICAS) -> dict[str, Any]:
    """The cascade at each replica count on one broker; return the rows."""
    count = 300 if quick else 600
    state = Path(tempfile.mkdtemp(prefix="airlock-bench-stages-"))
    broker = LocalKafka(state / "kafka", port=free_port()).start()
    fake: FakeOpenAIProcess | None = None
    rows: list[dict[str, Any]] = []
    try:
        fake = FakeOpenAIProcess(free_port(), state / "fake-openai.log", latency_ms=MODEL_LATENCY_MS).start()
        for replica_count in replicas:
            rows += await _run_cascade(broker, fake, state, replica_count, count)
    except BaseException:
        print(f"stages bench failed; logs kept in {state}", file=sys.stderr)
        raise
    finally:
        if fake is not None:
            fake.stop()
        broker.stop()
    shutil.rmtree(state, ignore_errors=True)
    return {
        "requests": count,
        "rows": rows,
        "description": (
            f"Each service alone draining a preloaded input ({count} signed requests through the cascade "
            f"ingest → redactor → llm-worker (fake at {MODEL_LATENCY_MS:g} ms) → redactor → auditor; the "
            f"auditor seals every audit event), {PARTITIONS} partitions, on the machine's 2 shared cores "
            "with the broker. Rate: outputs / (last output visible to a read_committed reader − first input written)."
        ),
    }


def measurements(data: dict[str, Any]) -> list[Measurement]:
    """One row per stage and replica count, plus the scaling ratio 3 replicas / 1."""
    rows: list[Measurement] = []
    by_stage: dict[str, dict[int, float]] = {}
    for row in data.get("rows", []):
        by_stage.setdefault(row["stage"], {})[row["replicas"]] = row["rate"]
        rows.append(
            Measurement(
                SUITE,
                f"{row['stage']} ×{row['replicas']}",
                row["rate"],
                "records/s",
                note=f"{row['cpu_ms_per_record']:.2f} ms CPU/record {row['note']}".strip(),
            )
        )
    for stage, rates in by_stage.items():
        if 1 in rates and max(rates) > 1 and rates[1] > 0:
            rows.append(Measurement(SUITE, f"{stage} scaling ×{max(rates)}/×1", rates[max(rates)] / rates[1], "×"))
    return rows


def run(options: dict[str, Any]) -> list[Measurement]:
    """Run the suite; ``options``: ``quick``, ``run`` (the report being written)."""
    data = asyncio.run(run_stages(bool(options.get("quick"))))
    if options.get("run") is not None:
        options["run"].data[SUITE] = data
    return measurements(data)
