"""When to sign a checkpoint, and signing one: key, statement, witness.

Checkpoints are emitted by the sealing handler as records of the same outcome as the
ledger records they cover, so the stage runtime commits them in the same Kafka
transaction (and a fenced replica cannot emit one). Only once that transaction has
committed is the checkpoint written to the witness: a checkpoint of a transaction that
was rolled back (a failed commit, a poison retried) never reaches the write-once store,
where it would later read as a rewrite of the records sealed in its place. While the
witness cannot be written, sealing waits before its next batch (fail closed: the audit
topic keeps the events, and the ledger never runs more than one batch ahead of what the
witness vouches for).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from airlock.auditor.chain import ChainHead
from airlock.auditor.settings import AuditorSettings
from airlock.auditor.signing import Checkpoint, SigningKeys, sign_checkpoint
from airlock.auditor.witness import Witness, WitnessConflict

log = logging.getLogger("airlock.auditor.checkpoints")


def load_signing_keys(settings: AuditorSettings) -> SigningKeys:
    """The checkpoint signing ring, from the secret or the secret file in ``settings``."""
    inline = settings.signing_keys.get_secret_value() if settings.signing_keys else None
    return SigningKeys.load(inline, settings.signing_keys_file, variable="AIRLOCK_AUDITOR_SIGNING_KEYS")


@dataclass(frozen=True)
class CheckpointPolicy:
    """Sign a checkpoint every ``every`` records, and once a record waited ``interval_s`` for one.

    Attributes:
        every: Count rule: a checkpoint at each multiple of ``every`` (deterministic positions).
        interval_s: Time rule: the longest a sealed record goes without a checkpoint
            (plus the time to notice; see :mod:`airlock.auditor.ticker`).
    """

    every: int = 1000
    interval_s: float = 10.0

    def at_count(self, seq: int) -> bool:
        """Whether ``seq`` falls on the count rule."""
        return seq % self.every == 0


class Notary:
    """Signs checkpoints and has them witnessed.

    Args:
        keys: The signing key ring.
        ledger: The ledger topic the checkpoints speak for.
        witness: The witness directory, or ``None`` (Kafka only; truncation unprovable).
        retry_max_s: Longest pause between attempts at writing the witness.
    """

    def __init__(self, keys: SigningKeys, ledger: str, witness: Witness | None, retry_max_s: float = 30.0) -> None:
        self.keys = keys
        self.ledger = ledger
        self.witness = witness
        self._retry_max_s = retry_max_s
        self._backlog: deque[Checkpoint] = deque()
        self._drained = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None

    def sign(self, partition: int, head: ChainHead) -> Checkpoint:
        """A signed checkpoint of ``head`` (witnessed once it is committed: :meth:`committed`)."""
        return sign_checkpoint(self.keys, ledger=self.ledger, partition=partition, seq=head.seq, hash=head.hash)

    def committed(self, checkpoint: Checkpoint) -> None:
        """``checkpoint`` is committed to Kafka: write it to the witness (in the background)."""
        if self.witness is None:
            return
        self._backlog.append(checkpoint)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_backlog())

    async def settled(self) -> None:
        """Wait until every committed checkpoint is in the witness (sealing waits for this)."""
        async with self._drained:
            await self._drained.wait_for(lambda: not self._backlog)

    async def _write_backlog(self) -> None:
        assert self.witness is not None
        delay = 0.2
        while self._backlog:
            checkpoint = self._backlog[0]
            try:
                await asyncio.to_thread(self.witness.record, checkpoint)
            except WitnessConflict as conflict:
                # Both checkpoints are kept as evidence; verification reports the fork.
                log.error("ledger fork on partition %d at seq %d: %s", checkpoint.partition, checkpoint.seq, conflict)
            except OSError as error:
                log.error(
                    "cannot write the witness for partition %d seq %d (%s); sealing waits",
                    checkpoint.partition,
                    checkpoint.seq,
                    error.strerror or error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            self._backlog.popleft()
            delay = 0.2
        async with self._drained:
            self._drained.notify_all()
