"""Tampering with an exported bundle: each attack found, with the right kind and location."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airlock.auditor.bundle import read_bundle, read_manifest
from airlock.auditor.chain import ChainHead, canonical, chain_hash, parse_record
from airlock.auditor.signing import Checkpoint, SigningKeys, sign_checkpoint
from airlock.auditor.verify import Report, verify
from airlock.core.crypto import KeyRing
from airlock.devstack.bench.audit import Sealer, audit_records, notice_record, sealed_ledger
from airlock.devstack.cli import app

EVERY = 10
PARTITION = 1


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of a sealed ledger: 2 partitions, a checkpoint every 10 records, witnessed."""
    import asyncio

    root = tmp_path_factory.mktemp("sealed")
    sealer = asyncio.run(sealed_ledger(root / "witness", audit_records(40, partitions=2), every=EVERY))
    bundle = root / "bundle"
    sealer.export(bundle)
    return bundle


@pytest.fixture
def bundle(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(pristine, copy)
    return copy


def lines(bundle: Path, name: str = f"ledger/{PARTITION}.jsonl") -> list[bytes]:
    return (bundle / name).read_bytes().splitlines()


def rewrite(bundle: Path, records: list[bytes], name: str = f"ledger/{PARTITION}.jsonl") -> None:
    (bundle / name).write_bytes(b"".join(line + b"\n" for line in records))


def judge(bundle: Path, **options) -> Report:
    return verify(read_bundle(bundle, **options), read_manifest(bundle).selection)


def integrity(report: Report) -> list[tuple[str, int | None, int | None]]:
    return [(f.kind, f.partition, f.seq) for f in report.findings if f.integrity]


def cli_verify(bundle: Path, *args: str) -> tuple[int, str]:
    pinned = {"--keys", "--witness"} & set(args)
    trust = [] if pinned else ["--trust-bundled-keys"]
    result = CliRunner().invoke(app, ["audit", "verify", str(bundle), *args, *trust])
    return result.exit_code, result.output


def test_a_bundle_is_unverified_without_keys_the_verifier_trusts(bundle: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "verify", str(bundle)])
    assert result.exit_code == 3 and "UNVERIFIED" in result.output
    assert cli_verify(bundle)[0] == 0  # the same bundle, its own keys accepted explicitly


def test_untouched_bundle_verifies_clean(bundle: Path) -> None:
    report = judge(bundle)
    assert report.ok, report.findings
    assert report.valid == report.records > 0
    assert report.checkpoints_valid == report.checkpoints > 0 and report.witnessed == report.checkpoints_valid
    assert all(p.unanchored == 0 and p.anchored_seq == p.last_seq for p in report.partitions.values())
    code, output = cli_verify(bundle)
    assert code == 0, output
    assert f"{report.records}/{report.records} records valid" in output and output.rstrip().endswith("VALID")


def test_one_byte_of_an_event_changed_is_modified_at_its_seq(bundle: Path) -> None:
    records = lines(bundle)
    position = next(i for i, line in enumerate(records) if b'"stage":"redactor"' in line)
    seq = parse_record(records[position]).seq
    records[position] = records[position].replace(b'"stage":"redactor"', b'"stage":"redactoR"')
    rewrite(bundle, records)

    report = judge(bundle)

    assert integrity(report) == [("modified", PARTITION, seq)]
    assert report.valid == report.records - 1
    code, output = cli_verify(bundle)
    assert code == 1 and "modified" in output and f"partition {PARTITION} seq {seq}" in output


def test_a_deleted_record_is_missing_at_its_seq(bundle: Path) -> None:
    records = lines(bundle)
    del records[12]  # seq 13: not a checkpoint position
    rewrite(bundle, records)

    report = judge(bundle)

    assert integrity(report) == [("missing", PARTITION, 13)]
    assert cli_verify(bundle)[0] == 1


def test_two_swapped_records_are_reordered(bundle: Path) -> None:
    records = lines(bundle)
    records[16], records[17] = records[17], records[16]  # seqs 17 and 18
    rewrite(bundle, records)

    report = judge(bundle)

    assert integrity(report) == [("reordered", PARTITION, 18)]
    assert not [f for f in report.findings if not f.integrity]  # the chain, in seq order, is intact
    assert cli_verify(bundle)[0] == 1


def test_a_forged_record_with_a_recomputed_chain_is_caught_by_the_checkpoint_signature(bundle: Path) -> None:
    records = [parse_record(line) for line in lines(bundle)]
    forged_at = 23  # becomes seq 24: between the checkpoints of seq 20 and 30
    forged_event = json.loads(notice_record(records[0].event["airlock_id"], at=_at(records[forged_at - 1])))
    events = [r.event_bytes for r in records]
    events.insert(forged_at, canonical(forged_event))
    # The forger rebuilds every later record so the chain is consistent again.
    head, rebuilt = ChainHead(), []
    for index, event in enumerate(events):
        head, raw = head.seal(PARTITION, event, ("airlock.audit", PARTITION, index), "2025-06-01T12:00:00.000000Z")
        rebuilt.append(raw)
    rewrite(bundle, rebuilt)

    report = judge(bundle)

    assert integrity(report) == [("inserted", PARTITION, forged_at + 1)]
    assert "forged" in next(f.detail for f in report.findings if f.kind == "inserted")
    assert cli_verify(bundle)[0] == 1


def test_re_signing_the_checkpoints_after_a_rewrite_needs_a_trusted_key(bundle: Path) -> None:
    records = lines(bundle)
    records[4] = records[4].replace(b'"stage":"ingest"', b'"stage":"ingesT"')
    document = json.loads(records[4])
    event = canonical(document["event"])
    head = ChainHead(document["seq"] - 1, document["prev_hash"])
    forged = []
    for line in [records[4], *records[5:]]:
        record = parse_record(line)
        payload = event if line is records[4] else record.event_bytes
        head, raw = head.seal(PARTITION, payload, ("airlock.audit", PARTITION, 0), "2025-06-01T12:00:00.000000Z")
        forged.append(raw)
    rewrite(bundle, records[:4] + forged)
    forger = SigningKeys(KeyRing.generate("evil-1"))
    heads = {parse_record(raw).seq: parse_record(raw).hash for raw in forged}
    resigned = []
    for line in lines(bundle, "checkpoints.jsonl"):
        checkpoint = Checkpoint.parse(line)
        if checkpoint.partition == PARTITION and checkpoint.seq in heads:
            line = _resign(forger, checkpoint, heads[checkpoint.seq])
        resigned.append(line)
    rewrite(bundle, resigned, "checkpoints.jsonl")

    report = judge(bundle)

    kinds = {kind for kind, _, _ in integrity(report)}
    assert "bad_signature" in kinds and "modified" in kinds  # the witness still holds the true heads
    assert all("unknown key id 'evil-1'" in f.detail for f in report.findings if f.kind == "bad_signature"), (
        report.findings
    )


def test_tail_dropped_with_its_checkpoints_is_caught_by_the_witness(bundle: Path) -> None:
    records = [parse_record(line) for line in lines(bundle)]
    last = records[-1].seq
    keep = 30  # the attacker keeps seq 1..30 and the checkpoints up to seq 30
    rewrite(bundle, [line for line in lines(bundle) if parse_record(line).seq <= keep])
    kept = [
        line
        for line in lines(bundle, "checkpoints.jsonl")
        if Checkpoint.parse(line).partition != PARTITION or Checkpoint.parse(line).seq <= keep
    ]
    rewrite(bundle, kept, "checkpoints.jsonl")

    report = judge(bundle)

    assert integrity(report) == [("truncated", PARTITION, keep + 1)]
    finding = next(f for f in report.findings if f.kind == "truncated")
    assert f"covers up to seq {last}" in finding.detail and "the witness" in finding.detail
    assert "the checkpoint topic" not in finding.detail  # only the witness still knew
    code, output = cli_verify(bundle)
    assert code == 1 and "truncated" in output

    # Without its witness the chain looks whole (only a half-finished request may give it
    # away): that is why the witness lives outside Kafka, on write-once storage.
    witness_copy = bundle / "witness"
    shutil.move(witness_copy, bundle.parent / "witness-store")
    assert judge(bundle).integrity_ok
    # …and a verifier reading the witness from its own store still finds the truncation.
    store = bundle.parent / "store"
    (store / read_manifest(bundle).ledger).parent.mkdir(parents=True)
    shutil.move(bundle.parent / "witness-store", store / read_manifest(bundle).ledger)
    assert integrity(judge(bundle, witness_root=store)) == [("truncated", PARTITION, keep + 1)]
    assert cli_verify(bundle, "--witness", str(store))[0] == 1


def test_a_checkpoint_signed_with_an_unknown_key_is_a_bad_signature(bundle: Path) -> None:
    forger = SigningKeys(KeyRing.generate("evil-1"))
    records = [parse_record(line) for line in lines(bundle)]
    forged = sign_checkpoint(
        forger, ledger=read_manifest(bundle).ledger, partition=PARTITION, seq=records[-1].seq, hash=records[-1].hash
    )
    rewrite(bundle, [*lines(bundle, "checkpoints.jsonl"), forged.to_bytes()], "checkpoints.jsonl")

    report = judge(bundle)

    assert integrity(report) == [("bad_signature", PARTITION, records[-1].seq)]
    assert "unknown key id 'evil-1'" in report.findings[0].detail
    code, output = cli_verify(bundle)
    assert code == 1 and "bad_signature" in output


def test_pinned_keys_win_over_the_keys_the_bundle_carries(bundle: Path, tmp_path: Path) -> None:
    stranger = SigningKeys(KeyRing.generate("other-1")).public_keys()
    pinned = tmp_path / "pinned.json"
    pinned.write_text(stranger.to_json())
    report = judge(bundle, pinned=stranger)
    assert {f.kind for f in report.findings} == {"bad_signature"}
    code, output = cli_verify(bundle, "--keys", str(pinned))
    assert code == 1 and "pinned" in output


def test_a_directory_that_is_not_a_bundle_is_a_usage_error(tmp_path: Path) -> None:
    code, output = cli_verify(tmp_path)
    assert code == 2 and "manifest.json" in output


def _at(record) -> object:
    from airlock.auditor.timelines import parse_time

    return parse_time(record.event["at"])


def _resign(forger: SigningKeys, checkpoint: Checkpoint, digest: str) -> bytes:
    return sign_checkpoint(
        forger, ledger=checkpoint.ledger, partition=checkpoint.partition, seq=checkpoint.seq, hash=digest
    ).to_bytes()


def test_chain_hash_helper_matches_the_formula() -> None:
    # The tamper tests rebuild chains with ChainHead.seal; make sure it is the published formula.
    event = canonical({"a": 1})
    head, raw = ChainHead().seal(0, event, ("t", 0, 0), "2025-06-01T12:00:00Z")
    assert head.hash == chain_hash("0" * 64, event) == parse_record(raw).hash


def test_sealer_used_here_is_the_auditor_handler() -> None:
    from airlock.auditor.handlers import SealHandler

    assert isinstance(Sealer(SigningKeys(KeyRing.generate("k")), None).handler, SealHandler)
