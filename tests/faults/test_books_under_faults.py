"""Break things while a steady stream flows; after each phase the books must balance.

Each test is one phase: a stream of signed requests (5/s, mixed PII and plain prompts,
three tenants) through the real broker, the four services as processes and the fake
model at 30 ms, while the phase's fault happens. Then it waits until every published
request is terminal and answered and draws up the books (:mod:`tests.faults.books`):
one terminal state and one reply per request record, nothing doubled on any topic,
``published = delivered + rejected + blocked + failed``, and a clean ledger verification.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from airlock.core.lifecycle import State
from airlock.devstack.mesh import readiness, wait_ready
from airlock.devstack.stack import LocalStack, witness_dir
from tests.faults.books import SUMMARY, Books
from tests.faults.conftest import SHUTDOWN_GRACE_S
from tests.faults.traffic import Stream, for_seconds, settle_and_balance, streaming

pytestmark = [pytest.mark.faults, pytest.mark.integration]

RATE = 5.0


def alive(stack: LocalStack) -> Callable[[], Awaitable[None]]:
    """A check for :func:`for_seconds`: fail fast when a service died on its own."""

    async def check() -> None:
        assert stack.mesh is not None
        dead = stack.mesh.exited()
        assert not dead, f"a service died on its own: {[(p.service, str(p.log_path)) for p in dead]}"

    return check


async def ready(stack: LocalStack, timeout_s: float = 240.0) -> None:
    assert stack.mesh is not None
    await wait_ready(stack.kafka_settings, stack.mesh, timeout_s=timeout_s)


async def books_of(stack: LocalStack, stream: Stream, started: float) -> Books:
    books = await settle_and_balance(stack.kafka_settings, witness_dir(stack.state), stream, started=started)
    SUMMARY.append(books.line())
    print("\n" + books.line())
    return books


def assert_balanced(books: Books) -> None:
    problems = books.problems()
    assert not problems, f"{books.phase}: the books do not balance:\n  " + "\n  ".join(problems)


async def test_steady_stream_without_faults_balances(fault_stack: LocalStack) -> None:
    started = time.monotonic()
    async with fault_stack.client() as client, streaming(client, "baseline", RATE) as stream:
        await for_seconds(12, alive(fault_stack))
    books = await books_of(fault_stack, stream, started)

    assert_balanced(books)
    assert books.terminal[State.DELIVERED.value] == books.published, "no fault, so every request is delivered"


@pytest.mark.parametrize("service", ["ingest", "redactor", "llm-worker", "auditor"])
async def test_sigkill_mid_stream_then_restart(fault_stack: LocalStack, service: str) -> None:
    mesh = fault_stack.mesh
    assert mesh is not None
    started = time.monotonic()
    async with fault_stack.client() as client, streaming(client, f"sigkill-{service}", RATE) as stream:
        await for_seconds(4, alive(fault_stack))
        await asyncio.to_thread(mesh.kill, service)
        await for_seconds(3, alive(fault_stack))
        mesh.start(service)
        await ready(fault_stack)
        await for_seconds(4, alive(fault_stack))
    books = await books_of(fault_stack, stream, started)

    assert_balanced(books)
    assert books.terminal[State.DELIVERED.value] == books.published, "a killed stage loses nothing: all delivered"


@pytest.mark.parametrize("service", ["redactor", "llm-worker"])
async def test_scale_one_to_three_to_one_under_load(fault_stack: LocalStack, service: str) -> None:
    mesh = fault_stack.mesh
    assert mesh is not None
    started = time.monotonic()
    async with fault_stack.client() as client, streaming(client, f"scale-{service}-1-3-1", RATE) as stream:
        await for_seconds(3, alive(fault_stack))
        mesh.start(service, 2)
        await ready(fault_stack)
        owned = [readiness(replica) for replica in mesh.replicas[service]]
        await for_seconds(5, alive(fault_stack))
        await asyncio.to_thread(mesh.scale, service, 1)
        await ready(fault_stack)
        await for_seconds(4, alive(fault_stack))
    books = await books_of(fault_stack, stream, started)

    assert len(owned) == 3 and all(answer and answer["assigned"] for answer in owned), (
        f"each of the 3 replicas owns partitions: {owned}"
    )
    assert_balanced(books)
    assert books.terminal[State.DELIVERED.value] == books.published, "a rebalance loses nothing: all delivered"


async def test_sigterm_mid_stream_commits_in_flight_work_within_the_grace_period(fault_stack: LocalStack) -> None:
    mesh, fake = fault_stack.mesh, fault_stack.fake
    assert mesh is not None and fake is not None
    started = time.monotonic()
    try:
        async with fault_stack.client() as client, streaming(client, "sigterm-llm-worker", RATE) as stream:
            # Model calls of 2 s: a couple of dozen are in flight when the signal arrives.
            fake.configure(latency_ms=2000)
            await for_seconds(5, alive(fault_stack))
            worker = mesh.replicas["llm-worker"].pop()
            logged_before = await asyncio.to_thread(_log_size, worker.log_path)
            worker.process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(_exit_code, worker.process, SHUTDOWN_GRACE_S + 60)
            fake.configure(latency_ms=30)
            mesh.start("llm-worker")
            await ready(fault_stack)
            await for_seconds(4, alive(fault_stack))
    finally:
        fake.configure(latency_ms=30)
    books = await books_of(fault_stack, stream, started)

    # uvicorn re-raises the signal once its graceful shutdown is done: -SIGTERM, never -SIGKILL.
    assert exit_code in (0, -signal.SIGTERM), f"SIGTERM should end the worker by itself (exit code {exit_code})"
    assert _log_has(worker.log_path, "shut down gracefully", logged_before), "in-flight work settled, then a clean exit"
    assert_balanced(books)
    assert books.terminal[State.DELIVERED.value] == books.published, "a drained worker loses nothing"


async def test_model_failing_for_a_while_then_recovering(fault_stack: LocalStack) -> None:
    fake = fault_stack.fake
    assert fake is not None
    started = time.monotonic()
    try:
        async with fault_stack.client() as client, streaming(client, "model-429-500-timeout", RATE) as stream:
            await for_seconds(3, alive(fault_stack))
            fake.configure(fault="429", fault_rate=1.0, fault_count=-1, retry_after_s=1)
            await for_seconds(6, alive(fault_stack))
            fake.configure(fault="500")
            await for_seconds(6, alive(fault_stack))
            fake.configure(fault="timeout", timeout_s=30)
            await for_seconds(6, alive(fault_stack))
            fake.configure(fault=None)
            recovered = len(stream.request_ids)
            await for_seconds(6, alive(fault_stack))
    finally:
        fake.configure(fault=None)
    books = await books_of(fault_stack, stream, started)

    assert_balanced(books)
    assert books.terminal[State.DELIVERED.value] > 0
    assert set(books.terminal) <= {State.DELIVERED.value, State.FAILED.value}, books.terminal
    assert set(books.errors) <= {"model_unavailable", "deadline_exceeded"}, books.errors
    assert recovered < len(stream.request_ids)


async def test_broker_restart_mid_stream_and_a_replica_started_while_it_is_down(fault_stack: LocalStack) -> None:
    kafka, mesh = fault_stack.kafka, fault_stack.mesh
    assert kafka is not None and mesh is not None
    started = time.monotonic()
    async with fault_stack.client() as client, streaming(client, "broker-restart", RATE) as stream:
        await for_seconds(4, alive(fault_stack))
        clean = await asyncio.to_thread(kafka.stop, 300)
        # A replica that starts while there is no broker: it must wait, say so, and not exit.
        mesh.start("ingest")
        early = mesh.replicas["ingest"][-1]
        waited = await _log_shows(early.log_path, "not reachable", timeout_s=120)
        await for_seconds(2, alive(fault_stack))
        await asyncio.to_thread(kafka.start)
        await ready(fault_stack, timeout_s=300)
        early_ready = readiness(early)
        await for_seconds(6, alive(fault_stack))
        await asyncio.to_thread(mesh.scale, "ingest", 1)
        await ready(fault_stack)
    books = await books_of(fault_stack, stream, started)

    assert clean, "the broker was killed, not restarted: a lone replica's unclean stop is another fault"
    assert waited, f"no 'Kafka ... not reachable ... retry' line in {early.log_path}"
    assert early_ready and early_ready["ready"] and early_ready["assigned"], (
        f"the replica started before the broker became ready with partitions once it appeared: {early_ready}"
    )
    assert_balanced(books)
    assert books.terminal[State.DELIVERED.value] == books.published


def _exit_code(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """Wait for a process to end by itself; kill it (and report ``None``) if it does not."""
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return None


async def _log_shows(path: Path, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_log_has, path, text):
            return True
        await asyncio.sleep(0.5)
    return False


def _log_has(path: Path, text: str, offset: int = 0) -> bool:
    """Whether the log holds ``text`` after byte ``offset`` (a restarted replica appends to it)."""
    if not path.exists():
        return False
    with path.open("rb") as log:
        log.seek(offset)
        return text.encode() in log.read()


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
