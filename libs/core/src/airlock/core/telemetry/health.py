"""Readiness: what ``/readyz`` checks besides the process being alive.

A stage is ready when it has started, is not draining, its consumer is subscribed (with
partitions, or waiting for an assignment — a replica beyond the partition count waits and
is still healthy), Kafka answers, and every check the service registered passes (models
and engines loaded, side channels caught up). Each check returns ``None`` when fine, else
a short reason shown in the body.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

Check = Callable[[], "str | Awaitable[str | None] | None"]
"""A readiness check: ``None`` when fine, else a short reason (no secrets, no text)."""

#: A check slower than this counts as failed: probes have timeouts of a few seconds.
CHECK_TIMEOUT_S = 2.0
#: A partition fetched from this recently proves the broker reachable without asking it.
FETCH_FRESH_S = 10.0
#: How long a metadata probe's verdict is reused.
PROBE_TTL_S = 5.0


@dataclass
class BrokerProbe:
    """Is Kafka reachable? Judged from the consumer's own traffic, asking the broker only when idle.

    A consumer fetches its partitions continuously (an empty fetch returns after the fetch
    wait), so a recent fetch on any assigned partition proves the connection; a consumer
    with no partitions asks for metadata, at most every :data:`PROBE_TTL_S` seconds.
    """

    clock: Callable[[], float] = time.time
    _verdict: str | None = None
    _checked_at: float = field(default=-1e18)

    async def __call__(self, consumer: Any, assigned: Sequence[TopicPartition]) -> str | None:
        """``None`` when Kafka answers, else the reason it seems not to."""
        now = self.clock()
        for tp in assigned:
            try:
                last_ms = consumer.last_poll_timestamp(tp)
            except (AssertionError, AttributeError, KeyError):
                continue
            if last_ms and now - last_ms / 1000 < FETCH_FRESH_S:
                return None
        if now - self._checked_at < PROBE_TTL_S:
            return self._verdict
        try:
            await asyncio.wait_for(consumer.topics(), CHECK_TIMEOUT_S)
            verdict = None
        except TimeoutError:
            verdict = f"no metadata from Kafka within {CHECK_TIMEOUT_S:.0f}s"
        except Exception as error:  # any client error means "not reachable" here
            verdict = f"Kafka metadata request failed ({type(error).__name__})"
        self._verdict, self._checked_at = verdict, self.clock()
        return verdict


async def run_checks(checks: Mapping[str, Check]) -> dict[str, str | None]:
    """Run every check (each bounded by :data:`CHECK_TIMEOUT_S`); name → ``None`` or reason."""
    results: dict[str, str | None] = {}
    for name, check in checks.items():
        try:
            outcome = check()
            if inspect.isawaitable(outcome):
                outcome = await asyncio.wait_for(outcome, CHECK_TIMEOUT_S)
            results[name] = outcome
        except TimeoutError:
            results[name] = f"check did not answer within {CHECK_TIMEOUT_S:.0f}s"
        except Exception as error:  # a failing check is a reason, not a crash of the probe
            results[name] = f"check failed ({type(error).__name__})"
    return results
