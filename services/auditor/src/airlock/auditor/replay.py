"""Replaying the ledger: the short form used by the demo and by tests.

:func:`replay` verifies the chains and rebuilds lifecycles from ledger records alone. The
full judgement — checkpoints, the witness, filters — is :func:`airlock.auditor.verify.verify`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from airlock.auditor.timelines import Selection, Timeline
from airlock.auditor.verify import Evidence, Finding, Report, verify

__all__ = ["Finding", "Report", "Timeline", "by_request", "replay"]


def replay(
    ledger: Mapping[int, Sequence[bytes]], *, request_id: str | None = None, max_in_flight_s: float = 900.0
) -> Report:
    """Verify every partition's chain and rebuild lifecycles (optionally of one request only)."""
    evidence = Evidence(ledger="", partitions={p: list(records) for p, records in ledger.items()})
    selection = Selection(request_ids=frozenset({request_id}) if request_id else frozenset())
    return verify(evidence, selection, max_in_flight_s=max_in_flight_s)


def by_request(report: Report) -> dict[str, list[Timeline]]:
    """Timelines grouped by the caller's request id."""
    grouped: dict[str, list[Timeline]] = defaultdict(list)
    for timeline in report.timelines.values():
        grouped[timeline.request_id or ""].append(timeline)
    return grouped
