import json
from datetime import UTC, datetime

from airlock.auditor.chain import GENESIS, ChainHead, LedgerRecord, Source, link_hash
from airlock.auditor.replay import replay


def events(count: int) -> list[dict]:
    states = ["RECEIVED", "ACCEPTED", "REDACTED", "COMPLETED", "DELIVERED"]
    return [
        {
            "event_id": f"e{i}",
            "airlock_id": f"a{i // 5}",
            "request_id": f"r{i // 5}",
            "stage": "x",
            "kind": "transition",
            "from_state": None if i % 5 == 0 else states[i % 5 - 1],
            "to_state": states[i % 5],
        }
        for i in range(count)
    ]


def sealed(count: int) -> list[bytes]:
    head, records = ChainHead(), []
    for offset, event in enumerate(events(count)):
        record = head.extend(0, event, Source(topic="audit", partition=0, offset=offset), datetime.now(UTC))
        head = ChainHead.after(record)
        records.append(record.to_bytes())
    return records


def test_hash_is_sha256_of_previous_hash_and_canonical_event() -> None:
    import hashlib

    event = {"b": 1, "a": "é"}
    expected = hashlib.sha256(bytes.fromhex(GENESIS) + b'{"a":"\xc3\xa9","b":1}').hexdigest()
    assert link_hash(GENESIS, event) == expected


def test_intact_chain_verifies_and_lifecycles_are_complete() -> None:
    report = replay({0: sealed(10)})
    assert report.ok and report.valid == report.records == 10
    assert all(t.terminal and t.terminal.value == "DELIVERED" for t in report.timelines.values())


def test_modified_event_is_detected_at_its_seq() -> None:
    records = sealed(10)
    document = json.loads(records[3])
    document["event"]["stage"] = "forged"
    records[3] = json.dumps(document).encode()

    report = replay({0: records})

    assert [(f.kind, f.seq) for f in report.findings] == [("modified", 4)]


def test_deleted_record_is_detected() -> None:
    records = sealed(10)
    del records[4]
    kinds = {(f.kind, f.seq) for f in replay({0: records}).findings}
    assert ("missing", 6) in kinds and ("chain_broken", 6) in kinds


def test_swapped_records_are_detected() -> None:
    records = sealed(10)
    records[2], records[3] = records[3], records[2]
    kinds = {f.kind for f in replay({0: records}).findings}
    assert {"missing", "reordered", "chain_broken"} <= kinds


def test_ledger_record_rejects_unknown_fields() -> None:
    record = json.loads(sealed(1)[0])
    record["extra"] = 1
    try:
        LedgerRecord.model_validate(record)
    except ValueError:
        return
    raise AssertionError("unknown field accepted")
