import hashlib
import json
import math
from datetime import UTC, datetime

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.auditor.chain import (
    GENESIS,
    CanonicalizationError,
    ChainHead,
    LedgerRecord,
    Source,
    canonical,
    link_hash,
    parse_canonical,
    parse_record,
)
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
            "at": datetime.now(UTC).isoformat(),
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


def integrity(records: list[bytes]) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in replay({0: records}).findings if f.integrity]


def test_hash_is_sha256_of_previous_hash_and_canonical_event() -> None:
    event = {"b": 1, "a": "é"}
    expected = hashlib.sha256(bytes.fromhex(GENESIS) + b'{"a":"\xc3\xa9","b":1}').hexdigest()
    assert link_hash(GENESIS, event) == expected


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_fast_canonical_form_is_byte_identical_to_the_rfc8785_reference(event: dict) -> None:
    try:
        reference = rfc8785.dumps(event)
    except rfc8785.CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            canonical(event)
        return
    assert canonical(event) == reference
    document, from_bytes = parse_canonical(json.dumps(event).encode())
    assert from_bytes == reference
    assert canonical(document) == reference


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"b": 100.0, "a": 1e-7, "c": 1E+21}', b'{"a":1e-7,"b":100,"c":1e+21}'),
        (b'{"x": 0.00001, "y": -0.0, "z": 123.456}', b'{"x":0.00001,"y":0,"z":123.456}'),
        (b'{"\\u00e9": "\\u0001", "e": "\\ud83d\\ude00"}', rfc8785.dumps({"é": "\x01", "e": "😀"})),
    ],
)
def test_numbers_and_escapes_take_the_reference_path_where_the_fast_one_would_differ(
    raw: bytes, expected: bytes
) -> None:
    assert parse_canonical(raw)[1] == expected


@pytest.mark.parametrize(
    "raw", [b'{"a": NaN}', b'{"a": 9007199254740993}', b'{"a": "\\ud800"}', b"[1, 2]", b"not json", b"\xff"]
)
def test_values_without_a_canonical_form_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (JSON, Unicode and canonical-form errors alike)
        parse_canonical(raw)


def test_sealed_record_stores_the_canonical_event_last_and_parses_back() -> None:
    head, raw = ChainHead().seal(3, canonical({"b": 2, "a": math.pi}), ("x.audit", 3, 41), "2025-06-01T12:00:00Z")
    assert raw.endswith(b',"event":{"a":3.141592653589793,"b":2}}')
    parsed = parse_record(raw)
    assert parsed is not None and parsed.content_ok
    assert (parsed.partition, parsed.seq, parsed.hash, parsed.origin) == (3, 1, head.hash, "x.audit/3/41")
    assert LedgerRecord.model_validate_json(raw).hash == head.hash


def test_a_record_reserialized_by_another_tool_still_verifies() -> None:
    records = sealed(3)
    document = json.loads(records[1])
    records[1] = json.dumps(document, indent=2, sort_keys=False).encode()  # different bytes, same content
    assert integrity(records) == []


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
    assert report.valid == 9


def test_deleted_record_is_reported_missing_at_its_seq() -> None:
    records = sealed(10)
    del records[4]
    assert integrity(records) == [("missing", 5)]


def test_swapped_records_are_one_reordered_record() -> None:
    records = sealed(10)
    records[2], records[3] = records[3], records[2]
    found = integrity(records)
    assert len(found) == 1 and found[0][0] == "reordered" and found[0][1] in (3, 4)


def test_a_record_moved_far_is_the_only_one_out_of_place() -> None:
    records = sealed(10)
    records.insert(0, records.pop(6))
    assert integrity(records) == [("reordered", 7)]


def test_a_duplicated_record_is_reported_inserted() -> None:
    records = sealed(6)
    records.insert(4, records[2])
    assert integrity(records) == [("inserted", 3)]


def test_a_record_of_another_partition_is_reported_inserted() -> None:
    records = sealed(4)
    document = json.loads(records[1])
    foreign = ChainHead().seal(7, canonical(document["event"]), ("audit", 7, 0), "2025-06-01T12:00:00Z")[1]
    assert integrity([*records, foreign]) == [("inserted", 1)]


def test_unreadable_line_is_reported_modified_at_the_seq_it_takes() -> None:
    records = sealed(5)
    records[2] = b"\x00garbage"
    assert integrity(records) == [("modified", 3)]


def test_ledger_record_rejects_unknown_fields() -> None:
    record = json.loads(sealed(1)[0])
    record["extra"] = 1
    with pytest.raises(ValueError, match="extra"):
        LedgerRecord.model_validate(record)
    assert parse_record(json.dumps(record).encode()) is None
