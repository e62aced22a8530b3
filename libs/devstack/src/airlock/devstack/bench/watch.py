"""What the benchmarks watch while they run: committed records on topics, and processes' memory and CPU.

* :class:`TopicFollower` reads topics with ``read_committed`` (what a downstream consumer can
  see) and notes when each record became visible, so drain rates come from the broker's
  point of view, not from a service's log.
* :class:`LedgerTally` reads the auditor's ledger and counts each request's terminal states,
  the third count of the zero-loss check (published = replied = sealed as terminal).
* :class:`ProcessMonitor` samples resident memory (psutil) of named processes in a thread
  and keeps the peak per named window ("at rest", "under load"); CPU time per process is
  read at step boundaries for CPU-per-request figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import psutil
from aiokafka import ConsumerRecord, TopicPartition

from airlock.core import reading
from airlock.core.lifecycle import TERMINAL
from airlock.core.reading import TopicReader
from airlock.core.settings import KafkaSettings


class TopicFollower:
    """Follows topics (``read_committed``, from the beginning) and timestamps every record.

    Args:
        kafka: Connection settings.
        topics: Topics to follow.
        on_record: Called with each record (in the follower's task).
        fetch_max_wait_ms: How long the broker may hold a fetch with nothing new (the
            follower's own latency).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Iterable[str],
        on_record: Callable[[ConsumerRecord], None] | None = None,
        *,
        fetch_max_wait_ms: int = 20,
    ) -> None:
        self.topics = list(topics)
        self._on_record = on_record
        #: Topic → the ``time.perf_counter()`` at which each of its records was read.
        self.seen: dict[str, list[float]] = {topic: [] for topic in self.topics}
        self._reader = TopicReader(
            kafka,
            self.topics,
            self._read,
            fetch_max_wait_ms=fetch_max_wait_ms,
            poll_timeout_ms=100,
            max_records=10_000,
        )

    async def start(self, *, from_end: bool = False) -> TopicFollower:
        """Assign every partition and start reading from the beginning (or only what comes next)."""
        await self._reader.start(reading.from_end if from_end else reading.from_beginning)
        return self

    def _read(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        self.seen[tp.topic].extend([time.perf_counter()] * len(records))
        if self._on_record is not None:
            for record in records:
                self._on_record(record)

    def count(self, topic: str) -> int:
        """Records of ``topic`` read so far."""
        return len(self.seen[topic])

    async def wait_for(self, topic: str, count: int, *, idle_timeout_s: float) -> bool:
        """Wait until ``count`` records of ``topic`` were read; give up after ``idle_timeout_s`` without progress."""
        last, changed = self.count(topic), time.monotonic()
        while self.count(topic) < count:
            if self._reader.task is not None and self._reader.task.done():
                self._reader.task.result()  # re-raise the follower's failure
            if self.count(topic) != last:
                last, changed = self.count(topic), time.monotonic()
            elif time.monotonic() - changed > idle_timeout_s:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        """Stop reading."""
        await self._reader.stop()


async def until_reached(progress: Callable[[], int], target: int, *, idle_timeout_s: float, poll_s: float = 0.2) -> int:
    """Wait until ``progress()`` reaches ``target``, or stops moving for ``idle_timeout_s``; return it.

    A backlog that still drains, however slowly, is waited for; only a stall ends the wait early.
    """
    last, changed = -1, time.monotonic()
    while True:
        count = progress()
        if count >= target:
            return count
        if count != last:
            last, changed = count, time.monotonic()
        elif time.monotonic() - changed > idle_timeout_s:
            return count
        await asyncio.sleep(poll_s)


class LedgerTally:
    """Terminal states per request id, from sealed ledger records (feed it :meth:`add`)."""

    def __init__(self) -> None:
        #: Request id → terminal states sealed for it (more than one would be a duplicate).
        self.terminal: dict[str, list[str]] = {}
        #: Request id → state → when the stage entering it made the transition (epoch seconds).
        self.entered: dict[str, dict[str, float]] = {}
        self.records = 0

    def add(self, record: ConsumerRecord) -> None:
        """Count one ledger record."""
        self.records += 1
        try:
            event = json.loads(record.value or b"")["event"]
        except (ValueError, KeyError, TypeError):
            return
        state, request_id = event.get("to_state"), event.get("request_id")
        if event.get("kind", "transition") != "transition" or not request_id or not state:
            return
        with contextlib.suppress(TypeError, ValueError):
            self.entered.setdefault(request_id, {}).setdefault(state, datetime.fromisoformat(event["at"]).timestamp())
        if state in {s.value for s in TERMINAL}:
            self.terminal.setdefault(request_id, []).append(state)

    def summary(self, request_ids: Iterable[str]) -> dict[str, Any]:
        """Counts for ``request_ids``: sealed terminal, by state, missing, sealed twice."""
        ids = list(request_ids)
        by_state: dict[str, int] = {}
        missing = twice = 0
        for request_id in ids:
            states = self.terminal.get(request_id, [])
            if not states:
                missing += 1
                continue
            twice += len(states) > 1
            by_state[states[0]] = by_state.get(states[0], 0) + 1
        return {"terminal": len(ids) - missing, "by_state": by_state, "missing": missing, "duplicates": twice}


#: The path of a delivered request through the ledger: (hop name, state left, state entered).
HOPS: tuple[tuple[str, str, str], ...] = (
    ("publish → ingest", "published", "ACCEPTED"),
    ("ingest → redactor", "ACCEPTED", "REDACTED"),
    ("redactor → llm-worker (incl. model)", "REDACTED", "COMPLETED"),
    ("llm-worker → redactor (restore)", "COMPLETED", "DELIVERED"),
    ("redactor → client (reply)", "DELIVERED", "replied"),
)


def hop_times(
    entered: Mapping[str, Mapping[str, float]],
    published: Mapping[str, float],
    replied: Mapping[str, float],
    request_ids: Iterable[str],
) -> dict[str, list[float]]:
    """Milliseconds spent between consecutive transitions of each delivered request, per hop.

    Each interval runs from one stage's transition timestamp to the next one's, so it holds
    the first stage's commit, the next stage's fetch, its queue and its work. ``published``
    and ``replied`` are the client's wall-clock send and reply times (the same machine's clock).
    """
    found: dict[str, list[float]] = {name: [] for name, _, _ in HOPS}
    for request_id in request_ids:
        times = {**entered.get(request_id, {})}
        if request_id in published:
            times["published"] = published[request_id]
        if request_id in replied:
            times["replied"] = replied[request_id]
        if not all(state in times for _, start, end in HOPS for state in (start, end)):
            continue
        for name, start, end in HOPS:
            found[name].append(1000 * (times[end] - times[start]))
    return found


class ProcessMonitor:
    """Peak resident memory of named processes per window, sampled in a background thread.

    Args:
        processes: Label → pid (a label like ``redactor-0``; the part before the last ``-``
            groups replicas of a service).
        interval_s: Sampling period.
    """

    def __init__(self, processes: Mapping[str, int], interval_s: float = 0.25) -> None:
        self._processes = {label: psutil.Process(pid) for label, pid in processes.items()}
        self._interval = interval_s
        self._window: str | None = None
        #: Window → label → peak RSS in bytes.
        self.peaks: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)

    def start(self) -> ProcessMonitor:
        """Start sampling (nothing is recorded until a window is opened)."""
        self._thread.start()
        return self

    def window(self, name: str | None) -> None:
        """Record further samples under ``name`` (``None``: stop recording)."""
        with self._lock:
            self._window = name
            if name is not None:
                self.peaks.setdefault(name, {})
        self._sample()

    def _sample(self) -> None:
        with self._lock:
            window = self._window
            if window is None:
                return
            peaks = self.peaks[window]
            for label, process in self._processes.items():
                try:
                    rss = int(process.memory_info().rss)
                except psutil.Error:
                    continue
                peaks[label] = max(peaks.get(label, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time so far, per label."""
        found: dict[str, float] = {}
        for label, process in self._processes.items():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            found[label] = times.user + times.system
        return found

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)


def service_of(label: str) -> str:
    """``redactor-1`` → ``redactor`` (labels without a replica number are their own service)."""
    head, _, tail = label.rpartition("-")
    return head if head and tail.isdigit() else label


def per_service(values: Mapping[str, float]) -> dict[str, float]:
    """Sum per-replica figures into per-service figures."""
    totals: dict[str, float] = {}
    for label, value in values.items():
        totals[service_of(label)] = totals.get(service_of(label), 0.0) + value
    return totals
