"""Unauthenticated records, summed up: one audit notice per batch, not a lifecycle per record.

Anyone who can reach the request topic can write records that fail authentication. Each one
still goes to the dead-letter topic with its reason (short retention), but the evidence kept
forever gets one ``unauthenticated`` notice per batch of a partition: how many records, which
error codes, which client ids they claimed (the busiest :data:`MAX_CLAIMED_NAMED`, the rest
summed), the offsets they span, and one of them as a sample. The notice is committed with the
records it covers, so no refusal goes unrecorded; a flood costs the ledger a record per batch
instead of two per record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from airlock.core.errors import StageError
from airlock.core.models import AuditDetails, AuditScalar
from airlock.core.stage import Incoming

#: Claimed client ids named one by one in a notice; the others are summed up.
MAX_CLAIMED_NAMED = 10
#: Extra-key prefixes of the notice's counts (metrics read them back).
CODE_PREFIX = "code."
CLAIMED_PREFIX = "claimed."
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


def summary(refused: Sequence[Unauthenticated]) -> AuditDetails:
    """The audit details of one notice covering ``refused`` (one partition, offset order)."""
    first, last = refused[0].incoming, refused[-1].incoming
    codes = Counter(item.error.code.value for item in refused)
    claimed = Counter(item.claimed_client or UNCLAIMED for item in refused)
    extra: dict[str, AuditScalar] = {
        "count": len(refused),
        "first_offset": first.offset,
        "last_offset": last.offset,
        "sample_airlock_id": refused[0].airlock_id,
    }
    extra.update({f"{CODE_PREFIX}{code}": count for code, count in sorted(codes.items())})
    named = claimed.most_common(MAX_CLAIMED_NAMED)
    extra.update({f"{CLAIMED_PREFIX}{name}": count for name, count in named})
    others = len(refused) - sum(count for _, count in named)
    if others:
        extra[f"{CLAIMED_PREFIX}{OTHERS}"] = others
    code, _ = codes.most_common(1)[0]
    return AuditDetails(
        source=first.source,
        error_code=code,
        error_message=f"{len(refused)} unauthenticated record(s) refused, offsets {first.offset}-{last.offset}",
        extra=extra,
    )


def counts_by_code(details: AuditDetails) -> dict[str, int]:
    """``error code → records`` of a notice made by :func:`summary`."""
    return {
        key.removeprefix(CODE_PREFIX): int(value)
        for key, value in (details.extra or {}).items()
        if key.startswith(CODE_PREFIX) and isinstance(value, int)
    }
