"""Sealed dead letters: only the operators' ring opens them, and nothing of the body shows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airlock.core import headers as h
from airlock.core.authenticity import Trust
from airlock.core.crypto import KeyRing, KeyRingError
from airlock.core.deadletters import CLEAR_HEADERS, DeadLetterError, DeadLetterOpener, dead_letter_seal

RING = KeyRing.generate("dead-letters-1")
TRUST = Trust.from_json(Trust.to_json({}, RING))
SEAL = dead_letter_seal(TRUST.dead_letters, TRUST.dead_letter_active)
OPENER = DeadLetterOpener(RING)

BODY = b'{"messages":[{"role":"user","content":"Jane Roe, SSN 078-05-1120"}]}'
HEADERS = [
    (h.CLIENT_ID, b"billing"),
    (h.REQUEST_ID, b"r-1"),
    ("x-caller-note", b"Jane Roe called"),
    (h.DLQ_STAGE, b"ingest"),
    (h.DLQ_SOURCE, b"t.requests/0/7"),
    (h.ERROR_CODE, b"too_large"),
    (h.DLQ_REASON, b"the prompt is over the client's limit"),
    (h.AIRLOCK_ID, b"a-1"),
]


def test_a_sealed_letter_shows_its_reason_and_ids_and_nothing_else() -> None:
    value, clear = SEAL.seal(b"billing/r-1", BODY, HEADERS)
    assert b"078-05-1120" not in value and b"Jane" not in value
    assert {name for name, _ in clear} == set(CLEAR_HEADERS)
    assert all(b"Jane" not in v for _, v in clear), "a caller's own header stays sealed"
    opened = OPENER.open(value, clear)
    assert (opened.key, opened.value, opened.headers) == (b"billing/r-1", BODY, HEADERS)


@given(key=st.none() | st.binary(max_size=64), value=st.binary(max_size=4096))
def test_any_record_round_trips(key: bytes | None, value: bytes) -> None:
    sealed, clear = SEAL.seal(key, value, [(h.AIRLOCK_ID, b"a")])
    opened = OPENER.open(sealed, clear)
    assert (opened.key, opened.value) == (key, value)


def test_a_body_moved_under_another_letters_metadata_does_not_open() -> None:
    value, clear = SEAL.seal(None, BODY, HEADERS)
    moved = [(name, b"a-2" if name == h.AIRLOCK_ID else v) for name, v in clear]
    with pytest.raises(DeadLetterError, match="altered"):
        OPENER.open(value, moved)
    flipped = value[:-1] + bytes([value[-1] ^ 1])
    with pytest.raises(DeadLetterError, match="altered"):
        OPENER.open(flipped, clear)


def test_only_the_operators_ring_opens_a_letter() -> None:
    value, clear = SEAL.seal(None, BODY, HEADERS)
    with pytest.raises(DeadLetterError, match="not in the ring"):
        DeadLetterOpener(KeyRing.generate("other")).open(value, clear)
    impostor = KeyRing("dead-letters-1", {"dead-letters-1": KeyRing.generate().keys["k1"]})
    with pytest.raises(DeadLetterError):
        DeadLetterOpener(impostor).open(value, clear)
    with pytest.raises(DeadLetterError, match="not a sealed"):
        OPENER.open(BODY, clear)


def test_a_trust_file_without_a_dead_letter_key_is_refused() -> None:
    with pytest.raises(KeyRingError, match="no dead-letter key"):
        dead_letter_seal({}, None)
    published = Trust.to_json({}, RING)
    private = RING.to_json().split('"keys"')[1]
    assert "dead-letters-1" in published and private not in published, "the trust file holds no private key"
