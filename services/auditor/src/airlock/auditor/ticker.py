"""The time rule with no traffic: a nudge through the audit topic itself.

The sealing handler signs time-rule checkpoints at the end of a batch, but a partition
that receives no more audit events has no batch to end. Emitting the checkpoint from a
timer would bypass the stage runtime's transaction and its fencing, so instead the ticker
publishes a small control record (header ``airlock-control: checkpoint``) to the idle
audit partition. It comes back through the runtime like any audit record; the handler
seals nothing for it and adds the due checkpoint to its outcome, which the partition's
fenced transactional producer commits with the consumer offset. A stale replica's ticks
are harmless: they only ever make the current owner sign its own committed head.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from airlock.auditor.handlers import SealHandler

log = logging.getLogger("airlock.auditor.ticker")

Publish = Callable[[int], Awaitable[None]]
"""Publishes a checkpoint tick to one audit partition."""


class CheckpointTicker:
    """Decides which owned partitions need a tick, and sends them.

    Args:
        handler: The sealing handler (knows each chain's checkpoint state).
        owned: The audit partitions this process currently owns.
        publish: Sends a tick to a partition.
        interval_s: The checkpoint interval; at most one tick per partition per interval.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        handler: SealHandler,
        owned: Callable[[], Iterable[int]],
        publish: Publish,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handler = handler
        self._owned = owned
        self._publish = publish
        self._interval_s = interval_s
        self._clock = clock
        self._ticked: dict[int, tuple[int, float]] = {}

    @property
    def period_s(self) -> float:
        """How often :meth:`run` looks."""
        return max(0.05, min(1.0, self._interval_s / 4))

    def due(self, now: float) -> list[int]:
        """Partitions to tick now; marks them as ticked."""
        owned = set(self._owned())
        for partition in [p for p in self._ticked if p not in owned]:
            del self._ticked[partition]
        chosen = []
        for partition in sorted(owned):
            epoch = self._handler.epoch(partition)
            last = self._ticked.get(partition)
            fresh = last is None or last[0] != epoch
            state = self._handler.checkpoint_due(partition, now)
            # state None: just (re)assigned and idle. One tick loads the chain, so a tail
            # the previous owner left without a checkpoint gets one.
            repeat = fresh or last is None or now - last[1] >= self._interval_s
            wanted = fresh if state is None else state and repeat
            if wanted:
                self._ticked[partition] = (epoch, now)
                chosen.append(partition)
        return chosen

    async def run(self) -> None:
        """Tick due partitions until cancelled."""
        while True:
            await asyncio.sleep(self.period_s)
            for partition in self.due(self._clock()):
                try:
                    await self._publish(partition)
                except Exception as error:  # the next round retries; sealing is unaffected
                    log.warning("checkpoint tick for partition %d failed: %s", partition, error)
