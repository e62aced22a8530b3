"""The books of a fault phase: what was published, what ended how, what the caller got.

Everything is read back from the real broker with ``read_committed`` readers — raw records,
never the SDK's futures — and judged per *record* on the request topic: every record that
entered is one lifecycle (one Airlock id), which must

* reach exactly one terminal state: one terminal event on the audit topic and one in the
  ledger (``published = delivered + rejected + blocked + failed``);
* be answered exactly once: one record on the reply topic;
* never be doubled anywhere on the way: at most one record per Airlock id on ``accepted``,
  ``redacted``, ``completions`` and ``usage``, and exactly one dead letter per failure;

and the whole ledger must verify clean with the auditor's own code (chains, signed
checkpoints, the witness, every selected lifecycle legal and terminal).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from airlock.auditor.reader import read_checkpoints, read_ledger
from airlock.auditor.timelines import Selection
from airlock.auditor.verify import Evidence, Report, verify
from airlock.auditor.witness import read_witness
from airlock.core import headers as h
from airlock.core.lifecycle import TERMINAL, State
from airlock.core.settings import KafkaSettings
from airlock.core.stage import Incoming, airlock_id_for
from airlock.core.topics import Topics
from airlock.devstack.stack import DEV_CLIENT_ID
from tests.integration.kafka_reading import header, read_topic

#: Where each phase's counts are collected for the terminal summary (see conftest.py).
SUMMARY: list[str] = []
TERMINALS = (State.DELIVERED, State.REJECTED, State.BLOCKED, State.FAILED)


def airlock_id_of(record: ConsumerRecord) -> str:
    """The Airlock id ingest gives a request record (its topic, partition, offset, timestamp)."""
    return airlock_id_for(
        Incoming(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            value=b"",
            timestamp_ms=record.timestamp,
        )
    )


@dataclass
class Books:
    """One phase's accounting; :meth:`problems` lists everything that does not balance."""

    phase: str
    sent: int = 0
    publish_errors: int = 0
    published: int = 0
    terminal: Counter[str] = field(default_factory=Counter)
    replies: int = 0
    dead_letters: int = 0
    no_terminal: list[str] = field(default_factory=list)
    several_terminal: list[str] = field(default_factory=list)
    audit_doubled: list[str] = field(default_factory=list)
    no_reply: list[str] = field(default_factory=list)
    several_replies: list[str] = field(default_factory=list)
    doubled: dict[str, list[str]] = field(default_factory=dict)
    dead_letter_mismatch: list[str] = field(default_factory=list)
    ledger_records: int = 0
    ledger_valid: int = 0
    checkpoints: int = 0
    checkpoints_valid: int = 0
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def accounted(self) -> int:
        """Delivered + rejected + blocked + failed, from the ledger."""
        return sum(self.terminal[state.value] for state in TERMINALS)

    def problems(self) -> list[str]:
        """Every way the books fail to balance (empty when they do)."""
        found = []
        if self.published == 0:
            found.append("nothing was published")
        if self.accounted != self.published:
            found.append(f"published {self.published} != terminal {self.accounted} ({dict(self.terminal)})")
        checks: list[tuple[str, list[str]]] = [
            ("no terminal state in the ledger", self.no_terminal),
            ("more than one terminal state", self.several_terminal),
            ("a transition committed twice on the audit topic", self.audit_doubled),
            ("no reply", self.no_reply),
            ("more than one reply", self.several_replies),
            ("dead letters != failures", self.dead_letter_mismatch),
            *((f"more than one record on {topic}", ids) for topic, ids in self.doubled.items()),
            ("ledger findings", self.findings),
        ]
        found += [f"{what}: {len(ids)} e.g. {ids[:3]}" for what, ids in checks if ids]
        if self.replies != self.published:
            found.append(f"replies {self.replies} != published {self.published}")
        return found

    def line(self) -> str:
        """One line for the summary table."""
        terminal = " ".join(f"{state.value.lower()} {self.terminal[state.value]}" for state in TERMINALS)
        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items())) or "-"
        return (
            f"{self.phase:<26} published {self.published:>4} = {terminal}; replies {self.replies:>4}; "
            f"dlq {self.dead_letters:>3}; publish errors {self.publish_errors}; "
            f"ledger {self.ledger_valid}/{self.ledger_records} valid, "
            f"checkpoints {self.checkpoints_valid}/{self.checkpoints}; {self.seconds:.0f}s; error codes: {errors}"
        )


def _by_airlock_id(records: Iterable[ConsumerRecord], wanted: set[str]) -> Counter[str]:
    counted: Counter[str] = Counter()
    for record in records:
        airlock_id = header(record, h.AIRLOCK_ID)
        if airlock_id in wanted:
            counted[airlock_id] += 1
    return counted


async def ledger_evidence(kafka: KafkaSettings, witness_root: Path) -> Evidence:
    """The whole ledger, its checkpoints and the witness, as ``airlock audit replay`` reads them."""
    topics = Topics(kafka.topic_prefix)
    ledger = await read_ledger(kafka, topics.ledger)
    checkpoints = await read_checkpoints(kafka, topics.checkpoints)
    witness = read_witness(witness_root / topics.ledger)
    return Evidence(
        ledger=topics.ledger,
        partitions={p: [value for _, value in records] for p, records in ledger.items()},
        checkpoints=checkpoints,
        witness=witness,
        keys=witness.keys,
        key_source="the witness",
        origin=f"Kafka {kafka.bootstrap}",
    )


async def published_records(kafka: KafkaSettings, request_ids: set[str]) -> dict[str, ConsumerRecord]:
    """Airlock id → request record, for every record on the request topic with one of ``request_ids``."""
    topics = Topics(kafka.topic_prefix)
    found = {}
    for record in await read_topic(kafka, topics.requests):
        if header(record, h.REQUEST_ID) in request_ids and header(record, h.REROUTED_FROM) is None:
            found[airlock_id_of(record)] = record
    return found


async def settled(kafka: KafkaSettings, witness_root: Path, request_ids: set[str]) -> tuple[int, int, int]:
    """``(published, terminal in the ledger, replies)`` for ``request_ids`` right now."""
    topics = Topics(kafka.topic_prefix)
    records = await published_records(kafka, request_ids)
    wanted = set(records)
    replies = _by_airlock_id(await read_topic(kafka, topics.reply_topic(DEV_CLIENT_ID)), wanted)
    ledger = await read_ledger(kafka, topics.ledger)
    terminal = set()
    for values in ledger.values():
        for _, value in values:
            event = json.loads(value).get("event", {})
            if event.get("airlock_id") in wanted and event.get("to_state") in {s.value for s in TERMINAL}:
                terminal.add(event["airlock_id"])
    return len(wanted), len(terminal), len(set(replies))


async def balance(
    kafka: KafkaSettings,
    witness_root: Path,
    phase: str,
    request_ids: set[str],
    *,
    sent: int,
    publish_errors: int,
) -> Books:
    """Read everything back and draw up the books of one phase."""
    topics = Topics(kafka.topic_prefix)
    books = Books(phase, sent=sent, publish_errors=publish_errors)
    records = await published_records(kafka, request_ids)
    wanted = set(records)
    books.published = len(wanted)

    evidence = await ledger_evidence(kafka, witness_root)
    report: Report = verify(evidence, Selection(request_ids=frozenset(request_ids)))
    books.ledger_records, books.ledger_valid = report.records, report.valid
    books.checkpoints, books.checkpoints_valid = report.checkpoints, report.checkpoints_valid
    books.findings = [f"{f.kind} p{f.partition} seq {f.seq}: {f.detail}" for f in report.findings]
    for airlock_id in wanted:
        timeline = report.timelines.get(airlock_id)
        ends = [s for s in (timeline.states if timeline else []) if s in TERMINAL]
        if not ends:
            books.no_terminal.append(airlock_id)
        elif len(ends) > 1:
            books.several_terminal.append(airlock_id)
        if ends:
            books.terminal[ends[-1].value] += 1
            code = (timeline.transitions[-1].get("details") or {}).get("error_code") if timeline else None
            if code:
                books.errors[code] += 1

    transitions: Counter[tuple[str, str]] = Counter()
    for record in await read_topic(kafka, topics.audit):
        try:
            event: dict[str, Any] = json.loads(record.value)
        except ValueError:
            continue
        if event.get("airlock_id") in wanted and event.get("kind", "transition") == "transition":
            transitions[(event["airlock_id"], str(event.get("to_state")))] += 1
    books.audit_doubled = sorted({aid for (aid, _), n in transitions.items() if n > 1})

    replies = _by_airlock_id(await read_topic(kafka, topics.reply_topic(DEV_CLIENT_ID)), wanted)
    books.replies = sum(replies.values())
    books.no_reply = sorted(wanted - set(replies))
    books.several_replies = sorted(aid for aid, n in replies.items() if n > 1)

    for topic in (topics.accepted, topics.redacted, topics.completions):
        counted = _by_airlock_id(await read_topic(kafka, topic), wanted)
        books.doubled[topic] = sorted(aid for aid, n in counted.items() if n > 1)
    usage: Counter[str] = Counter()
    for record in await read_topic(kafka, topics.usage):
        airlock_id = json.loads(record.value).get("airlock_id")
        if airlock_id in wanted:
            usage[airlock_id] += 1
    books.doubled[topics.usage] = sorted(aid for aid, n in usage.items() if n > 1)

    dead = _by_airlock_id(await read_topic(kafka, topics.dlq), wanted)
    books.dead_letters = sum(dead.values())
    for airlock_id in wanted:
        timeline = report.timelines.get(airlock_id)
        failed = timeline is not None and timeline.terminal not in (None, State.DELIVERED)
        if dead.get(airlock_id, 0) != (1 if failed else 0):
            books.dead_letter_mismatch.append(airlock_id)
    return books
