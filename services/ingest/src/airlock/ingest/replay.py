"""Replays and duplicate request ids, per request partition (pure; no Kafka).

Every record of one ``(client, request id)`` reaches the same request partition (the SDK
publishes it there; ingest re-routes it otherwise), and one ingest replica owns a partition
at a time. So the owner decides alone, in offset order, and needs only that partition's
history: it writes one :class:`SeenRecord` per authenticated record to the same partition of
``<prefix>ingest.seen``, in the transaction that commits the record's outcome, and a new
owner reads the partition back before it processes anything. Nothing depends on a pod's
memory, and no two replicas can both accept the same request id.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict


class SeenRecord(BaseModel):
    """One authenticated record, as remembered on ``<prefix>ingest.seen``.

    Attributes:
        client_id: The authenticated client.
        request_id: The signed request id.
        signature: The record's signature: a second record with the same one is a replay.
        airlock_id: The record's airlock id (named in replay and duplicate errors).
        accepted: Whether the request was accepted (only accepted ids make duplicates).
        at: When ingest decided.
        signed_at: The signing timestamp (Unix seconds).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal[1] = 1
    client_id: str
    request_id: str
    signature: str
    airlock_id: str
    accepted: bool
    at: datetime
    signed_at: int

    def to_bytes(self) -> bytes:
        """JSON wire form."""
        return self.model_dump_json().encode()

    def key(self) -> bytes:
        """Record key on the seen topic."""
        return f"{self.client_id}/{self.request_id}".encode()


class SeenBook:
    """What one request partition has seen within its windows.

    Args:
        signature_ttl: How long a signature is remembered after its signing time: beyond
            the timestamp window a replay is refused as expired anyway.
        request_ttl: How long an accepted request id is remembered (the idempotency window).
    """

    def __init__(self, *, signature_ttl: timedelta, request_ttl: timedelta) -> None:
        self._signature_ttl = signature_ttl
        self._request_ttl = request_ttl
        self._signatures: dict[str, SeenRecord] = {}
        self._accepted: dict[tuple[str, str], SeenRecord] = {}
        self._signature_expiry: deque[tuple[datetime, str]] = deque()
        self._request_expiry: deque[tuple[datetime, tuple[str, str]]] = deque()

    def __len__(self) -> int:
        return len(self._signatures) + len(self._accepted)

    def replay_of(self, signature: str) -> SeenRecord | None:
        """The earlier record with this exact signature, if any."""
        return self._signatures.get(signature)

    def accepted(self, client_id: str, request_id: str) -> SeenRecord | None:
        """The accepted request with this id from this client, if any."""
        return self._accepted.get((client_id, request_id))

    def remember(self, record: SeenRecord, now: datetime) -> None:
        """Record a decision (the first record of a signature or an accepted id wins)."""
        signed = datetime.fromtimestamp(record.signed_at, tz=record.at.tzinfo)
        signature_until = max(signed, record.at) + self._signature_ttl
        if signature_until > now:
            self._signatures.setdefault(record.signature, record)
            self._signature_expiry.append((signature_until, record.signature))
        if record.accepted and record.at + self._request_ttl > now:
            self._accepted.setdefault((record.client_id, record.request_id), record)
            key = (record.client_id, record.request_id)
            self._request_expiry.append((record.at + self._request_ttl, key))

    def expire(self, now: datetime) -> None:
        """Forget what is older than its window (entries are roughly in time order)."""
        while self._signature_expiry and self._signature_expiry[0][0] <= now:
            self._signatures.pop(self._signature_expiry.popleft()[1], None)
        while self._request_expiry and self._request_expiry[0][0] <= now:
            self._accepted.pop(self._request_expiry.popleft()[1], None)
