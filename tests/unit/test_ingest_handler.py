import json

from airlock.core import headers as h
from airlock.core.lifecycle import State
from airlock.core.models import Envelope, ErrorReply
from airlock.core.stage import Incoming, StageContext
from airlock.core.topics import Topics
from airlock.ingest.handlers import IngestHandler
from airlock.ingest.settings import IngestSettings

TOPICS = Topics("t.")
CONTEXT = StageContext("ingest", TOPICS)
REQUEST = {
    "request_id": "r-1",
    "client_id": "billing",
    "tenant": "acme",
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "My name is Jane Roe"}],
    "reply_to": "t.responses",
}


def handler() -> IngestHandler:
    return IngestHandler(CONTEXT, IngestSettings(max_message_bytes=4096))


def incoming(value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> Incoming:
    return Incoming(topic="t.requests", partition=0, offset=7, value=value, headers=headers, timestamp_ms=1)


def test_valid_request_is_forwarded_with_received_and_accepted_events() -> None:
    outcome = handler().handle(incoming(json.dumps(REQUEST).encode()))

    [record] = outcome.records
    assert record.topic == "t.accepted"
    envelope = Envelope.model_validate_json(record.value)
    assert envelope.state == State.ACCEPTED and envelope.request.request_id == "r-1"
    assert [(e.from_state, e.to_state) for e in outcome.events] == [
        (None, State.RECEIVED),
        (State.RECEIVED, State.ACCEPTED),
    ]
    audit = b"".join(e.to_bytes() for e in outcome.events)
    assert b"Jane" not in audit  # a digest of the prompt, never its text


def test_same_record_gets_same_ids_when_reprocessed() -> None:
    first = handler().handle(incoming(json.dumps(REQUEST).encode()))
    second = handler().handle(incoming(json.dumps(REQUEST).encode()))
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]


def test_malformed_bytes_are_refused_using_header_addressing() -> None:
    headers = ((h.REQUEST_ID, b"r-9"), (h.REPLY_TO, b"t.responses"))
    outcome = handler().handle(incoming(b"\x00garbage", headers))

    reply_record, dlq_record = outcome.records
    reply = ErrorReply.model_validate_json(reply_record.value)
    assert (reply_record.topic, reply.code, reply.request_id) == ("t.responses", "malformed", "r-9")
    assert dlq_record.topic == "t.dlq" and dlq_record.value == b"\x00garbage"
    assert dict(dlq_record.headers)[h.ERROR_CODE] == b"malformed"
    assert [e.to_state for e in outcome.events] == [State.RECEIVED, State.REJECTED]


def test_foreign_reply_topic_gets_no_reply_only_dlq() -> None:
    outcome = handler().handle(incoming(json.dumps({**REQUEST, "reply_to": "payments.secrets"}).encode()))

    assert [r.topic for r in outcome.records] == ["t.dlq"]
    assert outcome.events[-1].details.error_code == "reply_topic_not_allowed"


def test_non_utf8_header_does_not_break_refusal() -> None:
    outcome = handler().handle(incoming(b"nope", ((h.REQUEST_ID, b"\xff"),)))
    assert [r.topic for r in outcome.records] == ["t.dlq"]
    assert outcome.events[-1].to_state == State.REJECTED
