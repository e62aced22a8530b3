"""Unauthenticated records, summed up: one audit notice per window, not a lifecycle per record.

Anyone who can reach the request topic can write records that fail authentication. Each one
still goes to the dead-letter topic with its reason (sealed, short retention), but the
evidence kept forever gets one ``unauthenticated`` notice per request partition and window
(``AIRLOCK_INGEST_NOISE_WINDOW_S``, 10 minutes, or :data:`MAX_TALLY` records): how many
records, per error code, per claimed client id (the busiest :data:`MAX_CLAIMED_NAMED`, the
rest summed), per minute, the offsets they span, and one of them as a sample.

Until its window closes the partition's :class:`NoiseTally` rides along on ``ingest.seen``,
committed with the records it counts, so a crash or a rebalance loses no count: the next
owner reads it back with the seen book. A partition that falls quiet is nudged by a control
record (:data:`NOISE_FLUSH`, signed by ingest) so its last window is sealed all the same. A
flood or a trickle thus costs the ledger at most one record per window and partition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from airlock.core.errors import StageError
from airlock.core.models import AuditDetails, AuditScalar
from airlock.core.stage import Incoming
from airlock.ingest.replay import SeenRecord

#: Claimed client ids named one by one in a notice; the others are summed up.
MAX_CLAIMED_NAMED = 10
#: Claimed client ids a pending tally keeps apart (bounds its size on ``ingest.seen``).
MAX_CLAIMED_KEPT = 50
#: Records one notice covers at most.
MAX_TALLY = 100_000
#: ``airlock-control`` value of ingest's own nudge to seal a quiet partition's due notice.
NOISE_FLUSH = "noise-flush"
#: Extra-key prefixes of the notice's counts (metrics read them back).
CODE_PREFIX = "code."
CLAIMED_PREFIX = "claimed."
MINUTE_PREFIX = "minute."
OTHERS = "(others)"
UNCLAIMED = "(none)"


@dataclass(frozen=True)
class Unauthenticated:
    """A record refused before its sender was known.

    Attributes:
        incoming: The record.
        airlock_id: Its Airlock id (derived from where it was read).
        error: Why it was refused.
        claimed_client: The client id its header claims, if well formed.
        request_id: The request id its body or header names, if any.
    """

    incoming: Incoming
    airlock_id: str
    error: StageError
    claimed_client: str | None
    request_id: str | None


class NoiseTally(BaseModel):
    """A request partition's unauthenticated records since its last notice.

    Attributes:
        partition: The request partition.
        opened_at: When its first record was counted (``None``: nothing pending).
        count: Records counted.
        first_offset: Offset of the first.
        last_offset: Offset of the last.
        source: ``topic/partition/offset`` of the first.
        sample_airlock_id: The first record's Airlock id (the notice's id derives from it).
        sample_request_id: The request id the first record named, if any.
        codes: ``error code → records``.
        claimed: ``claimed client id → records`` (at most :data:`MAX_CLAIMED_KEPT` names).
        minutes: ``YYYY-MM-DDTHH:MM (UTC) → records``.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["noise_tally"] = "noise_tally"
    schema_version: Literal[1] = 1
    partition: int
    opened_at: datetime | None = None
    count: int = Field(default=0, ge=0)
    first_offset: int = -1
    last_offset: int = -1
    source: str = ""
    sample_airlock_id: str = ""
    sample_request_id: str | None = None
    codes: dict[str, int] = Field(default_factory=dict)
    claimed: dict[str, int] = Field(default_factory=dict)
    minutes: dict[str, int] = Field(default_factory=dict)

    def counting(self, refused: Sequence[Unauthenticated], now: datetime) -> NoiseTally:
        """The tally with ``refused`` (records of its partition, in offset order) counted too."""
        if not refused:
            return self
        first = refused[0]
        codes = Counter(self.codes) + Counter(item.error.code.value for item in refused)
        claimed = Counter(self.claimed) + Counter(item.claimed_client or UNCLAIMED for item in refused)
        if len(claimed) > MAX_CLAIMED_KEPT:  # an attacker may claim a new id per record
            kept = dict(claimed.most_common(MAX_CLAIMED_KEPT - 1))
            claimed = Counter({**kept, OTHERS: sum(claimed.values()) - sum(kept.values())})
        minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        pending = self.opened_at is not None
        return self.model_copy(
            update={
                "opened_at": self.opened_at if pending else now,
                "count": self.count + len(refused),
                "first_offset": self.first_offset if pending else first.incoming.offset,
                "last_offset": refused[-1].incoming.offset,
                "source": self.source if pending else first.incoming.source,
                "sample_airlock_id": self.sample_airlock_id if pending else first.airlock_id,
                "sample_request_id": self.sample_request_id if pending else first.request_id,
                "codes": dict(codes),
                "claimed": dict(claimed),
                "minutes": {**self.minutes, minute: self.minutes.get(minute, 0) + len(refused)},
            }
        )

    def due(self, now: datetime, window: timedelta) -> bool:
        """Whether the tally's notice is due: its window has passed or it is full."""
        return self.opened_at is not None and (now - self.opened_at >= window or self.count >= MAX_TALLY)

    def closed(self) -> NoiseTally:
        """The empty tally that follows a notice."""
        return NoiseTally(partition=self.partition)

    def details(self) -> AuditDetails:
        """The audit details of the tally's notice."""
        extra: dict[str, AuditScalar] = {
            "count": self.count,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "sample_airlock_id": self.sample_airlock_id,
            "opened_at": self.opened_at.isoformat() if self.opened_at else None,
        }
        extra.update({f"{CODE_PREFIX}{code}": count for code, count in sorted(self.codes.items())})
        named = Counter(self.claimed).most_common(MAX_CLAIMED_NAMED)
        extra.update({f"{CLAIMED_PREFIX}{name}": count for name, count in named})
        others = self.count - sum(count for _, count in named)
        if others:
            extra[f"{CLAIMED_PREFIX}{OTHERS}"] = others
        extra.update({f"{MINUTE_PREFIX}{minute}": count for minute, count in sorted(self.minutes.items())})
        code = Counter(self.codes).most_common(1)[0][0] if self.codes else None
        return AuditDetails(
            source=self.source,
            error_code=code,
            error_message=(
                f"{self.count} unauthenticated record(s) refused, offsets {self.first_offset}-{self.last_offset}"
            ),
            extra=extra,
        )

    def to_bytes(self) -> bytes:
        """JSON wire form (on ``ingest.seen``)."""
        return self.model_dump_json().encode()


def read_seen_entry(value: bytes) -> SeenRecord | NoiseTally:
    """A record of ``ingest.seen``: a seen request, or a partition's noise tally.

    Raises:
        ValidationError: Neither.
    """
    if b'"kind":"noise_tally"' in value:
        return NoiseTally.model_validate_json(value)
    return SeenRecord.model_validate_json(value)


def counts_by_code(details: AuditDetails) -> dict[str, int]:
    """``error code → records`` of a notice made from a :class:`NoiseTally`."""
    return {
        key.removeprefix(CODE_PREFIX): int(value)
        for key, value in (details.extra or {}).items()
        if key.startswith(CODE_PREFIX) and isinstance(value, int)
    }
