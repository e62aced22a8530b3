"""The auditor's handler: seal each audit event into its partition's hash chain."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from airlock.auditor.chain import ChainHead, LedgerRecord, format_time, parse_canonical
from airlock.auditor.checkpointing import CheckpointPolicy, Notary
from airlock.auditor.signing import Checkpoint
from airlock.core import headers as h
from airlock.core.anomaly import AuditWatch
from airlock.core.errors import ErrorCode, StageError
from airlock.core.models import AuditEvent, utcnow
from airlock.core.stage import Incoming, Outcome, Outgoing, Result, StageContext

TailReader = Callable[[int, int], Awaitable[list[LedgerRecord]]]
"""``(partition, count) → last committed ledger records`` of that partition."""

#: Value of the ``airlock-control`` header on a checkpoint tick (see :mod:`airlock.auditor.ticker`).
CHECKPOINT_TICK = "checkpoint"


@dataclass
class _Chain:
    head: ChainHead
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: Seq of the last checkpoint; ``None`` when not known (loaded from the ledger).
    checkpointed: int | None = 0
    #: Monotonic time since which a sealed record waits for a checkpoint.
    pending_since: float | None = None


class SealHandler:
    """Appends audit events to the ledger, one chain per partition, each event once.

    The auditor consumes audit partition ``p`` and writes ledger partition ``p`` under a
    transactional producer bound to ``p``: it is the only writer of that chain, and a stale
    replica is fenced. The chain head is read back from the ledger whenever the partition
    is (re)assigned or uncommitted work is discarded, so it always continues from what is
    committed. Checkpoints are added to the outcome of the record they cover (count rule)
    or of a batch's last record (time rule, or a checkpoint tick), so they commit in the
    same transaction as the ledger records they vouch for.

    Args:
        context: Record builders.
        read_tail: Reads the last committed ledger records of a partition.
        dedupe_window: Event ids remembered per partition.
        notary: Signs and witnesses checkpoints.
        policy: When to checkpoint.
        clock: Monotonic seconds (tests pass their own).
        watch: Judges the sealed events' rates per tenant; its anomaly notices join the
            outcome of the event that revealed them (and come back through the audit topic).
    """

    def __init__(
        self,
        context: StageContext,
        read_tail: TailReader,
        dedupe_window: int,
        *,
        notary: Notary,
        policy: CheckpointPolicy,
        clock: Callable[[], float] = time.monotonic,
        watch: AuditWatch | None = None,
    ) -> None:
        self._context = context
        self._watch = watch
        self._read_tail = read_tail
        self._window = dedupe_window
        self._notary = notary
        self._policy = policy
        self._clock = clock
        self._chains: dict[int, _Chain] = {}
        self._epochs: dict[int, int] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def on_reset(self, partition: int) -> None:
        """Forget the partition's head; it is reloaded from the ledger before next use."""
        self._chains.pop(partition, None)
        self._epochs[partition] = self._epochs.get(partition, 0) + 1

    def epoch(self, partition: int) -> int:
        """Counts resets of ``partition`` (the ticker uses it to notice reassignments)."""
        return self._epochs.get(partition, 0)

    def checkpoint_due(self, partition: int, now: float) -> bool | None:
        """Whether the time rule calls for a checkpoint; ``None`` when the chain is not loaded."""
        chain = self._chains.get(partition)
        if chain is None:
            return None
        return (
            chain.head.seq != chain.checkpointed
            and chain.pending_since is not None
            and now - chain.pending_since >= self._policy.interval_s
        )

    async def _chain(self, partition: int) -> _Chain:
        chain = self._chains.get(partition)
        if chain is None:
            tail = await self._read_tail(partition, max(self._window, 1))
            head = ChainHead.after(tail[-1]) if tail else ChainHead()
            # The count rule's checkpoints commit with their record; any other tail is
            # treated as not yet vouched for, and gets one once the interval has passed.
            known = head.seq == 0 or self._policy.at_count(head.seq)
            chain = _Chain(head, checkpointed=head.seq if known else None)
            if not known:
                chain.pending_since = self._clock()
            for record in tail:
                self._remember(chain, str(record.event.get("event_id", "")))
            self._chains[partition] = chain
        return chain

    def _remember(self, chain: _Chain, event_id: str) -> None:
        chain.recent[event_id] = None
        while len(chain.recent) > self._window:
            chain.recent.popitem(last=False)

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Seal a batch of one partition in order, adding the checkpoints that fall due."""
        if not batch:
            return []
        partition = batch[0].partition
        # Fail closed: no new seal while a committed checkpoint is not in the witness yet.
        await self._notary.settled()
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            # Updated in place: whenever an outcome is not committed the runtime calls
            # on_reset, which drops this chain and reloads it from the ledger.
            chain = await self._chain(partition)
            results: list[Outcome] = []
            ticked = False
            sealed_at = format_time(utcnow())
            for incoming in batch:
                if incoming.safe_header(h.CONTROL) == CHECKPOINT_TICK and incoming.signed_by in (None, "auditor"):
                    ticked = True
                    results.append(Outcome())
                    continue
                before = chain.head.seq
                outcome = self._seal(chain, incoming, sealed_at)
                if chain.head.seq != before and self._policy.at_count(chain.head.seq):
                    await self._add_checkpoint(partition, chain, outcome)
                results.append(outcome)
            waited = chain.pending_since is not None and self._clock() - chain.pending_since >= self._policy.interval_s
            if chain.head.seq > 0 and chain.head.seq != chain.checkpointed and (ticked or waited):
                await self._add_checkpoint(partition, chain, results[-1])
            return results

    def committed(self, incoming: Incoming | None, outcome: Outcome) -> None:
        """After the runtime committed ``outcome``: have its checkpoints witnessed."""
        for record in outcome.records:
            checkpoint = Checkpoint.parse(record.value) if record.topic == self._context.topics.checkpoints else None
            if checkpoint is not None:
                self._notary.committed(checkpoint)

    async def witnessed(self) -> None:
        """Wait until every committed checkpoint is in the witness."""
        await self._notary.settled()

    async def _add_checkpoint(self, partition: int, chain: _Chain, outcome: Outcome) -> None:
        checkpoint = self._notary.sign(partition, chain.head)
        outcome.records.append(
            Outgoing(topic=self._context.topics.checkpoints, value=checkpoint.to_bytes(), key=str(partition).encode())
        )
        chain.checkpointed, chain.pending_since = chain.head.seq, None

    def _seal(self, chain: _Chain, incoming: Incoming, sealed_at: str) -> Outcome:
        try:
            # CanonicalizationError and UnicodeDecodeError are ValueErrors too.
            document, canonical_event = parse_canonical(incoming.value)
            event = AuditEvent.model_validate(document)
        except (ValueError, ValidationError):
            return self._context.poison(
                incoming, StageError(ErrorCode.SCHEMA_INVALID, "audit record is not an audit event")
            )
        if incoming.signed_by is not None and event.stage != incoming.signed_by:
            # Signed by a stage, but in another stage's name: the evidence would lie.
            reason = f"audit event of stage {event.stage[:32]!r} signed by stage {incoming.signed_by}"
            return self._context.poison(incoming, StageError(ErrorCode.UNAUTHENTIC_RECORD, reason))
        if event.event_id in chain.recent:
            return Outcome()  # already sealed: a replayed stage re-emitted it
        source = (incoming.topic, incoming.partition, incoming.offset)
        chain.head, record = chain.head.seal(incoming.partition, canonical_event, source, sealed_at)
        self._remember(chain, event.event_id)
        if chain.pending_since is None:
            chain.pending_since = self._clock()
        notices = [a.notice(self._context) for a in self._watch.observe(event)] if self._watch is not None else []
        return Outcome(
            records=[
                Outgoing(
                    topic=self._context.topics.ledger,
                    value=record,
                    key=event.airlock_id.encode(),
                    partition=incoming.partition,
                )
            ],
            events=notices,
        )

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Sealing kept failing (ledger unreadable?): dead-letter the event, noted."""
        return self._context.poison(incoming, StageError(ErrorCode.INTERNAL, f"could not seal: {type(error).__name__}"))
