"""Suite ``audit``: sealing and offline verification throughput, in-process, on one core.

* **sealing** — the auditor's handler on batches of real audit records (as the stages
  publish them): JSON parse, schema validation, dedupe, RFC 8785 canonical form, SHA-256
  chain, ledger record encoding, and a checkpoint every 1,000 records signed with Ed25519
  and written to a witness directory (with fsync). Kafka is not involved: the figure is
  the sealing path's own cost, the ceiling one auditor process puts on a partition set.
* **offline verification** — ``airlock audit verify`` minus the terminal: read an exported
  bundle from disk, check every record's hash and link, every checkpoint signature against
  the ledger and the witness, rebuild and judge every request's lifecycle, and build the
  report.

The process is pinned to one CPU while measuring. The same builders make the ledgers the
audit unit tests tamper with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airlock.auditor.chain import LedgerRecord
from airlock.auditor.checkpointing import CheckpointPolicy, Notary
from airlock.auditor.handlers import CHECKPOINT_TICK, SealHandler
from airlock.auditor.signing import SigningKeys
from airlock.auditor.timelines import Selection
from airlock.auditor.witness import Witness
from airlock.core import headers as h
from airlock.core.crypto import KeyRing
from airlock.core.lifecycle import State
from airlock.core.models import AuditDetails, AuditEvent, ChatMessage, LLMRequest, Usage
from airlock.core.stage import Incoming, Outcome, StageContext
from airlock.core.topics import Topics
from airlock.devstack.bench import Measurement

SEALING_TARGET = 5_000.0
VERIFY_TARGET = 50_000.0
TENANTS = ("acme", "globex", "initech")
#: When the synthetic requests start (10 ms apart).
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _lifecycle(outcome: int) -> list[tuple[str, State | None, State, AuditDetails]]:
    """The transitions of one request: delivered, rejected, blocked or failed at the model."""
    received = AuditDetails(model="gpt-4o-mini", prompt_sha256="ab" * 32, prompt_chars=180, message_count=1)
    if outcome == 0:
        return [
            ("ingest", None, State.RECEIVED, received),
            ("ingest", State.RECEIVED, State.REJECTED, AuditDetails(error_code="schema_invalid", error_message="bad")),
        ]
    steps = [
        ("ingest", None, State.RECEIVED, received),
        ("ingest", State.RECEIVED, State.ACCEPTED, AuditDetails(model="gpt-4o-mini")),
    ]
    masked = AuditDetails(policy_version="builtin-1", entity_counts={"PERSON": 2, "EMAIL_ADDRESS": 1})
    if outcome == 1:
        return [*steps, ("redactor", State.ACCEPTED, State.BLOCKED, masked.model_copy(update={"error_code": "x"}))]
    steps.append(("redactor", State.ACCEPTED, State.REDACTED, masked))
    if outcome == 2:
        failed = AuditDetails(model="gpt-4o-mini", error_code="model_unavailable", error_message="HTTP 500")
        return [*steps, ("llm-worker", State.REDACTED, State.FAILED, failed)]
    completed = AuditDetails(
        model="gpt-4o-mini", usage=Usage(input_tokens=57, output_tokens=21), finish_reason="stop", latency_ms=812.457
    )
    return [
        *steps,
        ("llm-worker", State.REDACTED, State.COMPLETED, completed),
        ("redactor", State.COMPLETED, State.DELIVERED, AuditDetails()),
    ]


def audit_records(
    requests: int,
    *,
    partitions: int = 1,
    start: datetime | None = None,
    tenants: tuple[str, ...] = TENANTS,
    open_requests: int = 0,
) -> dict[int, list[bytes]]:
    """Audit records of ``requests`` requests as the stages publish them, per audit partition.

    One in ten is rejected, one in ten blocked, one in ten fails at the model, the rest are
    delivered; the last ``open_requests`` stop after REDACTED (still in flight).
    """
    start = start or START
    topics = Topics()
    contexts: dict[str, StageContext] = {}
    records: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for i in range(requests):
        request = LLMRequest(
            request_id=f"req-{i:07d}",
            client_id="billing-svc",
            tenant=tenants[i % len(tenants)],
            model="gpt-4o-mini",
            messages=[ChatMessage(role="user", content="redacted")],
            reply_to=topics.reply_topic("bench"),
        )
        airlock_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{i}"))
        partition = int(hashlib.sha256(airlock_id.encode()).hexdigest(), 16) % partitions
        steps = _lifecycle(i % 10 if i % 10 < 3 else 3)
        if i >= requests - open_requests:
            steps = steps[:3]
        for n, (stage, source, target, details) in enumerate(steps):
            context = contexts.setdefault(stage, StageContext(stage, topics))
            at = start + timedelta(milliseconds=i * 10 + n)
            event = context.transition(airlock_id, source, target, request=request, details=details, at=at)
            records[partition].append(event.to_bytes())
    return records


def notice_record(airlock_id: str, at: datetime) -> bytes:
    """A notice audit event (a poison record), which is not a lifecycle step."""
    context = StageContext("redactor", Topics())
    event = context.notice(airlock_id, "poison:x", request_id=None, details=AuditDetails(error_code="schema_invalid"))
    return AuditEvent.model_validate({**event.model_dump(), "at": at}).to_bytes()


@dataclass
class SealedLedger:
    """A ledger sealed in-process: what the auditor would have put on its topics and witness.

    Attributes:
        ledger: The ledger topic name.
        partitions: Ledger records per partition, in order.
        checkpoints: Checkpoint records, in the order emitted.
        outcomes: Every outcome the handler returned (for assertions on transactions).
    """

    ledger: str
    partitions: dict[int, list[bytes]] = field(default_factory=dict)
    checkpoints: list[bytes] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class Sealer:
    """The auditor's real handler, without Kafka: feeds audit records, collects outcomes.

    Args:
        keys: The signing ring.
        witness_root: Witness root directory (``None``: no witness).
        every: Checkpoint count rule.
        interval_s: Checkpoint time rule (the clock only moves when a test moves it).
        prefix: Topic prefix.
        witness_retry_max_s: Longest pause between attempts at an unwritable witness.
    """

    def __init__(
        self,
        keys: SigningKeys,
        witness_root: Path | None,
        *,
        every: int = 1000,
        interval_s: float = 3600.0,
        prefix: str = "airlock.",
        witness_retry_max_s: float = 30.0,
    ) -> None:
        self.keys = keys
        self.topics = Topics(prefix)
        self.now = 0.0
        self.witness = Witness(witness_root, self.topics.ledger) if witness_root else None
        self.sealed = SealedLedger(self.topics.ledger)
        self._offsets: dict[int, int] = {}
        self.handler = SealHandler(
            StageContext("auditor", self.topics),
            self._tail,
            10_000,
            notary=Notary(keys, self.topics.ledger, self.witness, witness_retry_max_s),
            policy=CheckpointPolicy(every, interval_s),
            clock=lambda: self.now,
        )

    async def _tail(self, partition: int, count: int) -> list[LedgerRecord]:
        records = self.sealed.partitions.get(partition, [])[-count:] if count else []
        return [LedgerRecord.model_validate_json(raw) for raw in records]

    def _incoming(self, partition: int, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> Incoming:
        offset = self._offsets.get(partition, 0)
        self._offsets[partition] = offset + 1
        return Incoming(self.topics.audit, partition, offset, value, headers=headers)

    def _collect(self, outcomes: Any) -> None:
        """Keep what the runtime would commit, and tell the handler it did (as its observer)."""
        for outcome in outcomes:
            assert isinstance(outcome, Outcome), outcome
            self.sealed.outcomes.append(outcome)
            self.handler.committed(None, outcome)
            for record in outcome.records:
                if record.topic == self.topics.ledger:
                    assert record.partition is not None
                    self.sealed.partitions.setdefault(record.partition, []).append(record.value)
                elif record.topic == self.topics.checkpoints:
                    self.sealed.checkpoints.append(record.value)

    async def feed(self, partition: int, values: list[bytes], batch: int = 256) -> None:
        """Seal ``values`` from audit partition ``partition`` in batches."""
        for first in range(0, len(values), batch):
            incoming = [self._incoming(partition, value) for value in values[first : first + batch]]
            self._collect(await self.handler.process(incoming))
        await self.handler.witnessed()

    async def tick(self, partition: int) -> None:
        """Deliver a checkpoint tick, as the ticker would."""
        tick = self._incoming(partition, b'{"control":"checkpoint"}', ((h.CONTROL, CHECKPOINT_TICK.encode()),))
        self._collect(await self.handler.process([tick]))
        await self.handler.witnessed()

    def export(self, out: Path, selection: Selection | None = None, exported_at: datetime | None = None) -> None:
        """Write what was sealed as an ``airlock audit export`` bundle."""
        from airlock.auditor.bundle import write_bundle

        write_bundle(
            out,
            ledger=self.sealed.ledger,
            partitions=self.sealed.partitions,
            checkpoints=self.sealed.checkpoints,
            witness=None,
            witness_dir=self.witness.directory if self.witness else None,
            keys=self.keys.public_keys(),
            selection=selection or Selection(),
            origin="in-process sealer",
            exported_at=exported_at,
        )


async def sealed_ledger(
    witness_root: Path | None, records: dict[int, list[bytes]], *, every: int = 1000, keys: SigningKeys | None = None
) -> Sealer:
    """Seal ``records`` (per partition) and tick each partition so its tail is vouched for."""
    sealer = Sealer(keys or dev_keys(), witness_root, every=every)
    for partition, values in sorted(records.items()):
        await sealer.feed(partition, values)
        await sealer.tick(partition)
    return sealer


def dev_keys(key_id: str = "bench-1") -> SigningKeys:
    """A fresh signing ring."""
    return SigningKeys(KeyRing.generate(key_id))


@contextlib.contextmanager
def one_core() -> Iterator[str]:
    """Pin this process to one CPU while measuring; yields a note saying which."""
    getter, setter = getattr(os, "sched_getaffinity", None), getattr(os, "sched_setaffinity", None)
    if getter is None or setter is None:
        yield "not pinned (no sched_setaffinity)"
        return
    before = getter(0)
    cpu = min(before)
    setter(0, {cpu})
    try:
        yield f"pinned to CPU {cpu}"
    finally:
        setter(0, before)


@dataclass(frozen=True)
class Rate:
    """Work per second of one core (CPU time of this process) and per second of wall time."""

    per_cpu_s: float
    per_wall_s: float


@contextlib.contextmanager
def _timed(items: int, rates: list[Rate]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    rates.append(Rate(items / (time.process_time() - cpu), items / (time.perf_counter() - wall)))


RUNS = 5


def run(options: dict[str, Any]) -> list[Measurement]:
    """Measure sealing and offline verification, five runs each.

    The machine is shared: wall-clock rates mostly measure the neighbours, and even CPU time
    stretches when they thrash the caches. The target is judged on the rate per CPU-second of
    the one core the process is pinned to, in the least disturbed run (noise only ever slows
    a run down, as with ``timeit``); the median and the wall-clock rate are printed with it.
    """
    from airlock.auditor.bundle import read_bundle, read_manifest
    from airlock.auditor.verify import verify

    quick = bool(options.get("quick"))
    seal_requests, verify_requests = (1_000, 4_000) if quick else (10_000, 25_000)
    sealing: list[Rate] = []
    verifying: list[Rate] = []
    with tempfile.TemporaryDirectory(prefix="airlock-bench-audit-") as scratch, one_core() as pinned:
        root = Path(scratch)
        to_seal = audit_records(seal_requests)[0]
        for n in range(RUNS):
            sealer = Sealer(dev_keys(), root / f"witness-seal-{n}")
            with _timed(len(to_seal), sealing):
                asyncio.run(sealer.feed(0, to_seal))

        sealer = asyncio.run(sealed_ledger(root / "witness", audit_records(verify_requests, partitions=4)))
        ledger = sealer.sealed
        total = sum(len(v) for v in ledger.partitions.values())
        bundle = root / "bundle"
        sealer.export(bundle)
        for _ in range(RUNS):
            with _timed(total, verifying):
                report = verify(read_bundle(bundle), read_manifest(bundle).selection)
            if not report.ok:
                raise RuntimeError(f"the benchmark's own bundle did not verify clean: {report.findings[:3]}")
    seal_note = f"{len(to_seal):,} events, batches of 256, checkpoint every 1,000 (Ed25519 + witness fsync)"
    verify_note = (
        f"{total:,} records in 4 partitions, {len(ledger.checkpoints)} checkpoints + witness, "
        "lifecycles judged, bundle read from disk"
    )
    rows = []
    for name, unit, target, rates, note in (
        ("sealing", "events/s", SEALING_TARGET, sealing, seal_note),
        ("offline verification", "records/s", VERIFY_TARGET, verifying, verify_note),
    ):
        median = statistics.median(r.per_cpu_s for r in rates)
        rows.append(
            Measurement(
                "audit",
                f"{name} per core",
                max(r.per_cpu_s for r in rates),
                unit,
                target=target,
                note=f"{note}; per CPU-second, best of {RUNS} (median {median:,.0f}); {pinned}",
            )
        )
        rows.append(
            Measurement(
                "audit",
                f"{name} wall clock",
                statistics.median(r.per_wall_s for r in rates),
                unit,
                note=f"same runs, per wall-clock second, median of {RUNS} (includes waiting for the shared CPU)",
            )
        )
    return rows
