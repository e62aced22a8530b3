"""The hash chain: pure functions shared by sealing, replay and offline verification.

Each ledger partition is a chain. Record ``n`` stores ``prev_hash`` (record ``n-1``'s hash,
or 64 zeros for the first) and ``hash = SHA-256(prev_hash ‖ JCS(event))``, where JCS is the
RFC 8785 canonical JSON of the audit event exactly as the stage published it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict

GENESIS = "0" * 64


def canonical(event: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of an event."""
    return rfc8785.dumps(dict(event))


def link_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """``SHA-256(prev_hash ‖ JCS(event))`` as lowercase hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical(event)).hexdigest()


class Source(BaseModel):
    """Where in the audit topic the sealed event came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: int
    offset: int


class LedgerRecord(BaseModel):
    """One sealed audit event on the ledger topic.

    Attributes:
        partition: The ledger (and audit) partition this chain belongs to.
        seq: Position in the chain, from 1, without gaps.
        prev_hash: Hash of the previous record (``GENESIS`` for seq 1).
        hash: ``SHA-256(prev_hash ‖ JCS(event))``.
        source: The audit record sealed.
        sealed_at: When the auditor sealed it (not covered by the hash).
        event: The audit event, as published.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    partition: int
    seq: int
    prev_hash: str
    hash: str
    source: Source
    sealed_at: datetime
    event: dict[str, Any]

    def to_bytes(self) -> bytes:
        """The JSON wire form."""
        return self.model_dump_json().encode()


@dataclass(frozen=True)
class ChainHead:
    """The last sealed position of a partition's chain (``seq`` 0 means empty)."""

    seq: int = 0
    hash: str = GENESIS

    def extend(self, partition: int, event: Mapping[str, Any], source: Source, sealed_at: datetime) -> LedgerRecord:
        """The record that appends ``event`` to this chain."""
        return LedgerRecord(
            partition=partition,
            seq=self.seq + 1,
            prev_hash=self.hash,
            hash=link_hash(self.hash, event),
            source=source,
            sealed_at=sealed_at,
            event=dict(event),
        )

    @staticmethod
    def after(record: LedgerRecord) -> ChainHead:
        """The head once ``record`` is sealed."""
        return ChainHead(record.seq, record.hash)
