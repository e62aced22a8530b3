"""Replaying the ledger: verify each chain, rebuild each request's lifecycle.

Pure: takes ledger records as bytes per partition (from Kafka or from files) and returns
a report. Nothing here talks to Kafka.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from airlock.auditor.chain import GENESIS, LedgerRecord, link_hash
from airlock.core.lifecycle import TERMINAL, State, is_legal


@dataclass(frozen=True)
class Finding:
    """One integrity or lifecycle problem: where, what kind, and a sentence."""

    kind: str
    partition: int | None
    seq: int | None
    detail: str


@dataclass
class Timeline:
    """Every sealed event of one request (one Airlock id), in order."""

    airlock_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def request_id(self) -> str | None:
        """The caller's request id, from the first event that has one."""
        return next((e.get("request_id") for e in self.events if e.get("request_id")), None)

    @property
    def states(self) -> list[State]:
        """The lifecycle states reached, in order."""
        return [
            State(e["to_state"])
            for e in self.events
            if e.get("kind", "transition") == "transition" and e.get("to_state")
        ]

    @property
    def terminal(self) -> State | None:
        """The terminal state reached, if any."""
        terminal = [s for s in self.states if s in TERMINAL]
        return terminal[-1] if terminal else None


@dataclass
class Report:
    """What a replay found."""

    records: int = 0
    valid: int = 0
    findings: list[Finding] = field(default_factory=list)
    timelines: dict[str, Timeline] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no integrity or lifecycle problem was found."""
        return not self.findings


def verify_chain(partition: int, raw: Sequence[bytes], report: Report) -> list[LedgerRecord]:
    """Check one partition's chain; append findings to ``report``; return the parsed records."""
    records: list[LedgerRecord] = []
    expected_seq, expected_prev = 1, GENESIS
    for value in raw:
        report.records += 1
        try:
            record = LedgerRecord.model_validate_json(value)
        except ValidationError:
            report.findings.append(Finding("malformed", partition, None, "record is not a ledger record"))
            continue
        problems = []
        if record.partition != partition:
            problems.append(Finding("out_of_place", partition, record.seq, f"record of partition {record.partition}"))
        if record.seq != expected_seq:
            kind = "missing" if record.seq > expected_seq else "reordered"
            problems.append(Finding(kind, partition, record.seq, f"expected seq {expected_seq}"))
        if record.prev_hash != expected_prev:
            problems.append(
                Finding("chain_broken", partition, record.seq, "prev_hash does not match the previous record")
            )
        if link_hash(record.prev_hash, record.event) != record.hash:
            problems.append(Finding("modified", partition, record.seq, "hash does not match the event"))
        report.findings.extend(problems)
        if not problems:
            report.valid += 1
        records.append(record)
        expected_seq, expected_prev = record.seq + 1, record.hash
    return records


def replay(ledger: Mapping[int, Sequence[bytes]], *, request_id: str | None = None) -> Report:
    """Verify every partition and rebuild lifecycles (optionally of one request only)."""
    report = Report()
    for partition in sorted(ledger):
        for record in verify_chain(partition, ledger[partition], report):
            event = record.event
            airlock_id = str(event.get("airlock_id", ""))
            if request_id is not None and event.get("request_id") != request_id:
                continue
            report.timelines.setdefault(airlock_id, Timeline(airlock_id)).events.append(event)
    for timeline in report.timelines.values():
        _check_lifecycle(timeline, report)
    return report


def _check_lifecycle(timeline: Timeline, report: Report) -> None:
    current: State | None = None
    for state in timeline.states:
        if not is_legal(current, state):
            report.findings.append(
                Finding("illegal_transition", None, None, f"{timeline.airlock_id}: {current} → {state}")
            )
            return
        current = state


def by_request(report: Report) -> dict[str, list[Timeline]]:
    """Timelines grouped by the caller's request id."""
    grouped: dict[str, list[Timeline]] = defaultdict(list)
    for timeline in report.timelines.values():
        grouped[timeline.request_id or ""].append(timeline)
    return grouped
