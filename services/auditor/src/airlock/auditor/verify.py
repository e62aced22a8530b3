"""Verifying a ledger: chains, signed checkpoints, the witness, request lifecycles. Pure.

Takes the evidence as bytes (read from Kafka or from an exported bundle — the same code
judges both) and returns a :class:`Report` in the spirit of CloudTrail's ``validate-logs``:
``N/M records valid`` and one :class:`Finding` per problem, with its partition, seq and
kind:

* ``modified`` — a record's event no longer matches its hash, a record is unreadable, a
  record does not link to its predecessor, or the chain was rewritten (recomputed hashes
  no longer match a signed checkpoint);
* ``missing`` — seqs absent from the chain;
* ``reordered`` — a record out of place (the fewest records whose removal leaves the
  chain in order);
* ``inserted`` — a record that is not part of the sealed chain: a second record for a
  seq, a record of another partition, or a forged record whose recomputed chain the
  signed checkpoints expose;
* ``truncated`` — a signed checkpoint (from the topic or the witness) covers records the
  ledger no longer has;
* ``bad_signature`` — a checkpoint that is unreadable, signed by an unknown key, or whose
  signature does not verify;
* ``illegal_transition`` / ``incomplete_lifecycle`` — a selected request whose history is
  not a legal lifecycle, or that is neither terminal nor younger than the in-flight limit.
"""

from __future__ import annotations

import bisect
import gc
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airlock.auditor.chain import GENESIS, ParsedRecord, chain_hash, parse_record
from airlock.auditor.signing import Checkpoint, PublicKeys
from airlock.auditor.timelines import Selection, Timeline, build_timelines, check_lifecycle
from airlock.auditor.witness import WitnessContents
from airlock.core.lifecycle import TERMINAL

INTEGRITY_KINDS = ("modified", "missing", "reordered", "inserted", "truncated", "bad_signature")
LIFECYCLE_KINDS = ("illegal_transition", "incomplete_lifecycle")
#: Longest run of records searched for a single forged insertion (quadratic in the run).
FORENSIC_WINDOW = 2048


@dataclass(frozen=True)
class Finding:
    """One integrity or lifecycle problem: where, what kind, and a sentence."""

    kind: str
    partition: int | None
    seq: int | None
    detail: str

    @property
    def integrity(self) -> bool:
        """Whether this is an integrity failure (as opposed to a lifecycle one)."""
        return self.kind in INTEGRITY_KINDS

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"kind": self.kind, "partition": self.partition, "seq": self.seq, "detail": self.detail}


@dataclass(frozen=True)
class Segment:
    """The part of a partition's chain some evidence holds.

    Attributes:
        first_seq: The first seq present (an export with filters may start later than 1).
        to_end: Whether it runs to the ledger's end when read; only then can checkpoints
            beyond it prove truncation.
    """

    first_seq: int = 1
    to_end: bool = True


@dataclass
class Evidence:
    """Everything a verification looks at.

    Attributes:
        ledger: The ledger topic the checkpoints must name.
        partitions: Raw ledger records per partition, in topic order.
        checkpoints: Raw records of the checkpoint topic.
        witness: The witness's contents, or ``None`` when no witness is available.
        keys: Trusted public keys.
        key_source: Where the trusted keys came from (printed with the report).
        segments: Per partition, when the evidence holds only part of the chain.
        as_of: The reference time for in-flight ages (now, or when a bundle was exported).
        origin: What was read (a Kafka address, a bundle directory).
    """

    ledger: str
    partitions: Mapping[int, list[bytes]]
    checkpoints: list[bytes] = field(default_factory=list)
    witness: WitnessContents | None = None
    keys: PublicKeys = field(default_factory=PublicKeys)
    key_source: str = "none"
    segments: Mapping[int, Segment] = field(default_factory=dict)
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))
    origin: str = ""


@dataclass
class PartitionSummary:
    """What was found in one partition."""

    partition: int
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    anchored_seq: int = 0
    anchored_time: str | None = None
    unanchored: int = 0
    newest_unanchored: str | None = None
    segment: Segment = field(default_factory=Segment)


@dataclass
class Report:
    """What a verification found."""

    ledger: str = ""
    origin: str = ""
    key_source: str = ""
    trusted_keys: list[str] = field(default_factory=list)
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))
    max_in_flight_s: float = 0.0
    selection: Selection = field(default_factory=Selection)
    records: int = 0
    valid: int = 0
    checkpoints: int = 0
    checkpoints_valid: int = 0
    witnessed: int = 0
    witness_present: bool = False
    partitions: dict[int, PartitionSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timelines: dict[str, Timeline] = field(default_factory=dict)
    in_flight: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no integrity or lifecycle problem was found."""
        return not self.findings

    @property
    def integrity_ok(self) -> bool:
        """True when no integrity problem was found (lifecycle problems aside)."""
        return not any(f.integrity for f in self.findings)


# -- one partition's chain ------------------------------------------------------------------


def _out_of_order(seqs: list[int]) -> set[int]:
    """Positions not in one longest strictly increasing run: the fewest that are out of place."""
    if all(a < b for a, b in itertools.pairwise(seqs)):
        return set()
    tails: list[int] = []  # smallest tail seq of an increasing run of each length
    tail_at: list[int] = []
    parent = [-1] * len(seqs)
    for position, seq in enumerate(seqs):
        length = bisect.bisect_left(tails, seq)
        if length == len(tails):
            tails.append(seq)
            tail_at.append(position)
        else:
            tails[length], tail_at[length] = seq, position
        parent[position] = tail_at[length - 1] if length else -1
    keep: set[int] = set()
    position = tail_at[-1] if tail_at else -1
    while position >= 0:
        keep.add(position)
        position = parent[position]
    return set(range(len(seqs))) - keep


class _Chain:
    """Judges one partition: structure first, then checkpoints against it."""

    def __init__(self, partition: int, raws: list[bytes], segment: Segment, report: Report) -> None:
        self.partition = partition
        self.segment = segment
        self.report = report
        self.invalid: set[int] = set()  # positions in ``raws``
        self.parsed: list[ParsedRecord | None] = [parse_record(raw) for raw in raws]
        self.records: list[ParsedRecord] = []  # the chain as judged, in seq order
        self.positions: Sequence[int] = []  # each record's position in ``raws``
        # The chain hash at each record once recomputed (``None``: the stored hashes).
        self.hashes: list[str] | None = None
        # Effective seq → index in ``records`` (``None``: records are ``first_seq`` onwards, contiguous).
        self.index: dict[int, int] | None = None
        self.start_hash: str | None = GENESIS if segment.first_seq == 1 else None
        self.dropped: list[int] = []  # seqs of forged records found by the checkpoints
        self.unreadable: set[int] = set()  # seqs taken by unreadable records (reported as modified)
        self._structure()

    def _find(self, kind: str, seq: int | None, detail: str) -> None:
        self.report.findings.append(Finding(kind, self.partition, seq, detail))

    def _structure(self) -> None:
        if self._in_order():
            self._gaps_and_links()
            return
        candidates: dict[int, list[int]] = {}
        previous_seq = self.segment.first_seq - 1
        for position, record in enumerate(self.parsed):
            if record is None:
                self.invalid.add(position)
                previous_seq += 1
                self.unreadable.add(previous_seq)
                self._find("modified", previous_seq, f"not a readable ledger record (line {position + 1})")
                continue
            previous_seq = record.seq
            if record.partition != self.partition:
                self.invalid.add(position)
                self._find("inserted", record.seq, f"a record of partition {record.partition} in this partition")
                continue
            if not record.content_ok:
                self.invalid.add(position)
                self._find("modified", record.seq, "the event does not match the record's hash")
            candidates.setdefault(record.seq, []).append(position)
        chosen = {seq: self._genuine(seq, positions, candidates) for seq, positions in candidates.items()}
        in_topic_order = sorted(chosen.values())
        for out in sorted(_out_of_order([self._at(p).seq for p in in_topic_order])):
            position = in_topic_order[out]
            self.invalid.add(position)
            neighbours = [
                f"seq {self._at(in_topic_order[n]).seq}" for n in (out - 1, out + 1) if 0 <= n < len(in_topic_order)
            ]
            self._find("reordered", self._at(position).seq, f"out of place: stored next to {' and '.join(neighbours)}")
        ordered = sorted(chosen.items())
        self.records = [self._at(position) for _, position in ordered]
        self.positions = [position for _, position in ordered]
        self.index = {record.seq: i for i, record in enumerate(self.records)}
        self._gaps_and_links()

    def _in_order(self) -> bool:
        """The common case, checked in one pass: every record readable, intact, ours, in seq order."""
        expected, partition = self.segment.first_seq, self.partition
        records: list[ParsedRecord] = []
        for record in self.parsed:
            if record is None or record.seq != expected or record.partition != partition or not record.content_ok:
                return False
            records.append(record)
            expected += 1
        self.records = records
        self.positions = range(len(records))
        return True

    def _at(self, position: int) -> ParsedRecord:
        record = self.parsed[position]
        assert record is not None
        return record

    def _genuine(self, seq: int, positions: list[int], candidates: dict[int, list[int]]) -> int:
        """Of several records claiming ``seq``, the one that fits its neighbours; the rest are inserted."""
        if len(positions) == 1:
            return positions[0]

        def fit(position: int) -> tuple[int, int]:
            record = self._at(position)
            before = {self._at(p).hash for p in candidates.get(seq - 1, [])}
            after = {self._at(p).prev_hash for p in candidates.get(seq + 1, [])}
            linked = (record.prev_hash in before or (seq == 1 and record.prev_hash == GENESIS)) + (record.hash in after)
            return (record.content_ok + linked, -position)

        best = max(positions, key=fit)
        for position in positions:
            if position != best:
                self.invalid.add(position)
                duplicate = self._at(position).hash == self._at(best).hash
                detail = "a copy of the record at this seq" if duplicate else "a second record claims this seq"
                self._find("inserted", seq, detail)
        return best

    def _gaps_and_links(self) -> None:
        expected = self.segment.first_seq
        for i, record in enumerate(self.records):
            if record.seq > expected:
                self._missing(expected, record.seq - 1)
            elif i and record.prev_hash != self.records[i - 1].hash:
                behind = self.records[i - 2].hash if i >= 2 else None
                if behind is not None and record.prev_hash == behind:
                    self.invalid.add(self.positions[i - 1])
                    self._find("inserted", record.seq - 1, f"seq {record.seq} links past it, to seq {record.seq - 2}")
                else:
                    self.invalid.add(self.positions[i])
                    self._find("modified", record.seq, f"does not link to seq {record.seq - 1} (prev_hash differs)")
            elif i == 0 and record.seq == 1 and record.prev_hash != GENESIS:
                self.invalid.add(self.positions[i])
                self._find("modified", 1, "the first record does not start from the genesis hash")
            expected = record.seq + 1
        if self.records and self.start_hash is None:
            self.start_hash = self.records[0].prev_hash

    def _missing(self, first: int, last: int) -> None:
        """Report the seqs ``first..last`` that no record (readable or not) takes."""
        taken = sorted(seq for seq in self.unreadable if first <= seq <= last)
        start = first
        for end in [*taken, last + 1]:  # runs between the seqs unreadable records take
            if start < end:
                span = f"seq {start}" if end - 1 == start else f"seqs {start}–{end - 1}"
                self._find("missing", start, f"{span} missing (seq {last + 1} follows)")
            start = end + 1

    # -- checkpoints ------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest effective seq present (``first_seq - 1`` when empty)."""
        if self.index is None:
            return self.segment.first_seq + len(self.records) - 1
        return max(self.index, default=self.segment.first_seq - 1)

    def _index_of(self, seq: int) -> int | None:
        if self.index is None:
            i = seq - self.segment.first_seq
            return i if 0 <= i < len(self.records) else None
        return self.index.get(seq)

    def _hash_at(self, i: int) -> str:
        return self.records[i].hash if self.hashes is None else self.hashes[i]

    def anchor(self, checkpoints: list[tuple[int, str, str]], summary: PartitionSummary) -> None:
        """Match signed ``(seq, hash, description)`` checkpoints, in seq order, against the chain."""
        anchor_index = -1
        truncated = [c for c in checkpoints if c[0] > self.last_seq]
        if truncated and self.segment.to_end:
            seq, _, described = truncated[-1]
            self._find(
                "truncated",
                self.last_seq + 1,
                f"the ledger ends at seq {self.last_seq}, but {described} covers up to seq {seq}",
            )
        for seq, digest, described in checkpoints:
            i = self._index_of(seq)
            if i is None or i <= anchor_index:
                continue  # beyond the end (reported above) or in a gap (reported as missing)
            if self._hash_at(i) != digest and not self._explain_insertion(anchor_index, seq, digest):
                first = self.records[anchor_index].seq + 1 if anchor_index >= 0 else self.segment.first_seq
                for j in range(anchor_index + 1, i + 1):
                    self.invalid.add(self.positions[j])
                self._find(
                    "modified",
                    seq,
                    f"the chain does not match {described}: seqs {first}–{seq} were rewritten",
                )
                continue
            anchor_index = i
            summary.anchored_seq, summary.anchored_time = seq, described
        tail = self.records[anchor_index + 1 :]
        summary.unanchored = len(tail)
        summary.newest_unanchored = tail[-1].sealed_at if tail else None

    def _explain_insertion(self, anchor_index: int, seq: int, digest: str) -> bool:
        """Whether dropping one record after the anchor makes the chain reach ``digest`` at ``seq``.

        A forger who inserts a record and recomputes every later hash keeps the chain
        consistent, but cannot make it pass through a signed checkpoint again; without
        the forged record, it does. On success the record is reported and dropped, and
        the chain is recomputed without it so later checkpoints are judged on that.
        """
        start = anchor_index + 1
        base = self._hash_at(anchor_index) if anchor_index >= 0 else self.start_hash
        after, at = self._index_of(seq + 1), self._index_of(seq)
        end = after if after is not None else (at if at is not None else -1)
        if base is None or end < start or end - start > FORENSIC_WINDOW:
            return False
        steps = seq - (self.records[anchor_index].seq if anchor_index >= 0 else self.segment.first_seq - 1)
        for skip in range(start, end + 1):
            current = self._hash_at(skip - 1) if skip > start else base
            done = skip - start
            for k in range(skip + 1, end + 1):
                if done == steps:
                    break
                current = chain_hash(current, self.records[k].event_bytes)
                done += 1
            if done == steps and current == digest:
                self._drop(skip, base if skip == start else self._hash_at(skip - 1))
                return True
        return False

    def _drop(self, skip: int, prev_hash: str) -> None:
        forged = self.records[skip]
        self.invalid.add(self.positions[skip])
        self._find("inserted", forged.seq, "a forged record: without it the chain matches the signed checkpoint")
        hashes = [self._hash_at(k) for k in range(len(self.records))]
        positions = list(self.positions)
        del self.records[skip], positions[skip], hashes[skip]
        self.positions, self.hashes = positions, hashes
        self.dropped.append(forged.seq)
        current = prev_hash
        for k in range(skip, len(self.records)):
            current = chain_hash(current, self.records[k].event_bytes)
            hashes[k] = current
        # Records after a forged one move up by one: index them by the seq they had when sealed.
        self.index = {
            record.seq - sum(1 for seq in self.dropped if seq < record.seq): k for k, record in enumerate(self.records)
        }


# -- the whole ledger -------------------------------------------------------------------------


@dataclass
class _Statement:
    """One signed checkpoint position, and where it was found."""

    seq: int
    hash: str
    time: str
    key_id: str
    found_in: set[str] = field(default_factory=set)

    def describe(self) -> str:
        where = " and ".join(sorted(self.found_in))
        return f"the checkpoint signed {self.time} by key {self.key_id} (in {where})"


def _statements(evidence: Evidence, report: Report) -> dict[int, dict[tuple[int, str], _Statement]]:
    """Validly signed checkpoints by partition and ``(seq, hash)``; every other one is reported."""
    found: dict[int, dict[tuple[int, str], _Statement]] = {}
    judged: dict[bytes, str | None] = {}  # the witness holds the topic's bytes: check each once
    sources = [("the checkpoint topic", "the checkpoint topic", raw) for raw in evidence.checkpoints]
    if evidence.witness is not None:
        sources += [("the witness", f"the witness ({name})", raw) for name, raw in evidence.witness.checkpoints]
    for kind, where, raw in sources:
        checkpoint = Checkpoint.parse(raw)
        if checkpoint is None:
            report.findings.append(Finding("bad_signature", None, None, f"unreadable checkpoint in {where}"))
            continue
        if checkpoint.ledger != evidence.ledger:
            report.notes.append(f"ignored a checkpoint for ledger {checkpoint.ledger!r} in {where}")
            continue
        fresh = raw not in judged
        if fresh:
            judged[raw] = checkpoint.verify(evidence.keys)
        report.checkpoints += fresh
        problem = judged[raw]
        if problem is not None:
            report.findings.append(
                Finding("bad_signature", checkpoint.partition, checkpoint.seq, f"checkpoint in {where}: {problem}")
            )
            continue
        report.checkpoints_valid += fresh
        by_position = found.setdefault(checkpoint.partition, {})
        statement = by_position.setdefault(
            (checkpoint.seq, checkpoint.hash),
            _Statement(checkpoint.seq, checkpoint.hash, checkpoint.time, checkpoint.key_id),
        )
        statement.found_in.add(kind)
    report.witnessed = sum(1 for by in found.values() for st in by.values() if "the witness" in st.found_in)
    return found


def verify(evidence: Evidence, selection: Selection | None = None, *, max_in_flight_s: float = 900.0) -> Report:
    """Judge the evidence: every chain, every checkpoint, and the selected requests' lifecycles."""
    # Millions of small containers, no reference cycles: the cyclic collector would only
    # rescan them over and over (it dominated the run time of large ledgers).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _verify(evidence, selection or Selection(), max_in_flight_s)
    finally:
        if collecting:
            gc.enable()


def _verify(evidence: Evidence, selection: Selection, max_in_flight_s: float) -> Report:
    report = Report(
        ledger=evidence.ledger,
        origin=evidence.origin,
        key_source=evidence.key_source,
        trusted_keys=sorted(evidence.keys.keys),
        as_of=evidence.as_of,
        max_in_flight_s=max_in_flight_s,
        selection=selection,
        witness_present=evidence.witness is not None,
    )
    chains: dict[int, _Chain] = {}
    for partition in sorted(evidence.partitions):
        raws = evidence.partitions[partition]
        segment = evidence.segments.get(partition, Segment())
        chain = _Chain(partition, raws, segment, report)
        chains[partition] = chain
        report.records += len(raws)
        report.partitions[partition] = PartitionSummary(
            partition,
            records=len(raws),
            first_seq=chain.records[0].seq if chain.records else None,
            last_seq=chain.records[-1].seq if chain.records else None,
            segment=segment,
        )
    by_partition = _statements(evidence, report)
    for partition, statements in sorted(by_partition.items()):
        if partition not in chains:
            chains[partition] = _Chain(partition, [], evidence.segments.get(partition, Segment()), report)
            report.partitions[partition] = PartitionSummary(partition, segment=chains[partition].segment)
        chain = chains[partition]
        per_seq: dict[int, int] = {}
        for seq, _ in statements:
            per_seq[seq] = per_seq.get(seq, 0) + 1
        for seq, count in sorted(per_seq.items()):
            if count > 1:
                report.findings.append(
                    Finding("modified", partition, seq, f"{count} validly signed checkpoints disagree (a fork)")
                )
        segment = chain.segment
        usable = [
            (statement.seq, statement.hash, statement.describe())
            for _, statement in sorted(statements.items())
            # Outside the part of the chain this evidence holds, a checkpoint proves nothing.
            if statement.seq >= segment.first_seq and (segment.to_end or statement.seq <= chain.last_seq)
        ]
        chain.anchor(usable, report.partitions[partition])
    for partition, chain in chains.items():
        summary = report.partitions[partition]
        if partition not in by_partition:
            summary.unanchored = len(chain.records)
            summary.newest_unanchored = chain.records[-1].sealed_at if chain.records else None
    _cross_check_witness(evidence, by_partition, report)
    report.valid = report.records - sum(len(chain.invalid) for chain in chains.values())
    _lifecycles(chains, selection, report)
    return report


def _cross_check_witness(
    evidence: Evidence, by_partition: dict[int, dict[tuple[int, str], _Statement]], report: Report
) -> None:
    if evidence.witness is None:
        report.notes.append(
            "no witness was read: deleting the newest records together with their checkpoints "
            "could not be detected (pass the witness directory)"
        )
        return
    places = [st.found_in for by in by_partition.values() for st in by.values()]
    topic_only = sum(1 for found_in in places if found_in == {"the checkpoint topic"})
    witness_only = sum(1 for found_in in places if found_in == {"the witness"})
    if topic_only:
        report.notes.append(f"{topic_only} checkpoint(s) on the topic are not in the witness")
    if witness_only:
        report.notes.append(f"{witness_only} witnessed checkpoint(s) are not on the checkpoint topic")
    for problem in evidence.witness.problems:
        report.notes.append(f"witness key file unreadable: {problem}")


def _lifecycles(chains: Mapping[int, _Chain], selection: Selection, report: Report) -> None:
    timelines = build_timelines(record for chain in chains.values() for record in chain.records)
    for airlock_id, timeline in timelines.items():
        if not selection.matches(timeline):
            continue
        report.timelines[airlock_id] = timeline
        if not any(record.event.get("kind", "transition") == "transition" for record in timeline.records):
            continue  # notices only (a poison record): nothing to judge as a lifecycle
        final, problem = check_lifecycle(timeline, as_of=report.as_of, max_in_flight_s=report.max_in_flight_s)
        if problem is not None:
            report.findings.append(Finding(problem.kind, problem.partition, problem.seq, problem.detail))
        elif final not in TERMINAL:
            report.in_flight.append(airlock_id)
