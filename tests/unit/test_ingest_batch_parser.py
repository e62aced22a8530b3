"""A header that is not UTF-8 must not cost the stage the whole poll (FastStream would drop it)."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.parser import AioKafkaBatchParser

from airlock.core.runtime import _keep_raw_headers


def record(offset: int, headers: list[tuple[str, bytes]]) -> ConsumerRecord:
    return ConsumerRecord(
        topic="t.requests",
        partition=0,
        offset=offset,
        timestamp=1,
        timestamp_type=0,
        key=None,
        value=b"{}",
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=2,
        headers=headers,
    )


async def test_poll_with_a_non_utf8_header_reaches_the_stage_byte_for_byte() -> None:
    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    poll = (record(1, [("airlock-key-id", b"k1")]), record(2, [("airlock-timestamp", b"\xff\xfe")]))

    message = await _keep_raw_headers(poll, parser.parse_batch)

    assert message.raw_message == poll
    assert message.raw_message[1].headers == [("airlock-timestamp", b"\xff\xfe")]


async def test_ordinary_polls_are_parsed_as_before() -> None:
    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    poll = (record(1, [("airlock-key-id", b"k1")]),)
    message = await _keep_raw_headers(poll, parser.parse_batch)
    assert message.raw_message == poll and message.batch_headers == [{"airlock-key-id": "k1"}]


async def test_decoding_a_poll_never_touches_headers() -> None:
    from airlock.core.runtime import _raw_values

    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    poll = (record(1, [("airlock-timestamp", b"\xff")]),)
    message = await _keep_raw_headers(poll, parser.parse_batch)
    assert await _raw_values(message) == [b"{}"]
