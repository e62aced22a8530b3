"""The auditor's handler: seal each audit event into its partition's hash chain."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from airlock.auditor.chain import ChainHead, LedgerRecord, Source
from airlock.core.errors import ErrorCode, StageError
from airlock.core.models import AuditEvent, utcnow
from airlock.core.stage import Incoming, Outcome, Outgoing, Result, StageContext

TailReader = Callable[[int, int], Awaitable[list[LedgerRecord]]]
"""``(partition, count) → last committed ledger records`` of that partition."""


@dataclass
class _Chain:
    head: ChainHead
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)


class SealHandler:
    """Appends audit events to the ledger, one chain per partition, each event once.

    The auditor consumes audit partition ``p`` and writes ledger partition ``p`` under a
    transactional producer bound to ``p``: it is the only writer of that chain, and a stale
    replica is fenced. The chain head is read back from the ledger whenever the partition
    is (re)assigned or uncommitted work is discarded, so it always continues from what is
    committed.

    Args:
        context: Record builders.
        read_tail: Reads the last committed ledger records of a partition.
        dedupe_window: Event ids remembered per partition.
    """

    def __init__(self, context: StageContext, read_tail: TailReader, dedupe_window: int) -> None:
        self._context = context
        self._read_tail = read_tail
        self._window = dedupe_window
        self._chains: dict[int, _Chain] = {}
        self._epochs: dict[int, int] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def on_reset(self, partition: int) -> None:
        """Forget the partition's head; it is reloaded from the ledger before next use."""
        self._chains.pop(partition, None)
        self._epochs[partition] = self._epochs.get(partition, 0) + 1

    async def _chain(self, partition: int) -> _Chain:
        chain = self._chains.get(partition)
        if chain is None:
            tail = await self._read_tail(partition, max(self._window, 1))
            head = ChainHead.after(tail[-1]) if tail else ChainHead()
            chain = _Chain(head)
            for record in tail:
                self._remember(chain, str(record.event.get("event_id", "")))
            self._chains[partition] = chain
        return chain

    def _remember(self, chain: _Chain, event_id: str) -> None:
        chain.recent[event_id] = None
        while len(chain.recent) > self._window:
            chain.recent.popitem(last=False)

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Seal a batch of one partition in order."""
        if not batch:
            return []
        partition = batch[0].partition
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            epoch = self._epochs.get(partition, 0)
            chain = await self._chain(partition)
            # Work on copies: the state only advances if no reset happened meanwhile.
            head = chain.head
            recent = OrderedDict(chain.recent)
            working = _Chain(head, recent)
            results: list[Result] = [self._seal(working, incoming) for incoming in batch]
            if self._epochs.get(partition, 0) == epoch and self._chains.get(partition) is chain:
                self._chains[partition] = working
            return results

    def _seal(self, chain: _Chain, incoming: Incoming) -> Outcome:
        try:
            document = json.loads(incoming.value)
            event = AuditEvent.model_validate(document)
        except (ValueError, ValidationError, UnicodeDecodeError):
            return self._context.poison(
                incoming, StageError(ErrorCode.SCHEMA_INVALID, "audit record is not an audit event")
            )
        if event.event_id in chain.recent:
            return Outcome()  # already sealed: a replayed stage re-emitted it
        source = Source(topic=incoming.topic, partition=incoming.partition, offset=incoming.offset)
        record = chain.head.extend(incoming.partition, document, source, utcnow())
        chain.head = ChainHead.after(record)
        self._remember(chain, event.event_id)
        return Outcome(
            records=[
                Outgoing(
                    topic=self._context.topics.ledger,
                    value=record.to_bytes(),
                    key=event.airlock_id.encode(),
                    partition=incoming.partition,
                )
            ]
        )

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Sealing kept failing (ledger unreadable?): dead-letter the event, noted."""
        return self._context.poison(incoming, StageError(ErrorCode.INTERNAL, f"could not seal: {type(error).__name__}"))
