import asyncio
import json
from pathlib import Path

import pytest

from airlock.auditor.chain import parse_record
from airlock.auditor.signing import Checkpoint
from airlock.auditor.ticker import CheckpointTicker
from airlock.auditor.verify import Evidence, verify
from airlock.auditor.witness import read_witness
from airlock.core import headers as h
from airlock.devstack.bench.audit import Sealer, audit_records, dev_keys


def ledger_seqs(outcome) -> list[int]:
    return [parse_record(r.value).seq for r in outcome.records if r.topic.endswith(".ledger")]


def checkpoint_seqs(outcome) -> list[int]:
    return [Checkpoint.parse(r.value).seq for r in outcome.records if r.topic.endswith("ledger.checkpoints")]


def evidence(sealer: Sealer, root: Path | None) -> Evidence:
    witness = read_witness(root / sealer.sealed.ledger) if root else None
    return Evidence(
        ledger=sealer.sealed.ledger,
        partitions=sealer.sealed.partitions,
        checkpoints=sealer.sealed.checkpoints,
        witness=witness,
        keys=sealer.keys.public_keys(),
    )


async def test_count_rule_checkpoint_travels_in_the_outcome_of_the_record_it_covers(tmp_path: Path) -> None:
    sealer = Sealer(dev_keys(), tmp_path, every=10)
    await sealer.feed(0, audit_records(10)[0][:25], batch=7)

    carrying = [o for o in sealer.sealed.outcomes if checkpoint_seqs(o)]
    assert [(ledger_seqs(o), checkpoint_seqs(o)) for o in carrying] == [([10], [10]), ([20], [20])]
    by_seq = {parse_record(r).seq: parse_record(r).hash for r in sealer.sealed.partitions[0]}
    for raw in sealer.sealed.checkpoints:
        checkpoint = Checkpoint.parse(raw)
        assert checkpoint.hash == by_seq[checkpoint.seq]
        assert checkpoint.verify(sealer.keys.public_keys()) is None
    witnessed = sorted(name for name, _ in read_witness(tmp_path / sealer.sealed.ledger).checkpoints)
    assert witnessed == [f"0/{10:016d}.json", f"0/{20:016d}.json"]
    report = verify(evidence(sealer, tmp_path))
    assert report.integrity_ok and report.partitions[0].anchored_seq == 20 and report.partitions[0].unanchored == 5


async def test_time_rule_adds_a_checkpoint_at_the_end_of_a_batch(tmp_path: Path) -> None:
    sealer = Sealer(dev_keys(), tmp_path, every=1000, interval_s=5)
    records = audit_records(10)[0]
    await sealer.feed(0, records[:3])
    assert sealer.sealed.checkpoints == []
    sealer.now = 5.5
    await sealer.feed(0, records[3:6], batch=2)
    assert [Checkpoint.parse(c).seq for c in sealer.sealed.checkpoints] == [5]
    assert checkpoint_seqs(sealer.sealed.outcomes[-2]) == [5] and ledger_seqs(sealer.sealed.outcomes[-2]) == [5]


async def test_idle_partition_gets_its_checkpoint_through_a_tick(tmp_path: Path) -> None:
    sealer = Sealer(dev_keys(), tmp_path, every=1000, interval_s=5)
    ticker = CheckpointTicker(sealer.handler, lambda: [0], publish=_never, interval_s=5, clock=lambda: sealer.now)
    await sealer.feed(0, audit_records(10)[0][:5])
    assert ticker.due(1.0) == []
    sealer.now = 6.0
    assert ticker.due(6.0) == [0]
    assert ticker.due(6.5) == []  # at most one tick per interval while it is in flight

    await sealer.tick(0)

    tick_outcome = sealer.sealed.outcomes[-1]
    assert ledger_seqs(tick_outcome) == [] and checkpoint_seqs(tick_outcome) == [5]
    assert ticker.due(20.0) == []  # nothing left to vouch for
    await sealer.tick(0)
    assert sealer.sealed.outcomes[-1].records == []  # a tick with nothing pending signs nothing
    assert verify(evidence(sealer, tmp_path)).partitions[0].unanchored == 0


async def test_reassigned_partition_reloads_its_head_and_vouches_for_an_unknown_tail(tmp_path: Path) -> None:
    sealer = Sealer(dev_keys(), tmp_path, every=1000, interval_s=5)
    ticker = CheckpointTicker(sealer.handler, lambda: [0], publish=_never, interval_s=5, clock=lambda: sealer.now)
    records = audit_records(4)[0]
    await sealer.feed(0, records[:7])
    sealer.handler.on_reset(0)  # the partition moved away and back: in-memory state is gone

    assert ticker.due(0.1) == [0]  # not loaded: one tick loads it
    await sealer.tick(0)
    assert checkpoint_seqs(sealer.sealed.outcomes[-1]) == [7]
    await sealer.feed(0, records[7:])
    seqs = [parse_record(r).seq for r in sealer.sealed.partitions[0]]
    assert seqs == list(range(1, len(records) + 1))
    assert verify(evidence(sealer, tmp_path)).ok


async def test_replayed_audit_events_are_sealed_once_and_garbage_is_dead_lettered(tmp_path: Path) -> None:
    sealer = Sealer(dev_keys(), None)
    records = audit_records(10)[0]
    await sealer.feed(0, [*records, records[1], b"\xff not json", b'{"latency": NaN}', records[2]])
    assert len(sealer.sealed.partitions[0]) == len(records)
    poisoned = [o for o in sealer.sealed.outcomes if any(r.topic.endswith(".dlq") for r in o.records)]
    assert len(poisoned) == 2
    assert all(o.events[0].kind == "notice" and o.events[0].details.error_code == "schema_invalid" for o in poisoned)


async def test_sealing_waits_while_the_witness_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "witness"
    blocker.write_text("a file where the witness directory should be")
    sealer = Sealer(dev_keys(), blocker, every=2, witness_retry_max_s=0.05)
    records = audit_records(10)[0]

    first = asyncio.create_task(sealer.feed(0, records[:2]))  # committed with its checkpoint
    await asyncio.sleep(0.3)
    following = asyncio.create_task(sealer.feed(0, records[2:4]))
    await asyncio.sleep(0.5)
    assert not first.done() and not following.done()  # fail closed: the witness has not taken seq 2
    assert [ledger_seqs(o) for o in sealer.sealed.outcomes] == [[1], [2]], "nothing sealed past it"
    blocker.unlink()
    await asyncio.wait_for(asyncio.gather(first, following), 10)
    assert [Checkpoint.parse(c).seq for c in sealer.sealed.checkpoints] == [2, 4]
    assert (blocker / sealer.sealed.ledger / "0" / f"{2:016d}.json").exists()


async def test_a_checkpoint_that_was_never_committed_never_reaches_the_witness(tmp_path: Path) -> None:
    """A rolled-back transaction's checkpoint in the witness would later read as a rewrite."""
    sealer = Sealer(dev_keys(), tmp_path, every=2)
    records = audit_records(10)[0]
    rolled_back = await sealer.handler.process([sealer._incoming(0, value) for value in records[:2]])
    assert any(checkpoint_seqs(o) for o in rolled_back)  # signed, but its commit failed
    sealer.handler.on_reset(0)

    await sealer.feed(0, records[2:6])  # sealed in its place (seq 1-4), committed

    witnessed = sorted(name for name, _ in read_witness(tmp_path / sealer.sealed.ledger).checkpoints)
    assert witnessed == [f"0/{2:016d}.json", f"0/{4:016d}.json"]
    report = verify(evidence(sealer, tmp_path))
    assert report.integrity_ok, report


async def test_a_tick_is_recognised_by_its_header_only(tmp_path: Path) -> None:
    sealer = Sealer(dev_keys(), None)
    await sealer.feed(0, [json.dumps({"control": "checkpoint"}).encode()])
    assert any(r.topic.endswith(".dlq") for r in sealer.sealed.outcomes[-1].records)
    assert h.CONTROL == "airlock-control"


async def _never(partition: int) -> None:
    pytest.fail("the ticker should not publish in this test")
