"""The fault suite's own stack: a broker it may restart, the fake model it may break, services it may kill.

One stack for the whole ``tests/faults`` package (its own broker, data directory and topic
prefix, 3 partitions per topic), so restarting the broker or killing services never touches
the integration tests' session stack. Each phase's counts are printed in the terminal
summary (and written to ``books.txt`` in the stack's directory), so they show with or
without ``-s``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.devstack.mesh import SERVICES
from airlock.devstack.stack import LocalStack
from tests.faults.books import SUMMARY

PARTITIONS = 3
#: Short waits everywhere, so a fault costs seconds, not minutes; a grace period the chart also sets.
SHUTDOWN_GRACE_S = 8
FAULT_ENV: dict[str, str] = {
    **{f"AIRLOCK_{name.upper().replace('-', '_')}_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S) for name in SERVICES},
    # Generous: two cores shared by a broker, seven processes and the test; a spaCy model
    # loading in a new redactor replica can starve the fake model for seconds.
    "AIRLOCK_LLM_WORKER_CALL_TIMEOUT_S": "10",
    "AIRLOCK_LLM_WORKER_ATTEMPTS_PER_TARGET": "2",
    "AIRLOCK_LLM_WORKER_BACKOFF_BASE_S": "0.1",
    "AIRLOCK_LLM_WORKER_BACKOFF_MAX_S": "1",
    "AIRLOCK_LLM_WORKER_RETRY_AFTER_MAX_S": "5",
    "AIRLOCK_LLM_WORKER_BREAKER_COOLDOWN_S": "2",
    "AIRLOCK_LLM_WORKER_UNAVAILABLE_WAIT_MAX_S": "20",
    "AIRLOCK_LLM_WORKER_PACING_RECOVERY_S": "5",
    "AIRLOCK_AUDITOR_CHECKPOINT_INTERVAL_S": "3",
    # A stage abandons a commit after two request timeouts (a broker restart can leave one hanging).
    "AIRLOCK_KAFKA_REQUEST_TIMEOUT_MS": "10000",
}


@pytest.fixture(scope="package")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Kafka, the fake model (30 ms latency) and one replica of each service, under a unique prefix."""
    state: Path = tmp_path_factory.mktemp("faults")
    local = LocalStack(
        state=state,
        topic_prefix=f"flt{uuid.uuid4().hex[:6]}.",
        partitions=PARTITIONS,
        latency_ms=30,
        extra_env=FAULT_ENV,
    )
    try:
        local.start_broker()
        local.start_fake()
        asyncio.run(local.provision())
        asyncio.run(local.start_services(timeout_s=300))
        yield local
    finally:
        local.stop()
        if SUMMARY:
            (state / "books.txt").write_text("\n".join(SUMMARY) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each fault phase's books, whatever the capture mode."""
    if SUMMARY:
        terminalreporter.section("fault suite: the books after each phase")
        for line in SUMMARY:
            terminalreporter.write_line(line)
