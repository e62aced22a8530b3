"""Ingest's own metrics: from its committed audit events (never from request text) and its clients file."""

from __future__ import annotations

from collections.abc import Callable

from airlock.core import headers as h
from airlock.core.lifecycle import State
from airlock.core.stage import Incoming, Outcome
from airlock.core.telemetry.instruments import OutcomeObserver
from airlock.core.telemetry.metrics import Metrics


def ingest_observer(metrics: Metrics) -> OutcomeObserver:
    """Counts ``airlock_ingest_refusals_total{code, authenticated}`` and ``…_accepted_total{tenant}``.

    A refusal is authenticated when the REJECTED event names the signing client: those
    callers hear the error. Unauthenticated ones have no event of their own (their window's
    notice comes later) and are counted from their dead letters as they commit.
    """
    refusals = metrics.counter(
        "refusals",
        "Requests refused by ingest, by error code and whether the sender was authenticated.",
        ["code", "authenticated"],
    )
    accepted = metrics.counter("accepted", "Requests accepted by ingest, by tenant.", ["tenant"])

    def observe(record: Incoming, outcome: Outcome) -> None:
        if not any(event.kind == "transition" for event in outcome.events):
            for raw in (dict(out.headers).get(h.ERROR_CODE) for out in outcome.records):
                if raw is not None:
                    refusals.labels(raw.decode("utf-8", "replace"), "false").inc()
        for event in outcome.events:
            if event.to_state is State.REJECTED:
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
