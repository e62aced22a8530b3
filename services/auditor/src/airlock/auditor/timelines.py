"""Request timelines rebuilt from sealed events, and their lifecycle checks. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airlock.auditor.chain import ParsedRecord
from airlock.core.lifecycle import TERMINAL, TRANSITIONS, State


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when no zone is given); ``None`` if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_state(value: Any) -> bool:
    return isinstance(value, str) and value in State.__members__


@dataclass
class Timeline:
    """Every sealed event of one request (one Airlock id), in order.

    Attributes:
        airlock_id: Airlock's id of the request.
        records: Its ledger records, in ledger order.
    """

    airlock_id: str
    records: list[ParsedRecord] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The audit events, in ledger order."""
        return [record.event for record in self.records]

    @property
    def locations(self) -> list[tuple[int, int]]:
        """``(partition, seq)`` of each event in the ledger."""
        return [(record.partition, record.seq) for record in self.records]

    def _first(self, key: str) -> str | None:
        return next((value for r in self.records if isinstance(value := r.event.get(key), str) and value), None)

    @property
    def request_id(self) -> str | None:
        """The caller's request id, from the first event that has one."""
        return self._first("request_id")

    @property
    def tenant(self) -> str | None:
        """The tenant, from the first event that has one."""
        return self._first("tenant")

    @property
    def client_id(self) -> str | None:
        """The calling system, from the first event that has one."""
        return self._first("client_id")

    @property
    def transitions(self) -> list[dict[str, Any]]:
        """The lifecycle events (not notices)."""
        return [r.event for r in self.records if r.event.get("kind", "transition") == "transition"]

    @property
    def states(self) -> list[State]:
        """The lifecycle states reached, in order (unknown state names are skipped)."""
        return [State(e["to_state"]) for e in self.transitions if _is_state(e.get("to_state"))]

    @property
    def terminal(self) -> State | None:
        """The terminal state reached, if any."""
        terminal = [s for s in self.states if s in TERMINAL]
        return terminal[-1] if terminal else None

    @property
    def started_at(self) -> datetime | None:
        """When the first event happened."""
        return parse_time(self.records[0].event.get("at")) if self.records else None

    @property
    def last_at(self) -> datetime | None:
        """When the last event happened."""
        return parse_time(self.records[-1].event.get("at")) if self.records else None


@dataclass(frozen=True)
class Selection:
    """Which requests a report is about. Integrity is always checked on everything read.

    Attributes:
        since: Requests that started at or after this instant.
        until: Requests that started at or before this instant.
        tenant: Requests of this tenant.
        request_ids: Requests with one of these caller ids.
    """

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    request_ids: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return bool(self.since or self.until or self.tenant or self.request_ids)

    def matches(self, timeline: Timeline) -> bool:
        """Whether ``timeline`` is selected."""
        if self.request_ids and timeline.request_id not in self.request_ids:
            return False
        if self.tenant is not None and timeline.tenant != self.tenant:
            return False
        if self.since or self.until:
            started = timeline.started_at
            if started is None:
                return False
            if self.since and started < self.since:
                return False
            if self.until and started > self.until:
                return False
        return True

    def describe(self) -> dict[str, Any]:
        """The filters, JSON-friendly."""
        return {
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat() if self.until else None,
            "tenant": self.tenant,
            "request_ids": sorted(self.request_ids),
        }


def build_timelines(records: Iterable[ParsedRecord]) -> dict[str, Timeline]:
    """Group ledger records by Airlock id, each timeline in ledger order.

    A request's events share a key, hence a partition, so ledger order is causal order; if
    a partition count change ever split a request, its events are ordered by time.
    """
    timelines: dict[str, Timeline] = {}
    split: set[str] = set()
    for record in records:
        airlock_id = record.event.get("airlock_id")
        if type(airlock_id) is not str:
            airlock_id = str(airlock_id or "")
        timeline = timelines.get(airlock_id)
        if timeline is None:
            timeline = timelines[airlock_id] = Timeline(airlock_id, [record])
            continue
        if timeline.records[-1].partition != record.partition:
            split.add(airlock_id)
        timeline.records.append(record)
    for airlock_id in split:
        timeline = timelines[airlock_id]
        timeline.records.sort(key=lambda r: (str(r.event.get("at", "")), r.partition, r.seq))
    return timelines


@dataclass(frozen=True)
class LifecycleProblem:
    """A request whose recorded history is not a legal, finished (or young) lifecycle."""

    kind: str
    partition: int
    seq: int
    detail: str


def _who(timeline: Timeline) -> str:
    return f"request {timeline.request_id or '-'} (airlock id {timeline.airlock_id})"


#: The lifecycle as plain strings: judging millions of events should not build enums.
_NEXT: dict[str | None, frozenset[str]] = {
    (source.value if source else None): frozenset(target.value for target in targets)
    for source, targets in TRANSITIONS.items()
}
_TERMINAL = frozenset(state.value for state in TERMINAL)


def check_lifecycle(
    timeline: Timeline, *, as_of: datetime, max_in_flight_s: float
) -> tuple[State | None, LifecycleProblem | None]:
    """Check one request: every step legal from the start, and terminal or still young.

    Returns:
        The last state reached, and the first problem: ``None`` for a legal history that is
        terminal or in flight for at most ``max_in_flight_s``.
    """
    current: str | None = None
    for record in timeline.records:
        event = record.event
        if event.get("kind", "transition") != "transition":
            continue
        target, recorded_from = event.get("to_state"), event.get("from_state")
        if type(target) is str and target in _NEXT.get(current, ()) and recorded_from == current:
            current = target
            continue
        reached = State(current) if current else None
        if not _is_state(target):
            detail = f"{_who(timeline)}: unknown state {target!r}"
        else:
            claimed = f" (recorded as from {recorded_from or '∅'})" if recorded_from != current else ""
            detail = f"{_who(timeline)}: {current or '∅'} → {target}{claimed}"
        return reached, LifecycleProblem("illegal_transition", record.partition, record.seq, detail)
    if current is None or current in _TERMINAL:
        return (State(current) if current else None), None
    started = timeline.started_at
    age = (as_of - started).total_seconds() if started else float("inf")
    if age > max_in_flight_s:
        return State(current), LifecycleProblem(
            "incomplete_lifecycle",
            timeline.records[-1].partition,
            timeline.records[-1].seq,
            f"{_who(timeline)}: still {current} {age:.0f} s after it started (in-flight limit {max_in_flight_s:g} s)",
        )
    return State(current), None
