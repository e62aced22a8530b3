"""Lanes: large envelopes travel on a partition of their own, so small ones never queue behind them.

A stage commits each input partition strictly in offset order, so a small request that lands
on the same partition right behind a 180,000-character one waits for all of its redaction,
model call and restore, whatever the detector thread does meanwhile. Envelopes therefore
carry their lane in their record key — ``lane:large/<airlock id>`` for an envelope over
:data:`LARGE_ENVELOPE_BYTES`, ``lane:small/<airlock id>`` otherwise — and the stages'
producers use :class:`LanePartitioner`: the large lane is the topic's last partition, small
envelopes are spread over the others. Records with any other key (audit events, replies,
seen records) are partitioned exactly as Kafka's default partitioner does.

With one partition there is one lane; with several, the large lane's partition is owned by
one replica, whose detector thread still interleaves the large one's chunks with its other
partitions' work (see the redactor).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

#: Envelopes larger than this (bytes, as serialized) take the large lane: about twice the
#: redactor's detection chunk, above which it analyzes a request a chunk at a time.
LARGE_ENVELOPE_BYTES = 32 * 1024

LARGE = b"lane:large/"
SMALL = b"lane:small/"


def lane_key(airlock_id: str, size: int) -> bytes:
    """The record key of an envelope of ``size`` bytes: its lane and its Airlock id."""
    return (LARGE if size > LARGE_ENVELOPE_BYTES else SMALL) + airlock_id.encode()


class LanePartitioner:
    """aiokafka partitioner: the large lane on the last partition, small envelopes on the rest."""

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        """The partition for a record with ``key``."""
        if key is None:
            return random.choice(list(available) or list(all_partitions))
        if len(all_partitions) > 1:
            if key.startswith(LARGE):
                return all_partitions[-1]
            if key.startswith(SMALL):
                return all_partitions[(murmur2(key) & 0x7FFFFFFF) % (len(all_partitions) - 1)]
        return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]
