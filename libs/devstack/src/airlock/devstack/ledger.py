"""Small ledger helpers for the CLI demo and tests."""

from __future__ import annotations

import asyncio
import time

from airlock.auditor.reader import read_ledger
from airlock.auditor.replay import Timeline, replay
from airlock.core.lifecycle import TERMINAL
from airlock.core.settings import KafkaSettings
from airlock.core.topics import Topics


async def wait_for_timeline(kafka: KafkaSettings, request_id: str, timeout_s: float = 30.0) -> list[Timeline]:
    """Poll the ledger until the request's timeline reaches a terminal state."""
    deadline = time.monotonic() + timeout_s
    timelines: list[Timeline] = []
    while time.monotonic() < deadline:
        ledger = await read_ledger(kafka, Topics(kafka.topic_prefix).ledger)
        report = replay({p: [v for _, v in r] for p, r in ledger.items()}, request_id=request_id)
        timelines = list(report.timelines.values())
        if timelines and all(t.terminal in TERMINAL for t in timelines):
            return timelines
        await asyncio.sleep(0.5)
    return timelines
