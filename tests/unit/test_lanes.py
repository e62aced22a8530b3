"""Lanes: large envelopes on the last partition, small ones never there, other keys as Kafka's default."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner

from airlock.core.lanes import LARGE_ENVELOPE_BYTES, LanePartitioner, lane_key

PARTITIONS = list(range(6))


def test_large_envelopes_take_the_last_partition_and_small_ones_the_others() -> None:
    partition = LanePartitioner()
    ids = [str(uuid.uuid4()) for _ in range(600)]
    large = {partition(lane_key(i, LARGE_ENVELOPE_BYTES + 1), PARTITIONS, PARTITIONS) for i in ids}
    small = [partition(lane_key(i, LARGE_ENVELOPE_BYTES), PARTITIONS, PARTITIONS) for i in ids]
    assert large == {5}
    assert set(small) == {0, 1, 2, 3, 4}, "small envelopes are spread over every other partition"
    assert min(small.count(p) for p in range(5)) > 60, "and about evenly"


def test_other_keys_and_a_single_partition_are_partitioned_as_kafka_does() -> None:
    partition, default = LanePartitioner(), DefaultPartitioner()
    for n in range(200):
        key = f"audit-{n}".encode()
        assert partition(key, PARTITIONS, PARTITIONS) == default(key, PARTITIONS, PARTITIONS)
    assert partition(lane_key("x", LARGE_ENVELOPE_BYTES + 1), [0], [0]) == 0
    assert partition(lane_key("x", 10), [0], [0]) == 0
    assert partition(None, PARTITIONS, [2]) == 2
