"""The auditor's own metrics, read from its committed outcomes."""

from __future__ import annotations

from airlock.core.stage import Incoming, Outcome
from airlock.core.telemetry.instruments import OutcomeObserver
from airlock.core.telemetry.metrics import Metrics
from airlock.core.topics import Topics


def auditor_observer(metrics: Metrics, topics: Topics) -> OutcomeObserver:
    """Counts ``airlock_auditor_sealed_total`` and ``airlock_auditor_checkpoints_total``.

    An audit event sealed before (a stage replayed it) commits no ledger record and is not
    counted again.
    """
    sealed = metrics.counter("sealed", "Audit events sealed into the ledger's hash chains.")
    checkpoints = metrics.counter("checkpoints", "Signed ledger checkpoints committed.")

    def observe(record: Incoming, outcome: Outcome) -> None:
        for output in outcome.records:
            if output.topic == topics.ledger:
                sealed.inc()
            elif output.topic == topics.checkpoints:
                checkpoints.inc()

    return observe
