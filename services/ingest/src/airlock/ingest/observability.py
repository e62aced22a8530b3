"""Ingest's own metrics: from its committed audit events (never from request text) and its clients file."""

from __future__ import annotations

from collections.abc import Callable

from airlock.core.lifecycle import State
from airlock.core.stage import Incoming, Outcome
from airlock.core.telemetry.instruments import OutcomeObserver
from airlock.core.telemetry.metrics import Metrics
from airlock.ingest.noise import counts_by_code


def ingest_observer(metrics: Metrics) -> OutcomeObserver:
    """Counts ``airlock_ingest_refusals_total{code, authenticated}`` and ``…_accepted_total{tenant}``.

    A refusal is authenticated when the REJECTED event names the signing client: those
    callers hear the error. Unauthenticated ones get a dead letter each and are counted from
    their batch's ``unauthenticated`` notice.
    """
    refusals = metrics.counter(
        "refusals",
        "Requests refused by ingest, by error code and whether the sender was authenticated.",
        ["code", "authenticated"],
    )
    accepted = metrics.counter("accepted", "Requests accepted by ingest, by tenant.", ["tenant"])

    def observe(record: Incoming, outcome: Outcome) -> None:
        for event in outcome.events:
            if event.kind == "notice":
                for code, count in counts_by_code(event.details).items():
                    refusals.labels(code, "false").inc(count)
            elif event.to_state is State.REJECTED:
                code = event.details.error_code or "unknown"
                refusals.labels(code, "true" if event.client_id else "false").inc()
            elif event.to_state is State.ACCEPTED:
                accepted.labels(metrics.tenant(event.tenant)).inc()

    return observe


def clients_file_gauge(metrics: Metrics, refused: Callable[[], bool]) -> None:
    """``airlock_ingest_clients_file_refused``: 1 while the newest clients file is refused."""
    gauge = metrics.gauge(
        "clients_file_refused", "1 while the newest clients file version is refused and an older one is in force."
    )
    gauge.set_function(lambda: 1.0 if refused() else 0.0)
